"""Billing use cases: captures and refund moves, each in the caller's transaction.

Every move checks the state machine (``refunds.transition``), keeps ``payments.refunded``
equal to what the payment's live refunds hold, posts its ledger transaction, tells the
customer through intake like any other source, and ends with an audit entry saying who
did what and why. A failure anywhere raises and the caller's rollback undoes it all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from tidings.audit.chain import AuditEntry, append
from tidings.billing import ledger, repository
from tidings.billing.errors import BillingError
from tidings.billing.refunds import (
    RefundRequest,
    add_approval,
    holds_amount,
    positive_amount,
    refund_event,
    transition,
)
from tidings.billing.repository import Payment, Refund
from tidings.db.ids import new_id
from tidings.engine.rules import RuleSet
from tidings.intake.service import DeliveryDefaults, ingest

POLICY_ACTOR = "billing:policy"


@dataclass(frozen=True, slots=True)
class Emitter:
    """What billing needs to hand its canonical events to intake."""

    rules: RuleSet
    delivery: DeliveryDefaults


def _audit(
    conn: Connection, actor: str, action: str, refund_id: str, *, at: datetime, **detail: Any
) -> None:
    """Last in each move: the audit chain locks its head until commit."""
    append(conn, [AuditEntry(actor, action, "refund", refund_id, detail)], at=at)


def record_capture(
    conn: Connection,
    *,
    payment_id: str,
    store: str,
    order_id: str,
    customer_id: str | None,
    gateway: str,
    currency: str,
    amount: int,
    method: str | None,
    now: datetime,
    actor: str,
    gateway_payment_id: str | None = None,
    posting: Literal["capture", "payment_collected"] = "capture",
) -> Payment:
    """Store a captured payment and post the capture; the same capture again is a no-op.

    ``payment_collected``: a payment recovered after it failed, whose revenue was posted
    with its receivable when it failed (ledger.py), so only the receivable is settled.
    """
    positive_amount(amount)
    try:
        lines = getattr(ledger, posting)(store, currency, amount)
    except ValueError as exc:
        raise BillingError("invalid_payment", f"{exc}.") from exc
    existing = repository.get_payment(conn, payment_id)
    if existing is not None:
        same = (existing.store, existing.order_id, existing.currency, existing.captured)
        if same == (store, order_id, currency, amount):
            return existing
        raise BillingError(
            "payment_exists",
            f"Payment {payment_id} was already recorded with other values; "
            "a payment is captured once.",
            "payment_id",
        )
    repository.insert_payment(
        conn,
        {
            "id": payment_id,
            "store": store,
            "order_id": order_id,
            "customer_id": customer_id,
            "gateway": gateway,
            "gateway_payment_id": gateway_payment_id,
            "currency": currency,
            "captured": amount,
            "refunded": 0,
            "method": method,
            "created_at": now,
            "updated_at": now,
        },
    )
    txn = ledger.post(conn, kind=posting, reference=payment_id, lines=lines, at=now)
    detail = {"amount": amount, "currency": currency, "gateway": gateway, "ledger": txn}
    append(conn, [AuditEntry(actor, "payment.captured", "payment", payment_id, detail)], at=now)
    return _stored_payment(conn, payment_id)


def request_refund(
    conn: Connection,
    *,
    payment_id: str,
    amount: int | Literal["full"],
    currency: str,
    reason_code: str,
    reason: str | None,
    lines: Sequence[Mapping[str, Any]] | None,
    idempotency_key: str,
    requested_by: str,
    approvals_needed: int,
    now: datetime,
) -> tuple[Refund, bool]:
    """Reserve the amount on the payment and create the refund; ``(refund, created)``.

    The same requester and idempotency key answer with the first refund (created False).
    ``"full"`` is whatever is still refundable. ``lines`` records what is refunded
    (``refunds.line_item_refund`` computes the amount for them). With
    ``approvals_needed`` 0 the refund is approved at once.
    """
    request = RefundRequest.checked(
        payment_id=payment_id,
        amount=amount,
        currency=currency,
        reason_code=reason_code,
        reason=reason,
        lines=lines,
        idempotency_key=idempotency_key,
    )
    if isinstance(approvals_needed, bool) or approvals_needed < 0:
        raise BillingError("invalid_approvals", "approvals_needed must be 0 or more.")
    existing = repository.find_refund_by_key(conn, requested_by, idempotency_key)
    if existing is not None:
        request.check_replay(existing.id, asdict(existing))
        return existing, False
    payment = repository.get_payment(conn, payment_id)
    if payment is None:
        raise BillingError("payment_not_found", f"No payment with id {payment_id}.", "payment_id")
    if currency != payment.currency:
        raise BillingError(
            "currency_mismatch",
            f"Payment {payment_id} was captured in {payment.currency}; "
            f"refund it in {payment.currency}, not {currency}.",
            "currency",
        )
    value = payment.refundable if amount == "full" else amount
    refund_id = new_id("re")
    status = transition("requested", "approve" if approvals_needed == 0 else "await_approval")
    row = {
        "id": refund_id,
        "amount": value,
        "status": status,
        "lines": request.lines,
        "idempotency_key": idempotency_key,
        "requested_by": requested_by,
        "approvals": [],
        "approvals_needed": approvals_needed,
        "created_at": now,
        "updated_at": now,
        "approved_at": now if status == "approved" else None,
    }
    try:
        # A savepoint, so that when a concurrent request with the same key wins the
        # unique constraint, this reservation is undone too and its refund is the answer.
        with conn.begin_nested():
            if value <= 0 or not repository.reserve_refund_amount(conn, payment_id, value, now):
                raise _exceeds(conn, payment_id, value)
            fields = ("payment_id", "currency", "reason_code", "reason")
            repository.insert_refund(conn, row | {f: getattr(request, f) for f in fields})
    except IntegrityError:
        existing = repository.find_refund_by_key(conn, requested_by, idempotency_key)
        if existing is None:
            raise
        request.check_replay(existing.id, asdict(existing))
        return existing, False
    detail = {k: row[k] for k in ("amount", "status", "lines", "approvals_needed")}
    detail |= {"payment_id": payment_id, "reason_code": reason_code, "reason": reason}
    entries = [AuditEntry(requested_by, "refund.requested", "refund", refund_id, detail)]
    if status == "approved":
        why = {"why": "the approval policy asks for no approver for this refund"}
        entries.append(AuditEntry(POLICY_ACTOR, "refund.approved", "refund", refund_id, why))
    append(conn, entries, at=now)
    return _get(conn, refund_id), True


def _exceeds(conn: Connection, payment_id: str, amount: int) -> BillingError:
    payment = repository.get_payment(conn, payment_id)
    left, currency = (payment.refundable, payment.currency) if payment else (0, "")
    return BillingError(
        "refund_exceeds_captured",
        f"A refund of {amount} would exceed what payment {payment_id} captured: only "
        f"{left} {currency} (minor units) can still be refunded.",
        "amount",
    )


def _get(conn: Connection, refund_id: str, *, lock: bool = False) -> Refund:
    refund = repository.get_refund(conn, refund_id, for_update=lock)
    if refund is None:
        raise BillingError("refund_not_found", f"No refund with id {refund_id}.", "refund_id")
    return refund


# The moments analytics measures approval time and time to refund by.
_MILESTONES = {
    "approved": "approved_at",
    "authorized": "authorized_at",
    "succeeded": "succeeded_at",
}


def _move(conn: Connection, refund: Refund, action: str, now: datetime, **values: Any) -> str:
    """Apply ``action``; a refund that stops holding its amount gives it back."""
    state = transition(refund.status, action)
    if holds_amount(refund.status) and not holds_amount(state):
        if not repository.release_refund_amount(conn, refund.payment_id, refund.amount, now):
            raise RuntimeError(f"payment {refund.payment_id} holds less than refund {refund.id}")
    milestone = _MILESTONES.get(state)
    if milestone is not None:
        values[milestone] = now
    repository.update_refund(conn, refund.id, refund.status, status=state, **values)
    return state


def approve(
    conn: Connection, *, refund_id: str, actor: str, now: datetime, note: str | None = None
) -> Refund:
    """Count one approver; the refund is approved once it has as many as it needs."""
    refund = _get(conn, refund_id, lock=True)
    transition(refund.status, "approve")
    approvals, enough = add_approval(
        refund.approvals,
        actor=actor,
        requested_by=refund.requested_by,
        needed=refund.approvals_needed,
        at=now,
    )
    if enough:
        _move(conn, refund, "approve", now, approvals=approvals, updated_at=now)
    else:
        repository.update_refund(
            conn, refund.id, refund.status, approvals=approvals, updated_at=now
        )
    action = "refund.approved" if enough else "refund.approval_added"
    detail = {"note": note, "approvals": len(approvals), "needed": refund.approvals_needed}
    _audit(conn, actor, action, refund_id, at=now, **detail)
    return _get(conn, refund_id)


def reject(conn: Connection, *, refund_id: str, actor: str, reason: str, now: datetime) -> Refund:
    if not reason or not reason.strip():
        raise BillingError("reason_required", "Say why the refund is rejected.", "reason")
    return _decide(conn, refund_id, "reject", actor=actor, now=now, decided_reason=reason)


def cancel(
    conn: Connection, *, refund_id: str, actor: str, now: datetime, reason: str | None = None
) -> Refund:
    return _decide(conn, refund_id, "cancel", actor=actor, now=now, decided_reason=reason)


def mark_submitted(
    conn: Connection, *, refund_id: str, gateway_refund_id: str, actor: str, now: datetime
) -> Refund:
    """Sent to the gateway under ``gateway_refund_id``; nothing is owed until it authorizes."""
    return _decide(
        conn, refund_id, "submit", actor=actor, now=now, gateway_refund_id=gateway_refund_id
    )


def _decide(
    conn: Connection, refund_id: str, action: str, *, actor: str, now: datetime, **values: Any
) -> Refund:
    refund = _get(conn, refund_id, lock=True)
    state = _move(conn, refund, action, now, updated_at=now, **values)
    released = refund.amount if not holds_amount(state) else None
    _audit(conn, actor, f"refund.{state}", refund_id, at=now, released=released, **values)
    return _get(conn, refund_id)


def mark_authorized(
    conn: Connection, *, refund_id: str, actor: str, now: datetime, emitter: Emitter
) -> Refund:
    """The gateway reserved the money: the store now owes it (refunds / payable)."""
    return _gateway_said(conn, refund_id, "authorize", actor=actor, now=now, emitter=emitter)


def mark_succeeded(
    conn: Connection, *, refund_id: str, actor: str, now: datetime, emitter: Emitter
) -> Refund:
    """The money left through the gateway: the debt to the customer is paid."""
    return _gateway_said(conn, refund_id, "succeed", actor=actor, now=now, emitter=emitter)


def mark_failed(
    conn: Connection,
    *,
    refund_id: str,
    actor: str,
    reason: str | None,
    now: datetime,
    emitter: Emitter,
) -> Refund:
    """The gateway failed the refund: give the amount back and undo what was posted.

    Failed before authorization nothing was posted; after it, the authorization is
    released; after success the refund is reversed (DESIGN.md, refund state machine).
    """
    return _gateway_said(
        conn, refund_id, "fail", actor=actor, now=now, emitter=emitter, failure_reason=reason
    )


_EVENTS = {"authorized": "refund.authorized", "succeeded": "refund.succeeded"}


def _gateway_said(
    conn: Connection,
    refund_id: str,
    action: str,
    *,
    actor: str,
    now: datetime,
    emitter: Emitter,
    **values: Any,
) -> Refund:
    refund = _get(conn, refund_id, lock=True)
    state = _move(conn, refund, action, now, updated_at=now, **values)
    payment = _stored_payment(conn, refund.payment_id)
    posting = ledger.REFUND_POSTINGS.get((refund.status, state))
    txn = None
    if posting is not None:
        lines = posting(payment.store, refund.currency, refund.amount)
        txn = ledger.post(conn, kind=posting.__name__, reference=refund_id, lines=lines, at=now)
    event_type = _EVENTS.get(state, "refund.failed")
    event = _emit(conn, emitter, event_type, refund, payment, now, actor)
    released = refund.amount if not holds_amount(state) else None
    detail = {"ledger": txn, "event": event, "released": released, **values}
    _audit(conn, actor, f"refund.{state}", refund_id, at=now, **detail)
    return _get(conn, refund_id)


def _stored_payment(conn: Connection, payment_id: str) -> Payment:
    payment = repository.get_payment(conn, payment_id)
    if payment is None:
        raise RuntimeError(f"payment {payment_id} is missing")
    return payment


def _emit(
    conn: Connection,
    emitter: Emitter,
    event_type: str,
    refund: Refund,
    payment: Payment,
    now: datetime,
    actor: str,
) -> str | None:
    """Hand the event to intake so the customer is told like from any source. A payment
    recorded without an order has no order to tell about: nothing is emitted."""
    if payment.order_id is None:
        return None
    data: dict[str, Any] = {
        "payment_id": payment.id,
        "amount": refund.amount,
        "currency": refund.currency,
        "reason_code": refund.reason_code,
        "method": payment.method,
    }
    if payment.customer_id:
        # Only the id: the engine keeps the profile it has and finds this customer even
        # when the order itself never came through intake.
        data["customer"] = {"id": payment.customer_id}
    event = refund_event(
        event_type, refund_id=refund.id, order_id=payment.order_id, data=data, at=now
    )
    ingest(conn, [event], rules=emitter.rules, delivery=emitter.delivery, now=now, actor=actor)
    return event.id
