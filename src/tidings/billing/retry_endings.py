"""How a payment retry workflow ends: the final action when the policy is spent, recovery
(by an attempt or paid some other way), a stop, and bringing the next attempt forward.

Each posts its ledger transaction (ledger.py: a failed payment is a receivable until it
is collected, canceled or written off), ends with an audit entry, and tells the customer
where there is something to tell.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from tidings.audit.chain import AuditEntry, append
from tidings.billing import ledger, service
from tidings.billing import retry_repository as repo
from tidings.billing.errors import BillingError
from tidings.billing.retries import OPEN, transition
from tidings.billing.retry_events import RetryContext, emit, emit_order_canceled, require
from tidings.billing.retry_repository import Workflow


def exhaust(
    conn: Connection, ctx: RetryContext, workflow: Workflow, why: str, *, now: datetime, actor: str
) -> Workflow:
    """The final path: the policy's final action, posted and told."""
    action = str(workflow.policy.get("final_action") or "cancel_order")
    state = transition(workflow.status, "exhaust")
    repo.update_workflow(
        conn,
        workflow.id,
        workflow.status,
        status=state,
        next_attempt_at=None,
        final_action=action,
        closed_reason=why,
        closed_at=now,
        updated_at=now,
    )
    txn = None
    if action == "cancel_order":
        txn = _post(conn, workflow, "payment_due_canceled", now)
        if workflow.order_id is not None:
            emit_order_canceled(conn, ctx, workflow, now, actor)
    elif action == "mark_uncollectible":
        txn = _post(conn, workflow, "receivable_written_off", now)
    # escalate: the receivable stays open for the person who takes it over.
    detail = {"final_action": action, "why": why, "ledger": txn}
    append(
        conn, [AuditEntry(actor, "retry.exhausted", "retry_workflow", workflow.id, detail)], at=now
    )
    ended = require(conn, workflow.id)
    emit(
        conn,
        ctx,
        ended,
        "payment.retries_exhausted",
        "exhausted",
        now,
        actor,
        final_action=action,
        attempts=ended.attempts,
        attempt=max(ended.attempts, 1),
    )
    return ended


def _post(conn: Connection, workflow: Workflow, kind: str, now: datetime) -> str:
    lines = getattr(ledger, kind)(workflow.store, workflow.currency, workflow.amount)
    return ledger.post(conn, kind=kind, reference=workflow.id, lines=lines, at=now)


# --- endings from outside ----------------------------------------------------------------


def recover(
    conn: Connection,
    ctx: RetryContext,
    *,
    workflow_id: str,
    now: datetime,
    actor: str,
    attempts: int | None = None,
    gateway_payment_id: str | None = None,
) -> Workflow:
    """The payment was collected: by one of our attempts, or paid some other way."""
    workflow = require(conn, workflow_id, lock=True)
    state = transition(workflow.status, "recover")
    values: dict[str, Any] = {
        "status": state,
        "recovered_amount": workflow.amount,
        "next_attempt_at": None,
        "closed_at": now,
        "updated_at": now,
    }
    if attempts is not None:
        values["attempts"] = attempts
    if workflow.status == "canceled":
        # Its receivable was canceled when it stopped: collecting posts the sale again.
        _post(conn, workflow, "payment_due", now)
    repo.update_workflow(conn, workflow_id, workflow.status, **values)
    payment = service.record_capture(
        conn,
        payment_id=workflow.payment_id,
        store=workflow.store,
        order_id=workflow.order_id or workflow.payment_id,
        customer_id=workflow.customer_id,
        gateway=workflow.gateway,
        currency=workflow.currency,
        amount=workflow.amount,
        method="card",
        now=now,
        actor=actor,
        gateway_payment_id=gateway_payment_id,
        posting="payment_collected",
    )
    detail = {"amount": workflow.amount, "currency": workflow.currency, "payment": payment.id}
    append(
        conn, [AuditEntry(actor, "retry.recovered", "retry_workflow", workflow_id, detail)], at=now
    )
    ended = require(conn, workflow_id)
    emit(conn, ctx, ended, "payment.recovered", "recovered", now, actor, attempt=ended.attempts)
    return ended


def stop(
    conn: Connection, ctx: RetryContext, *, workflow_id: str, reason: str, now: datetime, actor: str
) -> Workflow:
    """Stop retrying (order canceled, refund or dispute opened, a person's decision); the
    receivable is canceled, so the books no longer count on the money."""
    if not reason.strip():
        raise BillingError("reason_required", "Say why the retries stop.", "reason")
    workflow = require(conn, workflow_id, lock=True)
    state = transition(workflow.status, "stop")
    repo.update_workflow(
        conn,
        workflow_id,
        workflow.status,
        status=state,
        next_attempt_at=None,
        closed_reason=reason,
        closed_at=now,
        updated_at=now,
    )
    txn = _post(conn, workflow, "payment_due_canceled", now)
    detail = {"why": reason, "ledger": txn, "was": workflow.status}
    append(
        conn, [AuditEntry(actor, "retry.canceled", "retry_workflow", workflow_id, detail)], at=now
    )
    return require(conn, workflow_id)


def retry_now(
    conn: Connection,
    *,
    workflow_id: str,
    now: datetime,
    actor: str,
    why: str = "asked for an attempt now",
) -> Workflow:
    """Bring the next attempt forward to now (a person asked, or the customer updated the
    payment method). An attempt already out is not doubled."""
    workflow = require(conn, workflow_id, lock=True)
    if workflow.status != "retry_scheduled":
        raise BillingError(
            "illegal_transition",
            f"The retry workflow is {workflow.status}; only a scheduled one can be tried now.",
            "status",
        )
    repo.update_workflow(conn, workflow_id, workflow.status, next_attempt_at=now, updated_at=now)
    detail = {"why": why}
    append(
        conn, [AuditEntry(actor, "retry.retry_now", "retry_workflow", workflow_id, detail)], at=now
    )
    return require(conn, workflow_id)


def stop_for_order(
    conn: Connection, ctx: RetryContext, *, order_id: str, reason: str, now: datetime, actor: str
) -> list[Workflow]:
    return [
        stop(conn, ctx, workflow_id=w.id, reason=reason, now=now, actor=actor)
        for w in repo.workflows_for_order(conn, order_id, OPEN)
    ]
