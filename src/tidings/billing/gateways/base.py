"""What every payment gateway adapter offers billing, and how its failures are told apart.

Two kinds of failure, deliberately unrelated classes so that catching one never
swallows the other:

- ``GatewayError``: the gateway answered and refused, or could not be reached before
  anything was sent. ``permanent`` says whether the same request can ever succeed.
- ``GatewayTimeout``: the request may or may not have been acted on. For a refund the
  caller keeps it ``submitted`` and asks later (``find_refund``, then ``refund_status``);
  it never submits it again, which could pay the customer twice. For a payment, the only
  safe repeat is one with the same idempotency key, which the gateway answers with the
  first outcome.

Every request that moves money carries the caller's idempotency key, stable across
crashes and repeats, in the field the gateway documents for it (Stripe: the
``Idempotency-Key`` header, https://docs.stripe.com/api/idempotent_requests).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Literal

from tidings.billing.gateways.declines import DeclineCategory, DeclineClassifier

RefundStatus = Literal["pending", "succeeded", "failed"]
AttemptOutcome = Literal["approved", "declined"]
Direction = Literal["in", "out"]


class GatewayError(Exception):
    """The gateway refused or could not be reached; ``permanent`` errors are never retried."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        code: str | None = None,
        gateway: str | None = None,
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        # The gateway's own error code when it gave one (e.g. Stripe's "amount_too_large").
        self.code = code
        self.gateway = gateway


class GatewayTimeout(Exception):
    """No answer in time: the outcome is unknown. Ask the gateway later; never submit again."""

    def __init__(
        self,
        message: str,
        *,
        operation: str,
        idempotency_key: str | None = None,
        gateway: str | None = None,
    ) -> None:
        super().__init__(message)
        # "refund", "retry_payment", ...: what to reconcile.
        self.operation = operation
        self.idempotency_key = idempotency_key
        self.gateway = gateway


@dataclass(frozen=True, slots=True)
class Capture:
    """What the gateway holds for a payment: amounts in minor units of ``currency``."""

    payment_id: str
    amount: int
    currency: str
    # Refunded so far according to the gateway, failed refunds excluded.
    refunded: int = 0


@dataclass(frozen=True, slots=True)
class GatewayRefund:
    status: RefundStatus
    gateway_refund_id: str
    failure_reason: str | None = None


@dataclass(frozen=True, slots=True)
class PaymentAttempt:
    outcome: AttemptOutcome
    # The decline code in Stripe's vocabulary (see declines.py); None when approved.
    decline_code: str | None = None
    # Card network ("visa", "mastercard", ...): retry policies cap attempts per network.
    network: str | None = None


@dataclass(frozen=True, slots=True)
class Movement:
    """Money the gateway reports moving on a day, for reconciliation.

    ``in``: a capture or an approved retry, ``reference`` the gateway's payment id.
    ``out``: a refund, ``reference`` the idempotency key the refund was made with (our
    refund id), ``failed`` when the gateway reports it failed.
    """

    direction: Direction
    reference: str
    amount: int
    currency: str
    failed: bool = False


class Gateway(abc.ABC):
    """One payment gateway. Amounts are integers in minor units; currencies ISO 4217."""

    name: str
    # Gateways with their own decline vocabulary map to Stripe's codes, then use this.
    declines: DeclineClassifier = DeclineClassifier()

    @abc.abstractmethod
    async def lookup_capture(self, payment_id: str) -> Capture:
        """The captured and refunded amounts the gateway holds for ``payment_id``."""

    @abc.abstractmethod
    async def refund(
        self, *, payment_id: str, amount: int, currency: str, idempotency_key: str
    ) -> GatewayRefund:
        """Refund part or all of a capture. Raises GatewayTimeout when the outcome is unknown."""

    @abc.abstractmethod
    async def refund_status(self, gateway_refund_id: str) -> GatewayRefund:
        """The refund's status now; a refund reported succeeded may later report failed."""

    @abc.abstractmethod
    async def find_refund(self, *, payment_id: str, idempotency_key: str) -> GatewayRefund | None:
        """The refund a timed-out ``refund`` call may have made, or None if the gateway has
        none. Only None makes submitting again (with the same idempotency key) safe."""

    @abc.abstractmethod
    async def retry_payment(
        self, *, payment_id: str, amount: int, currency: str, idempotency_key: str
    ) -> PaymentAttempt:
        """Charge the payment's card again. A decline is an outcome, not an error."""

    def decline_category(
        self, decline_code: str | None, *, earlier_codes: Iterable[str | None] = ()
    ) -> DeclineCategory:
        """Hard or soft; pure, so not async. ``earlier_codes``: earlier attempts' codes."""
        return self.declines.category(decline_code, earlier_codes=earlier_codes)

    async def aclose(self) -> None:
        """Release pooled connections; a gateway that holds none has nothing to do."""
        return None

    @abc.abstractmethod
    async def activity(self, day: date) -> list[Movement]:
        """Every capture, approved retry and refund the gateway made on ``day`` (UTC)."""
