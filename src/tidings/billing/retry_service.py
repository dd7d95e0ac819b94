"""Payment retry use cases, each in the caller's transaction: policies, opening a
workflow from a failure, and recording an attempt (retry_endings.py has how one ends).

Every move checks the state machine (``retries.transition``), posts its ledger
transaction (a failed payment is a receivable until it is collected, canceled or written
off: ledger.py), tells the customer through intake like any other source, and ends with
an audit entry saying who did what and why.

What the customer hears: the failure (with the link to update the card and, for a soft
decline, when the next attempt is), each later declined attempt with the next date,
the final notice, and the recovery. The failure and final notice are critical; the
reminders and recovery honour preferences, quiet hours and the contact budget
(builtin_rules.yaml).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from tidings.audit.chain import AuditEntry, append
from tidings.billing import ledger, repository
from tidings.billing import retry_repository as repo
from tidings.billing.errors import BillingError
from tidings.billing.gateways.declines import DeclineCategory
from tidings.billing.refunds import positive_amount
from tidings.billing.retries import Decision, after_decline, attempt_key, transition
from tidings.billing.retry_endings import exhaust, recover, retry_now, stop, stop_for_order
from tidings.billing.retry_events import RetryContext, emit, require
from tidings.billing.retry_policy import DEFAULT_POLICY_NAME, RetryPolicy
from tidings.billing.retry_repository import Attempt, Workflow
from tidings.db.ids import new_id
from tidings.db.schema import customers


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed payment as a source reported it (canonical ``payment.failed`` data)."""

    payment_id: str
    order_id: str | None
    customer_id: str | None
    gateway: str
    amount: int
    currency: str
    decline_code: str | None
    network: str | None
    at: datetime
    event_id: str | None = None

    @classmethod
    def of_event(
        cls, data: Mapping[str, Any], *, at: datetime, event_id: str | None, gateway: str
    ) -> Failure:
        customer = data.get("customer") or {}
        return cls(
            payment_id=str(data["payment_id"]),
            order_id=data.get("order_id"),
            customer_id=customer.get("id") if isinstance(customer, Mapping) else None,
            gateway=str(data.get("gateway") or gateway),
            amount=int(data["amount"]),
            currency=str(data["currency"]),
            decline_code=data.get("decline_code"),
            network=_network(data),
            at=at,
            event_id=event_id,
        )


def _network(data: Mapping[str, Any]) -> str | None:
    for key in ("network", "card_network", "card_brand", "brand"):
        value = data.get(key)
        if isinstance(value, str) and value:
            return value.lower()
    return None


# --- policies ---------------------------------------------------------------------------


def policy_for(conn: Connection, store: str) -> tuple[str, RetryPolicy]:
    """The store's own policy when one is named after it, else ``default``, else the
    built-in default."""
    for name in (store, DEFAULT_POLICY_NAME):
        stored = repo.get_policy(conn, name)
        if stored is not None:
            return name, RetryPolicy.from_json(stored)
    return DEFAULT_POLICY_NAME, RetryPolicy()


def put_policy(
    conn: Connection, *, name: str, values: Mapping[str, Any], actor: str, now: datetime
) -> RetryPolicy:
    if not name or len(name) > 64 or ":" in name:
        raise BillingError(
            "invalid_policy_name", "A policy name is 1 to 64 characters without ':'.", "name"
        )
    policy = RetryPolicy.from_json(values)
    repo.put_policy(conn, name, policy.to_json(), actor=actor, now=now)
    detail = {"policy": policy.to_json()}
    append(conn, [AuditEntry(actor, "retry_policy.updated", "retry_policy", name, detail)], at=now)
    return policy


# --- opening ----------------------------------------------------------------------------


