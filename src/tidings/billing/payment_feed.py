"""Billing acts on stored events like the engine does: payments captured and failed,
orders canceled, refunds and disputes opened, payment methods updated.

Intake queues the events billing wants (tidings.events.feeds) in ``billing_inbox`` in
the transaction that stores them, so intake stays one-way (DESIGN.md, "Flow"), an event
stored while no worker ran is acted on later, and marking it applied in the transaction
that acts on it makes each one count once, whichever worker gets to it first. An event
billing refuses (its data cannot be acted on) is kept marked with the reason.

| event                               | what billing does                                  |
| ----------------------------------- | -------------------------------------------------- |
| payment.failed                      | opens the payment's retry workflow (or joins it)   |
| payment.captured, payment.recovered | records the capture so it can be refunded; a       |
|                                     | payment being recovered is recovered               |
| order.canceled                      | stops the order's retries                          |
| refund.* , payment.disputed         | stops the order's retries: money is going back     |
| payment.method_updated              | brings the next attempt forward to now             |

Billing's own payment and order events (source ``tidings:billing``) are its own news and
are not queued.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Connection, Engine

from tidings.billing import repository, retry_service, service
from tidings.billing import retry_repository as repo
from tidings.billing.errors import BillingError
from tidings.billing.retry_repository import StoredEvent
from tidings.billing.retry_service import Failure, RetryContext

log = logging.getLogger(__name__)

PAYMENT_TYPES = ("payment.failed", "payment.captured", "payment.recovered")


def apply_pending(
    engine: Engine, ctx: RetryContext, *, now: datetime, actor: str = "billing", limit: int = 100
) -> int:
    """Act on up to ``limit`` stored events billing has not seen; returns how many.

    All in one transaction (one commit, not one per event), each event in a savepoint of
    its own: one that fails is rolled back alone and marked refused or postponed."""
    with engine.connect() as conn:
        pending = repo.pending_events(conn, now=now, limit=limit)
    if not pending:
        return 0
    done = 0
    with engine.begin() as conn:
        for event in pending:
            try:
                with conn.begin_nested():
                    if not repo.mark_applied(conn, event.id, "applying", now):
                        continue
                    outcome = _apply(conn, ctx, event, now=now, actor=actor)
                    repo.set_applied_outcome(conn, event.id, outcome)
                done += 1
            except BillingError as exc:
                # Kept with its reason, never retried forever: the event itself is at fault.
                if repo.mark_applied(conn, event.id, f"refused: {exc.code}", now):
                    log.warning("event %s refused by billing: %s", event.id, exc.detail)
                done += 1
            except Exception as exc:
                # Left unapplied and tried again later, each time later still (a database
                # hiccup, a bug fixed by a deploy); nothing is lost.
                log.exception("event %s: billing could not act on it", event.id)
                retry_at = repo.postpone(conn, event.id, repr(exc), now=now)
                log.info("event %s: trying again at %s", event.id, retry_at.isoformat())
    return done


def _apply(
    conn: Connection, ctx: RetryContext, event: StoredEvent, *, now: datetime, actor: str
) -> str:
    data = event.data
    if event.type == "payment.failed":
        failure = Failure.of_event(data, at=event.time, event_id=event.id, gateway="unknown")
        workflow, created = retry_service.open_workflow(conn, ctx, failure, now=now, actor=actor)
        return f"opened {workflow.id}" if created else f"joined {workflow.id}"
    if event.type in PAYMENT_TYPES:
        return _captured(conn, ctx, event, now=now, actor=actor)
    if event.type == "payment.method_updated":
        scheduled = repo.open_workflow_for_payment(conn, str(data.get("payment_id") or ""))
        if scheduled is None or scheduled.status != "retry_scheduled":
            return "no_scheduled_retry"
        retry_service.retry_now(
            conn, workflow_id=scheduled.id, now=now, actor=actor, why="payment method updated"
        )
        return f"retry_now {scheduled.id}"
    # Stops: an order canceled elsewhere, money going back to the customer.
    order_id = event.order_id or data.get("order_id")
    if not order_id:
        return "no_order"
    reason = {
        "order.canceled": "the order was canceled",
        "payment.disputed": "the customer disputed a payment of the order",
    }.get(event.type, "a refund was opened for the order")
    stopped = retry_service.stop_for_order(
        conn, ctx, order_id=str(order_id), reason=reason, now=now, actor=actor
    )
    return f"stopped {len(stopped)}"


def _captured(
    conn: Connection, ctx: RetryContext, event: StoredEvent, *, now: datetime, actor: str
) -> str:
    data = event.data
    payment_id = str(data["payment_id"])
    recovering = repo.open_workflow_for_payment(conn, payment_id)
    if recovering is not None:
        retry_service.recover(conn, ctx, workflow_id=recovering.id, now=now, actor=actor)
        return f"recovered {recovering.id}"
    if repository.get_payment(conn, payment_id) is not None:
        return "already_recorded"
    customer = data.get("customer") or {}
    service.record_capture(
        conn,
        payment_id=payment_id,
        store=ctx.store,
        order_id=str(data.get("order_id") or payment_id),
        customer_id=customer.get("id") if isinstance(customer, dict) else event.customer_id,
        gateway=str(data.get("gateway") or "unknown"),
        currency=str(data["currency"]),
        amount=int(data["amount"]),
        method=data.get("method") if isinstance(data.get("method"), str) else "card",
        now=now,
        actor=actor,
    )
    return "captured"
