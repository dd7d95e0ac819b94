"""Stripe, through the official ``stripe`` library's async client.

Mapping onto ``Gateway`` (amounts are Stripe's minor units; currencies upper-cased here,
lower-case at Stripe):

- A payment id is a PaymentIntent id (``pi_...``). ``lookup_capture`` retrieves it with
  its ``latest_charge`` expanded: amount ``amount_received``, refunded the charge's
  ``amount_refunded``. An intent that has not succeeded is ``payment_not_captured``.
  https://docs.stripe.com/api/payment_intents/retrieve
- ``refund`` creates a Refund for the PaymentIntent with the caller's key in the
  ``Idempotency-Key`` header and in ``metadata[tidings_refund]``, which is how
  ``find_refund`` and ``activity`` recognise it later. Refund statuses: ``succeeded``;
  ``pending`` and ``requires_action`` are pending; ``failed`` and ``canceled`` are failed
  with Stripe's ``failure_reason``. A currency other than the payment's is refused before
  anything is sent. https://docs.stripe.com/api/refunds,
  https://docs.stripe.com/api/idempotent_requests
- ``retry_payment`` confirms the PaymentIntent again, off session, with the payment method
  of its last attempt. A card error (HTTP 402) is a decline, its code Stripe's
  ``decline_code`` (else the error ``code``), as declines.py expects.
  https://docs.stripe.com/api/payment_intents/confirm, https://docs.stripe.com/declines/codes
- ``activity`` lists the day's charges (paid and captured: ``in``) and refunds (``out``,
  referenced by the key in their metadata) with ``created[gte]``/``created[lt]``, page by
  page with ``starting_after``. https://docs.stripe.com/api/pagination

Failures: rate limits, 5xx answers and connections refused before anything was sent are
``GatewayError(permanent=False)``; invalid requests, authentication, permission and
idempotency errors are permanent with Stripe's code. No answer in time (or a connection
lost after the request went out) is ``GatewayTimeout`` for requests that move money, and a
transient ``GatewayError`` for reads, which are safe to repeat. The library's own network
retries are off by default; when enabled they resend with the same idempotency key.
The API key never appears in an error message.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import httpx
import stripe
from stripe.params import ChargeListParams, RefundListParams, RefundListParamsCreated

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

_Window = RefundListParamsCreated

METADATA_KEY = "tidings_refund"
PAGE_SIZE = 100
_REFUND_STATUSES: dict[str, RefundStatus] = {
    "succeeded": "succeeded",
    "pending": "pending",
    "requires_action": "pending",
    "failed": "failed",
    "canceled": "failed",
}
_PAID = ("succeeded", "requires_capture")
# Raised by httpx before the request could have reached Stripe.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


class StripeGateway(Gateway):
    """Payments are PaymentIntents; see the module docstring for the mapping."""

    name = "stripe"

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str | None = None,
        timeout: float = 10.0,
        max_network_retries: int = 0,
        declines: DeclineClassifier | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("a Stripe secret key is required")
        self._api_key = api_key
        self._http = stripe.HTTPXClient(timeout=timeout)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base or stripe.DEFAULT_API_BASE},
            http_client=self._http,
            max_network_retries=max_network_retries,
        )
        if declines is not None:
            self.declines = declines

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.close_async()  # type: ignore[no-untyped-call]

    # ------------------------------------------------------------------ Gateway

    async def lookup_capture(self, payment_id: str) -> Capture:
        intent = await self._intent(payment_id, "lookup_capture")
        if intent.status != "succeeded" or not intent.amount_received:
            raise self._refused(
                f"payment {payment_id} is {intent.status}, with nothing captured",
                code="payment_not_captured",
            )
        charge = intent.latest_charge
        refunded = charge.amount_refunded if isinstance(charge, stripe.Charge) else 0
        return Capture(
            payment_id=payment_id,
            amount=intent.amount_received,
            currency=intent.currency.upper(),
            refunded=refunded,
        )

    async def refund(
        self, *, payment_id: str, amount: int, currency: str, idempotency_key: str
    ) -> GatewayRefund:
        intent = await self._intent(payment_id, "refund")
        if intent.currency.upper() != currency.upper():
            raise self._refused(
                f"payment {payment_id} is in {intent.currency.upper()}, not {currency.upper()}",
                code="currency_mismatch",
            )
        try:
            refund = await self._client.v1.refunds.create_async(
                params={
                    "payment_intent": payment_id,
                    "amount": amount,
                    "metadata": {METADATA_KEY: idempotency_key},
                },
                options={"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            raise self._translate(exc, "refund", idempotency_key) from exc
        if refund.currency.upper() != currency.upper():
            raise self._refused(
                f"refund {refund.id} was made in {refund.currency.upper()}, not {currency.upper()}",
                code="currency_mismatch",
            )
        return _view(refund)

    async def refund_status(self, gateway_refund_id: str) -> GatewayRefund:
        try:
            refund = await self._client.v1.refunds.retrieve_async(gateway_refund_id)
        except stripe.StripeError as exc:
            raise self._translate(exc, "refund_status") from exc
        return _view(refund)

    async def find_refund(self, *, payment_id: str, idempotency_key: str) -> GatewayRefund | None:
        for refund in await self._refunds({"payment_intent": payment_id}, "find_refund"):
            if _key_of(refund) == idempotency_key:
                return _view(refund)
        return None

    async def retry_payment(
        self, *, payment_id: str, amount: int, currency: str, idempotency_key: str
    ) -> PaymentAttempt:
        intent = await self._intent(payment_id, "retry_payment")
        if (intent.amount, intent.currency.upper()) != (amount, currency.upper()):
            raise self._refused(
                f"payment {payment_id} is for {intent.amount} {intent.currency.upper()}, "
                f"not {amount} {currency.upper()}",
                code="amount_mismatch",
            )
        error = intent.last_payment_error
        method = _id_of(error.payment_method if error else None) or _id_of(intent.payment_method)
        if method is None:
            raise self._refused(
                f"payment {payment_id} has no payment method to charge again",
                code="payment_method_missing",
            )
        try:
            confirmed = await self._client.v1.payment_intents.confirm_async(
                payment_id,
                params={"payment_method": method, "off_session": True, "expand": ["latest_charge"]},
                options={"idempotency_key": idempotency_key},
            )
        except stripe.CardError as exc:
            return _declined(
                exc, fallback_network=_method_brand(error.payment_method if error else None)
            )
        except stripe.StripeError as exc:
            # Paid already by an attempt with another key: a new key cannot confirm again.
            # (The same key is answered by Stripe with that attempt's first outcome.)
            if exc.code == "payment_intent_unexpected_state" and intent.status in _PAID:
                return PaymentAttempt("approved", network=_charge_brand(intent.latest_charge))
            raise self._translate(exc, "retry_payment", idempotency_key) from exc
        if confirmed.status in _PAID:
            return PaymentAttempt("approved", network=_charge_brand(confirmed.latest_charge))
        if confirmed.status == "processing":
            raise GatewayTimeout(
                f"payment {payment_id} is still processing at Stripe",
                operation="retry_payment",
                idempotency_key=idempotency_key,
                gateway=self.name,
            )
        last = confirmed.last_payment_error
        code = (last.decline_code or last.code) if last else None
        if confirmed.status == "requires_action":
            code = code or "authentication_required"
        return PaymentAttempt(
            "declined",
            decline_code=code,
            network=_method_brand(last.payment_method if last else None),
        )

    async def activity(self, day: date) -> list[Movement]:
        start = datetime.combine(day, time(), tzinfo=UTC)
        window: _Window = {
            "gte": int(start.timestamp()),
            "lt": int((start + timedelta(days=1)).timestamp()),
        }
        movements: list[Movement] = []
        for charge in await self._charges(window):
            if charge.paid and charge.captured and charge.amount_captured:
                movements.append(
                    Movement(
                        "in",
                        _id_of(charge.payment_intent) or charge.id,
                        charge.amount_captured,
                        charge.currency.upper(),
                    )
                )
        for refund in await self._refunds({"created": window}, "activity"):
            movements.append(
                Movement(
                    "out",
                    _key_of(refund) or refund.id,
                    refund.amount,
                    refund.currency.upper(),
                    failed=refund.status in ("failed", "canceled"),
                )
            )
        return movements

    # ------------------------------------------------------------------ internals

    async def _intent(self, payment_id: str, operation: str) -> stripe.PaymentIntent:
        try:
            return await self._client.v1.payment_intents.retrieve_async(
                payment_id, params={"expand": ["latest_charge"]}
            )
        except stripe.StripeError as exc:
            raise self._translate(exc, operation) from exc

    async def _refunds(self, query: RefundListParams, operation: str) -> list[stripe.Refund]:
        found: list[stripe.Refund] = []
        query["limit"] = PAGE_SIZE
        while True:
            try:
                page = await self._client.v1.refunds.list_async(params=query)
            except stripe.StripeError as exc:
                raise self._translate(exc, operation) from exc
            found.extend(page.data)
            if not page.has_more or not page.data:
                return found
            query["starting_after"] = page.data[-1].id

    async def _charges(self, window: _Window) -> list[stripe.Charge]:
        found: list[stripe.Charge] = []
        query: ChargeListParams = {"created": {**window}, "limit": PAGE_SIZE}
        while True:
            try:
                page = await self._client.v1.charges.list_async(params=query)
            except stripe.StripeError as exc:
                raise self._translate(exc, "activity") from exc
            found.extend(page.data)
            if not page.has_more or not page.data:
                return found
            query["starting_after"] = page.data[-1].id

    def _refused(self, message: str, *, code: str) -> GatewayError:
        return GatewayError(message, permanent=True, code=code, gateway=self.name)

    def _translate(
        self, exc: stripe.StripeError, operation: str, idempotency_key: str | None = None
    ) -> GatewayError | GatewayTimeout:
        """The one place a library error becomes ours. ``idempotency_key`` is given for
        requests that move money: for them an unanswered request is a GatewayTimeout."""
        detail = self._scrub(exc.user_message or type(exc).__name__)
        message = f"stripe {operation}: {detail}"
        code = exc.code or (exc.error.code if exc.error is not None else None)
        if isinstance(exc, stripe.APIConnectionError):
            cause = exc.__cause__
            if isinstance(cause, _NOT_SENT) or idempotency_key is None:
                return GatewayError(message, permanent=False, code=code, gateway=self.name)
            return GatewayTimeout(
                f"stripe {operation}: no answer ({type(cause).__name__}); the outcome is unknown",
                operation=operation,
                idempotency_key=idempotency_key,
                gateway=self.name,
            )
        if isinstance(exc, stripe.IdempotencyError):
            return self._refused(message, code=code or "idempotency_error")
        if isinstance(exc, stripe.RateLimitError):
            return GatewayError(
                message, permanent=False, code=code or "rate_limit", gateway=self.name
            )
        status = exc.http_status or 0
        if isinstance(exc, stripe.APIError) or status >= 500:
            return GatewayError(message, permanent=False, code=code, gateway=self.name)
        # InvalidRequestError, AuthenticationError, PermissionError, a card error where no
        # decline is expected, and anything else Stripe refused.
        return self._refused(message, code=code or _type_code(exc))

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "[api key]")


def _view(refund: stripe.Refund) -> GatewayRefund:
    status = _REFUND_STATUSES.get(refund.status or "", "pending")
    reason = refund.failure_reason if status == "failed" else None
    if status == "failed" and reason is None:
        reason = f"stripe reported the refund {refund.status}"
    return GatewayRefund(status=status, gateway_refund_id=refund.id, failure_reason=reason)


def _key_of(refund: stripe.Refund) -> str | None:
    """The idempotency key a refund was made with, from its metadata."""
    metadata = refund.metadata
    if metadata is None or METADATA_KEY not in metadata:
        return None
    value = metadata[METADATA_KEY]
    return value if isinstance(value, str) else None


def _declined(exc: stripe.CardError, *, fallback_network: str | None) -> PaymentAttempt:
    error = exc.error
    code = (error.decline_code if error is not None else None) or exc.code
    network = None
    if error is not None:
        network = _method_brand(error.payment_method)
        intent = error.payment_intent
        if network is None and intent is not None and intent.last_payment_error is not None:
            network = _method_brand(intent.last_payment_error.payment_method)
    return PaymentAttempt("declined", decline_code=code, network=network or fallback_network)


def _id_of(value: object) -> str | None:
    if isinstance(value, str):
        return value
    identifier = getattr(value, "id", None)
    return identifier if isinstance(identifier, str) else None


def _method_brand(method: object) -> str | None:
    card = getattr(method, "card", None)
    brand = getattr(card, "brand", None)
    return brand if isinstance(brand, str) else None


def _charge_brand(charge: object) -> str | None:
    details = getattr(charge, "payment_method_details", None)
    return _method_brand(details)


def _type_code(exc: stripe.StripeError) -> str:
    kind = exc.error.type if exc.error is not None else None
    return kind or type(exc).__name__