def open_workflow(
    conn: Connection, ctx: RetryContext, failure: Failure, *, now: datetime, actor: str
) -> tuple[Workflow, bool]:
    """Open the recovery of a failed payment; ``(workflow, created)``.

    A payment already being recovered is not opened twice: a repeated failure report
    (the gateway echoing one of our own attempts, a redelivery under another id) joins
    the open workflow and changes nothing. A failure reported for a payment already
    captured (a late webhook, an echo of an attempt that went through) is refused:
    retrying it would charge the customer twice.
    """
    positive_amount(failure.amount)
    existing = repo.open_workflow_for_payment(conn, failure.payment_id)
    if existing is not None:
        return existing, False
    captured = repository.get_payment(conn, failure.payment_id)
    if captured is not None and captured.captured > 0:
        raise BillingError(
            "payment_already_captured",
            f"Payment {failure.payment_id} is captured; a failure reported after its capture "
            "opens no retries.",
            "payment_id",
        )
    name, policy = policy_for(conn, ctx.store)
    workflow_id = new_id("rw")
    category = ctx.declines.category(failure.decline_code)
    row = {
        "id": workflow_id,
        "store": ctx.store,
        "payment_id": failure.payment_id,
        "order_id": failure.order_id,
        "customer_id": failure.customer_id,
        "gateway": failure.gateway,
        "amount": failure.amount,
        "currency": failure.currency,
        "status": "failed",
        "policy": {"name": name, **policy.to_json()},
        "attempts": 0,
        "network": failure.network,
        "decline_code": failure.decline_code,
        "opened_by_event": failure.event_id,
        "created_at": now,
        "updated_at": now,
    }
    repo.insert_workflow(conn, row)
    repo.insert_attempt(
        conn,
        workflow_id,
        Attempt(
            number=0,
            at=failure.at,
            gateway=failure.gateway,
            outcome="declined",
            decline_code=failure.decline_code,
            category=category,
            network=failure.network,
            amount=failure.amount,
            currency=failure.currency,
            idempotency_key=attempt_key(workflow_id, 0),
        ),
    )
    txn = ledger.post(
        conn,
        kind="payment_due",
        reference=workflow_id,
        lines=ledger.payment_due(ctx.store, failure.currency, failure.amount),
        at=now,
    )
    opened = require(conn, workflow_id)
    decision = after_decline(
        policy,
        category=category,
        decline_code=failure.decline_code,
        first_failed_at=failure.at,
        declined_at=max(failure.at, now),
        attempts_made=0,
        network=failure.network,
        time_zone=_time_zone(conn, failure.customer_id),
    )
    detail = {
        "payment_id": failure.payment_id,
        "amount": failure.amount,
        "currency": failure.currency,
        "decline_code": failure.decline_code,
        "category": category,
        "policy": name,
        "ledger": txn,
        "event": failure.event_id,
    }
    append(conn, [AuditEntry(actor, "retry.opened", "retry_workflow", workflow_id, detail)], at=now)
    # The failure message goes out whatever follows: a hard decline's final notice
    # tells what happens to the order, this one how to pay.
    next_at = decision.next_attempt_at if decision.action == "schedule" else None
    emit(
        conn,
        ctx,
        opened,
        "payment.failed",
        "failed",
        now,
        actor,
        decline_category=category,
        attempt=1,
        next_attempt_at=next_at.isoformat() if next_at else None,
    )
    return _follow(conn, ctx, opened, decision, now=now, actor=actor, announce=False), True


def _time_zone(conn: Connection, customer_id: str | None) -> str | None:
    if customer_id is None:
        return None
    row = conn.execute(
        select(customers.c.time_zone, customers.c.preferences).where(customers.c.id == customer_id)
    ).first()
    if row is None:
        return None
    chosen = (row.preferences or {}).get("time_zone")
    return str(chosen or row.time_zone) if (chosen or row.time_zone) else None


# --- attempts ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an attempt came to: ``approved``, ``declined`` or ``unknown`` (no answer)."""

    outcome: str
    gateway: str
    decline_code: str | None = None
    network: str | None = None
    detail: str | None = None
    # The gateway refused the request itself: the same request can never succeed.
    permanent: bool = False


