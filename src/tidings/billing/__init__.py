"""Billing: refunds as a state machine over a double-entry ledger, emitting canonical events.

``ledger`` posts balanced journal transactions, ``refunds`` holds the pure decisions
(states, approvals, line-item shares), ``service`` runs each move in the caller's
transaction and ``repository`` holds the queries.
"""
