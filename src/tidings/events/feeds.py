"""Which stored events a consumer other than the engine acts on.

Intake queues them for the consumer in the transaction that stores the event (an
outbox, like delivery jobs), so none is missed and none is looked for twice.
"""

from __future__ import annotations

# Billing's own source name (tidings.billing.refunds.EVENT_SOURCE).
BILLING_SOURCE = "tidings:billing"

BILLING_TYPES = frozenset(
    {
        "payment.failed",
        "payment.captured",
        "payment.recovered",
        "payment.disputed",
        "payment.method_updated",
        "order.canceled",
        "refund.requested",
        "refund.approved",
        "refund.authorized",
        "refund.succeeded",
    }
)
# What billing itself says about payments and orders is its own news, not something to
# act on again; its refund events do stop a payment's retries.
_BILLING_OWN_NEWS = frozenset(
    {"payment.failed", "payment.captured", "payment.recovered", "order.canceled"}
)


def billing_wants(source: str, event_type: str) -> bool:
    if event_type not in BILLING_TYPES:
        return False
    return not (source == BILLING_SOURCE and event_type in _BILLING_OWN_NEWS)
