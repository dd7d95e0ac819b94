"""A gateway that moves no money: outcomes follow from test card tokens and amounts.

For demos and tests. State lives in memory, per instance, behind a lock, so one instance
can be shared by every task and thread of a process.

Payments are made known with ``add_payment`` (a captured one with ``captured=...``, a
failed one awaiting retries without). A payment it has never seen can still be retried
when its id ends in a card token (``pay_9_tok_stolen``); refunds need a capture.

Card tokens decide ``retry_payment``:

=============================  ======================================================
token                          outcome of each attempt
=============================  ======================================================
``tok_ok``                     approved
``tok_insufficient_funds``     declined ``insufficient_funds`` (soft)
``tok_processing_error``       declined ``processing_error`` (soft)
``tok_do_not_honor``           declined ``do_not_honor`` (soft, hard after repeats)
``tok_stolen``                 declined ``stolen_card`` (hard)
``tok_lost``                   declined ``lost_card`` (hard)
``tok_fraudulent``             declined ``fraudulent`` (hard)
``tok_expired``                declined ``expired_card`` (hard)
``tok_flaky``                  the first ``flaky_declines`` attempts (constructor,
                               default 2) declined ``insufficient_funds``, then approved
``tok_flaky_<n>``              as ``tok_flaky`` with ``n`` declines
=============================  ======================================================

Attempts are counted per payment since its card was last set (``update_card`` starts
over). An attempt repeated with the same idempotency key answers the first outcome and is
not counted again.

The last two digits of a refund's amount in minor units decide ``refund``:

=========  ==================================================================
ends in    outcome
=========  ==================================================================
``13``     ``refund`` raises GatewayTimeout, yet the refund was made:
           ``find_refund`` finds it and ``refund_status`` reports succeeded
``42``     ``refund`` reports pending; ``refund_status`` then reports succeeded
``66``     ``refund`` reports succeeded, and so do the first
           ``late_failure_after`` status queries (constructor, default 1);
           later ones report failed (a late failure)
``99``     ``refund`` reports failed at once
other      ``refund`` reports succeeded
=========  ==================================================================

A payment the store recorded as captured through the sandbox (a ``payment.captured``
event naming gateway ``sandbox``) is one the sandbox took, in the simulation: given
``recorded`` (``RecordedPayments`` over the store's database), it answers for such a
payment on first use and reports its capture in ``activity``, so a demo can refund and
reconcile what its events paid.

Like a real gateway it refuses (permanent GatewayError) a refund above what is left of
the capture, a currency that is not the payment's, and an idempotency key reused with
different parameters (as Stripe does, https://docs.stripe.com/api/idempotent_requests).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Literal, Protocol

from tidings.billing.gateways.base import (
    Capture,
    Gateway,
    GatewayError,
    GatewayRefund,
    GatewayTimeout,
    Movement,
    PaymentAttempt,
    RefundStatus,
)
from tidings.billing.gateways.declines import DeclineClassifier

# Token → decline code of every attempt; None approves.
CARD_TOKENS: dict[str, str | None] = {
    "tok_ok": None,
    "tok_insufficient_funds": "insufficient_funds",
    "tok_processing_error": "processing_error",
    "tok_do_not_honor": "do_not_honor",
    "tok_stolen": "stolen_card",
    "tok_lost": "lost_card",
    "tok_fraudulent": "fraudulent",
    "tok_expired": "expired_card",
}
FLAKY_CARD = "tok_flaky"
FLAKY_DECLINE = "insufficient_funds"
_FLAKY_WITH_COUNT = re.compile(r"tok_flaky_(\d+)")
_TOKEN_AT_END = re.compile(r"tok_[a-z0-9_]+$")

TIMEOUT_ENDING = 13
PENDING_ENDING = 42
LATE_FAILURE_ENDING = 66
FAILURE_ENDING = 99

_Plan = Literal["succeed", "timeout", "pending", "late_failure", "fail"]


@dataclass(slots=True)
class _Payment:
    currency: str
    token: str
    network: str
    captured: int
    attempts_on_card: int = 0


@dataclass(slots=True)
class _Refund:
    gateway_refund_id: str
    payment_id: str
    amount: int
    currency: str
    idempotency_key: str
    plan: _Plan
    status: RefundStatus
    created: datetime
    status_queries: int = 0
    failure_reason: str | None = None


@dataclass(slots=True)
class _State:
    payments: dict[str, _Payment] = field(default_factory=dict)
    refunds: dict[str, _Refund] = field(default_factory=dict)
    refund_keys: dict[tuple[str, str], str] = field(default_factory=dict)
    # (payment_id, idempotency_key) → (amount, currency, outcome) of the first attempt.
    attempts: dict[tuple[str, str], tuple[int, str, PaymentAttempt]] = field(default_factory=dict)
    next_refund: int = 1
    # (when, payment_id, amount, currency) of every capture and approved retry.
    captures: list[tuple[datetime, str, int, str]] = field(default_factory=list)


class Recorded(Protocol):
    """Captures the store recorded for the sandbox (billing/gateways/recorded.py)."""

    def capture(self, payment_id: str) -> Capture | None: ...

    def captures_on(self, day: date) -> list[Movement]: ...


class SandboxGateway(Gateway):
    """Deterministic outcomes from card tokens and amounts; see the module docstring."""

    name = "sandbox"

    def __init__(
        self,
        *,
        flaky_declines: int = 2,
        late_failure_after: int = 1,
        default_network: str = "visa",
        declines: DeclineClassifier | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        recorded: Recorded | None = None,
    ) -> None:
        if flaky_declines < 0 or late_failure_after < 0:
            raise ValueError("flaky_declines and late_failure_after are counts (0 or more)")
        self.flaky_declines = flaky_declines
        self.late_failure_after = late_failure_after
        self.default_network = default_network
        if declines is not None:
            self.declines = declines
        self.clock = clock
        self.recorded = recorded
        self._lock = threading.Lock()
        self._state = _State()

    # ------------------------------------------------------------------ set-up

    def add_payment(
        self,
        payment_id: str,
        *,
        currency: str,
        captured: int = 0,
        card: str = "tok_ok",
        network: str | None = None,
    ) -> None:
        """Make a payment known, paid with the test ``card`` token: ``captured`` minor units
        (0 for a failed payment awaiting retries)."""
        _check_amount(captured, allow_zero=True)
        _check_token(card)
        with self._lock:
            if payment_id in self._state.payments:
                raise ValueError(f"sandbox payment {payment_id!r} already exists")
            self._state.payments[payment_id] = _Payment(
                currency=currency.upper(),
                token=card,
                network=network or self.default_network,
                captured=captured,
            )
            if captured:
                self._state.captures.append((self.clock(), payment_id, captured, currency.upper()))

    def update_card(self, payment_id: str, *, card: str, network: str | None = None) -> None:
        """The customer gave a new card: later attempts use it and count from zero."""
        _check_token(card)
        with self._lock:
            payment = self._payment(payment_id)
            payment.token = card
            payment.network = network or payment.network
            payment.attempts_on_card = 0

    # ------------------------------------------------------------------ Gateway

    async def lookup_capture(self, payment_id: str) -> Capture:
        with self._lock:
            payment = self._payment(payment_id)
            if payment.captured == 0:
                raise self._refused(
                    f"payment {payment_id!r} has no capture", code="payment_not_captured"
                )
            return Capture(
                payment_id=payment_id,
                amount=payment.captured,
                currency=payment.currency,
                refunded=self._refunded(payment_id),
            )

    async def refund(
        self, *, payment_id: str, amount: int, currency: str, idempotency_key: str
    ) -> GatewayRefund:
        _check_amount(amount, allow_zero=False)
        currency = currency.upper()
        with self._lock:
            existing_id = self._state.refund_keys.get((payment_id, idempotency_key))
            if existing_id is not None:
                existing = self._state.refunds[existing_id]
                if (existing.amount, existing.currency) != (amount, currency):
                    raise self._refused(
                        f"idempotency key {idempotency_key!r} was used for a refund of "
                        f"{existing.amount} {existing.currency}",
                        code="idempotency_error",
                    )
                # The same request again answers the refund the first one made.
                return _view(existing)
            payment = self._payment(payment_id)
            if currency != payment.currency:
                raise self._refused(
                    f"payment {payment_id!r} is in {payment.currency}, not {currency}",
                    code="currency_mismatch",
                )
            left = payment.captured - self._refunded(payment_id)
            if amount > left:
                raise self._refused(
                    f"refund of {amount} exceeds the {left} left of payment {payment_id!r}",
                    code="amount_too_large",
                )
            refund = self._new_refund(payment_id, amount, currency, idempotency_key)
            if refund.plan == "timeout":
                raise GatewayTimeout(
                    f"sandbox refund {refund.gateway_refund_id} timed out (amount ending in "
                    f"{TIMEOUT_ENDING}); it was made",
                    operation="refund",
                    idempotency_key=idempotency_key,
                    gateway=self.name,
                )
            return _view(refund)

    async def refund_status(self, gateway_refund_id: str) -> GatewayRefund:
        with self._lock:
            refund = self._state.refunds.get(gateway_refund_id)
            if refund is None:
                raise self._refused(
                    f"no sandbox refund {gateway_refund_id!r}", code="resource_missing"
                )
            return self._observe(refund)

    async def find_refund(self, *, payment_id: str, idempotency_key: str) -> GatewayRefund | None:
        with self._lock:
            refund_id = self._state.refund_keys.get((payment_id, idempotency_key))
            if refund_id is None:
                return None
            return self._observe(self._state.refunds[refund_id])

    async def retry_payment(
        self, *, payment_id: str, amount: int, currency: str, idempotency_key: str
    ) -> PaymentAttempt:
        _check_amount(amount, allow_zero=False)
        currency = currency.upper()
        with self._lock:
            first = self._state.attempts.get((payment_id, idempotency_key))
            if first is not None:
                if first[:2] != (amount, currency):
                    raise self._refused(
                        f"idempotency key {idempotency_key!r} was used for a charge of "
                        f"{first[0]} {first[1]}",
                        code="idempotency_error",
                    )
                return first[2]
            payment = self._state.payments.get(payment_id)
            if payment is None:
                payment = self._payment_named_by_token(payment_id, currency)
            if currency != payment.currency:
                raise self._refused(
                    f"payment {payment_id!r} is in {payment.currency}, not {currency}",
                    code="currency_mismatch",
                )
            payment.attempts_on_card += 1
            decline = self._decline_for(payment.token, payment.attempts_on_card)
            if decline is None:
                payment.captured += amount
                self._state.captures.append((self.clock(), payment_id, amount, currency))
                attempt = PaymentAttempt(outcome="approved", network=payment.network)
            else:
                attempt = PaymentAttempt(
                    outcome="declined", decline_code=decline, network=payment.network
                )
            self._state.attempts[(payment_id, idempotency_key)] = (amount, currency, attempt)
            return attempt

    async def activity(self, day: date) -> list[Movement]:
        recorded = self.recorded.captures_on(day) if self.recorded is not None else []
        with self._lock:
            known = {m.reference for m in recorded}
            moved = recorded + [
                Movement("in", payment_id, amount, currency)
                for at, payment_id, amount, currency in self._state.captures
                if at.astimezone(UTC).date() == day and payment_id not in known
            ]
            moved.extend(
                Movement(
                    "out",
                    r.idempotency_key,
                    r.amount,
                    r.currency,
                    failed=r.status == "failed",
                )
                for r in self._state.refunds.values()
                if r.created.astimezone(UTC).date() == day
            )
            return moved

    # ------------------------------------------------------------------ internals (locked)

    def _payment(self, payment_id: str) -> _Payment:
        payment = self._state.payments.get(payment_id) or self._adopt(payment_id)
        if payment is None:
            raise self._refused(f"no sandbox payment {payment_id!r}", code="resource_missing")
        return payment

    def _adopt(self, payment_id: str) -> _Payment | None:
        """A payment the store recorded as captured through the sandbox, now known here."""
        found = self.recorded.capture(payment_id) if self.recorded is not None else None
        if found is None:
            return None
        match = _TOKEN_AT_END.search(payment_id)
        token = match.group(0) if match and _is_token(match.group(0)) else "tok_ok"
        payment = _Payment(
            currency=found.currency,
            token=token,
            network=self.default_network,
            captured=found.amount,
        )
        self._state.payments[payment_id] = payment
        return payment

    def _payment_named_by_token(self, payment_id: str, currency: str) -> _Payment:
        match = _TOKEN_AT_END.search(payment_id)
        if match is None:
            raise self._refused(
                f"no sandbox payment {payment_id!r}: add it with add_payment, or end its id "
                "in a card token such as _tok_ok",
                code="resource_missing",
            )
        token = match.group(0)
        try:
            _check_token(token)
        except ValueError as exc:
            raise self._refused(str(exc), code="resource_missing") from None
        payment = _Payment(currency=currency, token=token, network=self.default_network, captured=0)
        self._state.payments[payment_id] = payment
        return payment

    def _decline_for(self, token: str, attempt: int) -> str | None:
        if token == FLAKY_CARD:
            return FLAKY_DECLINE if attempt <= self.flaky_declines else None
        flaky = _FLAKY_WITH_COUNT.fullmatch(token)
        if flaky is not None:
            return FLAKY_DECLINE if attempt <= int(flaky.group(1)) else None
        return CARD_TOKENS[token]

    def _refunded(self, payment_id: str) -> int:
        # A failed refund gives its amount back to the capture.
        return sum(
            r.amount
            for r in self._state.refunds.values()
            if r.payment_id == payment_id and r.status != "failed"
        )

    def _new_refund(
        self, payment_id: str, amount: int, currency: str, idempotency_key: str
    ) -> _Refund:
        plan = _plan_for(amount)
        status: RefundStatus = "succeeded"
        reason = None
        if plan == "pending":
            status = "pending"
        elif plan == "fail":
            status = "failed"
            reason = f"declined by the sandbox (amount ending in {FAILURE_ENDING})"
        refund = _Refund(
            gateway_refund_id=f"re_sandbox_{self._state.next_refund:06d}",
            payment_id=payment_id,
            amount=amount,
            currency=currency,
            idempotency_key=idempotency_key,
            plan=plan,
            status=status,
            created=self.clock(),
            failure_reason=reason,
        )
        self._state.next_refund += 1
        self._state.refunds[refund.gateway_refund_id] = refund
        self._state.refund_keys[(payment_id, idempotency_key)] = refund.gateway_refund_id
        return refund

    def _observe(self, refund: _Refund) -> GatewayRefund:
        """A status query: the moment pending refunds settle and late failures show."""
        refund.status_queries += 1
        if refund.plan == "pending":
            refund.status = "succeeded"
        elif refund.plan == "late_failure" and refund.status_queries > self.late_failure_after:
            refund.status = "failed"
            refund.failure_reason = (
                f"failed after it was reported succeeded (amount ending in {LATE_FAILURE_ENDING})"
            )
        return _view(refund)

    def _refused(self, message: str, *, code: str) -> GatewayError:
        return GatewayError(message, permanent=True, code=code, gateway=self.name)


def _plan_for(amount: int) -> _Plan:
    ending = amount % 100
    if ending == TIMEOUT_ENDING:
        return "timeout"
    if ending == PENDING_ENDING:
        return "pending"
    if ending == LATE_FAILURE_ENDING:
        return "late_failure"
    if ending == FAILURE_ENDING:
        return "fail"
    return "succeed"


def _view(refund: _Refund) -> GatewayRefund:
    return GatewayRefund(
        status=refund.status,
        gateway_refund_id=refund.gateway_refund_id,
        failure_reason=refund.failure_reason,
    )


def _is_token(token: str) -> bool:
    return bool(token in CARD_TOKENS or token == FLAKY_CARD or _FLAKY_WITH_COUNT.fullmatch(token))


def _check_token(token: str) -> None:
    if _is_token(token):
        return
    known = ", ".join([*CARD_TOKENS, FLAKY_CARD, "tok_flaky_<n>"])
    raise ValueError(f"unknown sandbox card token {token!r}; use one of {known}")


def _check_amount(amount: int, *, allow_zero: bool) -> None:
    low = 0 if allow_zero else 1
    if not isinstance(amount, int) or isinstance(amount, bool) or amount < low:
        raise ValueError(f"amounts are whole minor units of at least {low}, got {amount!r}")
