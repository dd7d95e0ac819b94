"""Refund decisions as pure functions: requests, the state machine, approvals, line items.

State machine (DESIGN.md, "State machines"): ``requested`` → ``pending_approval`` →
``approved`` | ``rejected`` → ``submitted`` → ``authorized`` → ``succeeded`` | ``failed``;
``canceled`` before submission; ``reversed`` when the gateway fails a refund after it
succeeded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from tidings.billing.errors import BillingError
from tidings.events.envelope import CanonicalEvent
from tidings.events.feeds import BILLING_SOURCE
from tidings.events.schemas import CATALOGUE

EVENT_SOURCE = BILLING_SOURCE

REASON_CODES = (
    "requested_by_customer",
    "duplicate",
    "fraudulent",
    "damaged",
    "not_received",
    "order_canceled",
    "other",
)

# (state, action) → next state. Anything missing is an illegal move.
TRANSITIONS: dict[tuple[str, str], str] = {
    ("requested", "await_approval"): "pending_approval",
    ("requested", "approve"): "approved",  # the policy asked for no approver
    ("pending_approval", "approve"): "approved",
    ("requested", "reject"): "rejected",
    ("pending_approval", "reject"): "rejected",
    ("requested", "cancel"): "canceled",
    ("pending_approval", "cancel"): "canceled",
    ("approved", "cancel"): "canceled",
    ("approved", "submit"): "submitted",
    ("submitted", "authorize"): "authorized",
    ("submitted", "fail"): "failed",
    ("authorized", "succeed"): "succeeded",
    ("authorized", "fail"): "failed",
    # The gateway failed a refund it had reported as succeeded: the ledger reverses it.
    ("succeeded", "fail"): "reversed",
}
STATES = frozenset(state for state, _ in TRANSITIONS) | frozenset(TRANSITIONS.values())
ACTIONS = frozenset(action for _, action in TRANSITIONS)
# States whose amount no longer counts against the payment (DESIGN.md invariant 5).
RELEASED = frozenset({"rejected", "canceled", "failed", "reversed"})
FINAL = RELEASED


def transition(state: str, action: str) -> str:
    """The state after ``action``; BillingError ``illegal_transition`` when not allowed."""
    following = TRANSITIONS.get((state, action))
    if following is not None:
        return following
    allowed = sorted(a for (s, a) in TRANSITIONS if s == state)
    if state not in STATES:
        detail = f"'{state}' is not a refund state."
    elif not allowed:
        detail = f"The refund is {state}, a final state: it cannot {action}."
    else:
        detail = (
            f"A refund that is {state} cannot {action}; from {state} it can only: "
            f"{', '.join(allowed)}."
        )
    raise BillingError("illegal_transition", detail, field="status")


def holds_amount(state: str) -> bool:
    """Whether a refund in ``state`` keeps its amount reserved on the payment."""
    return state not in RELEASED


def add_approval(
    approvals: Sequence[Mapping[str, Any]],
    *,
    actor: str,
    requested_by: str,
    needed: int,
    at: datetime,
) -> tuple[list[dict[str, Any]], bool]:
    """Record one approver; returns the approvals and whether there are now enough.

    The requester can never approve their own refund, and one person counts once, so
    "two approvers" always means two different people.
    """
    if actor == requested_by:
        raise BillingError(
            "self_approval",
            f"{actor} requested this refund and cannot approve it: ask another approver.",
            field="actor",
        )
    if any(entry.get("actor") == actor for entry in approvals):
        raise BillingError(
            "duplicate_approval",
            f"{actor} has already approved this refund; it needs a different approver.",
            field="actor",
        )
    updated = [dict(entry) for entry in approvals]
    updated.append({"actor": actor, "at": at.isoformat()})
    return updated, len(updated) >= needed


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """What a refund request asks for: what an idempotency key is bound to."""

    payment_id: str
    amount: int | Literal["full"]
    currency: str
    reason_code: str
    reason: str | None
    lines: list[dict[str, Any]] | None

    @classmethod
    def checked(
        cls,
        *,
        payment_id: str,
        amount: int | Literal["full"],
        currency: str,
        reason_code: str,
        reason: str | None,
        lines: Sequence[Mapping[str, Any]] | None,
        idempotency_key: str,
    ) -> RefundRequest:
        if reason_code not in REASON_CODES:
            raise BillingError(
                "invalid_reason_code",
                f"'{reason_code}' is not a refund reason; use one of: {', '.join(REASON_CODES)}.",
                "reason_code",
            )
        if amount != "full":
            positive_amount(amount)
        if not idempotency_key or len(idempotency_key) > 255:
            raise BillingError(
                "idempotency_key_required",
                "Send an idempotency key (1 to 255 characters) so a retried request is not "
                "refunded twice.",
                "idempotency_key",
            )
        # Stored as JSON: compare retries against the same JSON shape.
        stored = json.loads(json.dumps([dict(line) for line in lines])) if lines else None
        return cls(payment_id, amount, currency, reason_code, reason, stored)

    def check_replay(self, refund_id: str, stored: Mapping[str, Any]) -> None:
        """A retry must ask for what its key was first used for (``stored``, the refund);
        ``"full"`` matches the amount the first request resolved to."""
        asked = {
            "payment_id": self.payment_id,
            "amount": stored["amount"] if self.amount == "full" else self.amount,
            "currency": self.currency,
            "reason_code": self.reason_code,
            "reason": self.reason,
            "lines": self.lines,
        }
        differs = [
            name for name, value in asked.items() if (stored[name] or None) != (value or None)
        ]
        if differs:
            raise BillingError(
                "idempotency_conflict",
                f"This idempotency key was first used for refund {refund_id} with a different "
                f"{', '.join(differs)}; use a new key for a new refund.",
                "idempotency_key",
            )


def refund_event(
    event_type: str, *, refund_id: str, order_id: str, data: Mapping[str, Any], at: datetime
) -> CanonicalEvent:
    """The canonical event billing emits as a source (DESIGN.md, canonical data).

    Its id is fixed per refund and type, so emitting it again changes nothing.
    """
    extra = {"refund.authorized": "authorized_at", "refund.succeeded": "succeeded_at"}
    body = {"order_id": order_id, "refund_id": refund_id, **data}
    if event_type in extra:
        body[extra[event_type]] = at.isoformat()
    canonical = CATALOGUE[event_type].model_validate(body).model_dump(mode="json")
    return CanonicalEvent(
        source=EVENT_SOURCE,
        id=f"{refund_id}.{event_type.split('.', 1)[1]}",
        type=event_type,
        subject=f"order/{order_id}",
        time=at,
        data=canonical,
    )


def positive_amount(amount: object, field: str = "amount") -> int:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise BillingError(
            "invalid_amount",
            f"{field} must be a positive integer in minor units (cents), got {amount!r}.",
            field,
        )
    return amount


# --- Line items -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderLine:
    """A captured order line: ``tax`` is the tax of the whole line (all units)."""

    key: str
    unit_price: int
    quantity: int
    tax: int = 0


@dataclass(frozen=True, slots=True)
class OrderAmounts:
    lines: tuple[OrderLine, ...]
    shipping: int = 0
    shipping_tax: int = 0

    @property
    def goods(self) -> int:
        return sum(line.unit_price * line.quantity for line in self.lines)

    @property
    def total(self) -> int:
        taxes = sum(line.tax for line in self.lines)
        return self.goods + taxes + self.shipping + self.shipping_tax


@dataclass(frozen=True, slots=True)
class LineItemRefund:
    goods: int
    tax: int
    shipping: int
    shipping_tax: int

    @property
    def total(self) -> int:
        return self.goods + self.tax + self.shipping + self.shipping_tax


def _cumulative_share(amount: int, done: int, whole: int) -> int:
    """``amount * done / whole`` rounded half up, exact in integers."""
    return (2 * amount * done + whole) // (2 * whole)


def line_item_refund(
    order: OrderAmounts,
    *,
    already: Mapping[str, int],
    selected: Mapping[str, int],
) -> LineItemRefund:
    """What refunding ``selected`` units (per line key) costs, given units ``already``
    refunded by earlier partial refunds.

    Rounding rule (cumulative, half up): a line's tax after ``c`` of its ``q`` units are
    refunded is ``round(tax * c / q)``; this refund gets that cumulative share minus the
    share earlier refunds already got. Shipping and its tax are shared the same way in
    proportion to the goods value refunded so far (by units when every line is free).
    Each share is within one minor unit of the exact proportion, and once every unit is
    refunded the shares telescope to the whole: the last partial refund takes the
    remainder, so all partial refunds together equal the captured total exactly.
    """
    by_key = {line.key: line for line in order.lines}
    if len(by_key) != len(order.lines):
        raise BillingError("invalid_lines", "Every order line needs a distinct key.", "lines")
    amounts = [order.shipping, order.shipping_tax]
    amounts += [n for line in order.lines for n in (line.unit_price, line.tax)]
    if min(amounts) < 0 or any(line.quantity <= 0 for line in order.lines):
        raise BillingError(
            "invalid_lines",
            "Order amounts must be zero or more and every line needs at least one unit.",
            "lines",
        )
    for key, count in selected.items():
        line = by_key.get(key)
        if line is None:
            raise BillingError("unknown_line", f"The order has no line '{key}'.", "lines")
        before = already.get(key, 0)
        if count <= 0 or before < 0 or before + count > line.quantity:
            raise BillingError(
                "line_quantity_exceeds_remaining",
                f"Line '{key}' has {line.quantity - before} unit(s) left to refund; "
                f"{count} were asked for.",
                "lines",
            )
    goods = tax = 0
    weight_before = weight_after = 0
    by_units = order.goods == 0
    for line in order.lines:
        before = already.get(line.key, 0)
        after = before + selected.get(line.key, 0)
        unit = 1 if by_units else line.unit_price
        weight_before += unit * before
        weight_after += unit * after
        if after == before:
            continue
        goods += line.unit_price * (after - before)
        tax += _cumulative_share(line.tax, after, line.quantity) - _cumulative_share(
            line.tax, before, line.quantity
        )
    whole = sum(line.quantity for line in order.lines) if by_units else order.goods
    if whole == 0:
        return LineItemRefund(goods, tax, 0, 0)

    def shipping_share(amount: int) -> int:
        return _cumulative_share(amount, weight_after, whole) - _cumulative_share(
            amount, weight_before, whole
        )

    return LineItemRefund(
        goods, tax, shipping_share(order.shipping), shipping_share(order.shipping_tax)
    )