def record_attempt(
    conn: Connection,
    ctx: RetryContext,
    *,
    workflow_id: str,
    number: int,
    outcome: Outcome,
    now: datetime,
    actor: str,
) -> Workflow:
    """Record attempt ``number`` of a claimed workflow and move it on.

    ``unknown`` keeps it ``retrying``: once its claim goes stale it is retaken and the
    same attempt repeats with the same idempotency key (retry_repository.claim_due).
    """
    workflow = require(conn, workflow_id, lock=True)
    if outcome.outcome == "unknown":
        detail = {"attempt": number, "why": outcome.detail}
        append(
            conn,
            [AuditEntry(actor, "retry.outcome_unknown", "retry_workflow", workflow_id, detail)],
            at=now,
        )
        return workflow
    earlier = repo.attempts_of(conn, workflow_id)
    if any(a.number == number for a in earlier):
        # Another worker recorded this attempt already (a retaken claim that raced).
        return workflow
    category: DeclineCategory | None = None
    if outcome.permanent:
        category = "hard"
    elif outcome.outcome != "approved":
        codes = [a.decline_code for a in earlier]
        category = ctx.declines.category(outcome.decline_code, earlier_codes=codes)
    network = outcome.network or workflow.network
    repo.insert_attempt(
        conn,
        workflow_id,
        Attempt(
            number=number,
            at=now,
            gateway=outcome.gateway,
            outcome=outcome.outcome,
            decline_code=outcome.decline_code,
            category=category,
            network=network,
            amount=workflow.amount,
            currency=workflow.currency,
            idempotency_key=attempt_key(workflow_id, number),
        ),
    )
    detail = {
        "attempt": number,
        "gateway": outcome.gateway,
        "outcome": outcome.outcome,
        "decline_code": outcome.decline_code,
        "category": category,
    }
    append(
        conn, [AuditEntry(actor, "retry.attempted", "retry_workflow", workflow_id, detail)], at=now
    )
    if outcome.outcome == "approved":
        return recover(conn, ctx, workflow_id=workflow_id, now=now, actor=actor, attempts=number)
    if workflow.status != "retrying":
        # Stopped while the attempt was out; the decline changes nothing more.
        return workflow
    repo.update_workflow(
        conn,
        workflow_id,
        workflow.status,
        attempts=number,
        network=network,
        decline_code=outcome.decline_code,
        updated_at=now,
    )
    first = earlier[0].at if earlier else workflow.created_at
    decision = after_decline(
        RetryPolicy.from_json({k: v for k, v in workflow.policy.items() if k != "name"}),
        category=category or "soft",
        decline_code=outcome.decline_code,
        first_failed_at=first,
        declined_at=now,
        attempts_made=number,
        network=network,
        time_zone=_time_zone(conn, workflow.customer_id),
    )
    return _follow(conn, ctx, require(conn, workflow_id), decision, now=now, actor=actor)


def _follow(
    conn: Connection,
    ctx: RetryContext,
    workflow: Workflow,
    decision: Decision,
    *,
    now: datetime,
    actor: str,
    announce: bool = True,
) -> Workflow:
    if decision.action == "schedule":
        state = transition(workflow.status, "schedule")
        repo.update_workflow(
            conn,
            workflow.id,
            workflow.status,
            status=state,
            next_attempt_at=decision.next_attempt_at,
            updated_at=now,
        )
        next_at = decision.next_attempt_at
        if next_at is None:
            raise RuntimeError("a scheduled retry needs its time")
        detail = {"next_attempt_at": next_at.isoformat(), "why": decision.why}
        append(
            conn,
            [AuditEntry(actor, "retry.scheduled", "retry_workflow", workflow.id, detail)],
            at=now,
        )
        if announce:
            moved = require(conn, workflow.id)
            policy = RetryPolicy.from_json({k: v for k, v in moved.policy.items() if k != "name"})
            emit(
                conn,
                ctx,
                moved,
                "payment.retry_scheduled",
                f"attempt-{moved.attempts}-scheduled",
                now,
                actor,
                attempt=moved.attempts + 1,
                decline_category="soft",
                next_attempt_at=next_at.isoformat(),
                attempts_left=max(policy.attempt_limit(moved.network) - moved.attempts, 0),
            )
        return require(conn, workflow.id)
    return exhaust(conn, ctx, workflow, decision.why, now=now, actor=actor)


__all__ = [
    "Failure",
    "Outcome",
    "RetryContext",
    "open_workflow",
    "policy_for",
    "put_policy",
    "record_attempt",
    "recover",
    "retry_now",
    "stop",
    "stop_for_order",
]
