"""Stripe webhooks: verify ``Stripe-Signature``, map the payment and refund events.

Verification: ``Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]``; the signed payload is
``"<t>.<raw body>"``, HMAC-SHA256 with the endpoint's signing secret, hex. Any ``v1`` may
match (several during a secret roll); other schemes (``v0``) are ignored. A timestamp more
than five minutes from the time the request arrived is refused (replay protection).

| Stripe event                                  | canonical event                          |
| --------------------------------------------- | ---------------------------------------- |
| refund.created, charge.refunded               | refund.authorized (same id for one refund) |
| refund.updated, charge.refund.updated (succeeded) | refund.succeeded                     |
| refund.updated, charge.refund.updated (failed, canceled), refund.failed | refund.failed  |
| payment_intent.payment_failed, invoice.payment_failed | payment.failed                   |
| payment_intent.succeeded                      | payment.captured                         |

Every other event type is answered 200 with nothing stored. The order comes from
``metadata.order_id`` (strict: required; lenient: the PaymentIntent id stands in).

``refund.created``, ``refund.updated`` and ``refund.failed`` are sent for refunds of a
charge only from API version 2024-10-28.acacia on; before it they cover refunds without
a charge, and a charge refund's changes come as ``charge.refund.updated``, whose
``data.object`` is the Refund as well
(https://docs.stripe.com/changelog/acacia/2024-10-28/refund-webhook-update,
https://docs.stripe.com/api/refunds).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from babel.numbers import list_currencies

from tidings.intake.sources.base import (
    MapOptions,
    MappingError,
    SignatureError,
    SourceAdapter,
    WebhookRequest,
)

TOLERANCE_SECONDS = 300
_CURRENCIES = frozenset(list_currencies())
_AUTHORIZED = ("pending", "requires_action", "succeeded")
_FAILED = ("failed", "canceled")
_ORDER_FIELD = "data.object.metadata.order_id"


def _invalid(field: str, detail: str) -> MappingError:
    return MappingError("invalid_payload", f"{field}: {detail}", field=field)


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _id(value: Any) -> str | None:
    """An id that may be expanded into an object."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _amount(value: Any, field: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise _invalid(field, "must be a non-negative integer amount in minor units")


def _currency(value: Any, field: str) -> str:
    code = value.upper() if isinstance(value, str) else ""
    if code not in _CURRENCIES:
        raise MappingError(
            "invalid_currency", f"{field}: {value!r} is not an ISO 4217 currency", field=field
        )
    return code


def _time(value: Any, field: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC).isoformat()
    raise _invalid(field, "must be a Unix timestamp")


@dataclass(frozen=True, slots=True)
class _Event:
    event: Mapping[str, Any]
    obj: Mapping[str, Any]
    options: MapOptions

    @property
    def source(self) -> str:
        account = self.event.get("account")
        return f"stripe:{account if isinstance(account, str) and account else 'platform'}"

    @property
    def created(self) -> str:
        return _time(self.event.get("created"), "created")

    def order_id(self, fallback: str | None, *metadata: Any) -> str:
        for meta in metadata:
            value = _obj(meta).get("order_id")
            if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
                return str(value).strip()
        if self.options.strict or fallback is None:
            raise MappingError(
                "missing_order",
                f"The {self.event.get('type')} event names no order: set metadata.order_id "
                "on the PaymentIntent (or the Charge, Refund or Invoice).",
                field=_ORDER_FIELD,
            )
        return fallback

    def cloudevent(
        self, ce_id: str, event_type: str, time: str, data: dict[str, Any]
    ) -> dict[str, Any]:
        data["livemode"] = self.event.get("livemode")
        return {
            "specversion": "1.0",
            "id": ce_id,
            "source": self.source,
            "type": event_type,
            "subject": f"order/{data['order_id']}",
            "time": time,
            "data": data,
        }


# -- refunds ------------------------------------------------------------------------


def _refund_events(
    e: _Event,
    refund: Mapping[str, Any],
    *,
    updated: bool,
    charge: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The canonical events one state of a refund tells."""
    refund_id = _id(refund.get("id"))
    if refund_id is None:
        raise _invalid("data.object.id", "a refund needs its id")
    status = refund.get("status")
    charge = charge or {}
    intent = _id(refund.get("payment_intent")) or _id(charge.get("payment_intent"))
    charge_id = _id(refund.get("charge")) or _id(charge.get("id"))
    destination = _obj(refund.get("destination_details")).get("type")
    paid_with = _obj(charge.get("payment_method_details")).get("type")
    data: dict[str, Any] = {
        "order_id": e.order_id(
            intent or charge_id or refund_id, refund.get("metadata"), charge.get("metadata")
        ),
        "refund_id": refund_id,
        "payment_id": intent or charge_id,
        "amount": _amount(refund.get("amount"), "data.object.amount"),
        "currency": _currency(refund.get("currency"), "data.object.currency"),
        "reason_code": refund.get("reason") if isinstance(refund.get("reason"), str) else None,
        "method": destination if isinstance(destination, str) else paid_with,
    }
    if updated and status == "succeeded":
        ce_id = f"refund/{refund_id}/succeeded"
        return [e.cloudevent(ce_id, "refund.succeeded", e.created, data)]
    if status in _AUTHORIZED:
        created = _time(refund.get("created"), "data.object.created")
        data["authorized_at"] = created
        ce_id = f"refund/{refund_id}/authorized"
        return [e.cloudevent(ce_id, "refund.authorized", created, data)]
    if status in _FAILED:
        data["failure_reason"] = refund.get("failure_reason")
        data["refund_status"] = status
        return [e.cloudevent(f"refund/{refund_id}/failed", "refund.failed", e.created, data)]
    raise _invalid("data.object.status", f"{status!r} is not a refund status")


def _refund_created(e: _Event) -> list[dict[str, Any]]:
    return _refund_events(e, e.obj, updated=False)


def _refund_updated(e: _Event) -> list[dict[str, Any]]:
    # refund.updated and charge.refund.updated. A pending refund seen first here (before
    # 2024-10-28.acacia a charge refund has no refund.created) is still its
    # authorization; it collapses with any earlier one.
    return _refund_events(e, e.obj, updated=True)


def _refund_failed(e: _Event) -> list[dict[str, Any]]:
    refund = dict(e.obj)
    if refund.get("status") not in _FAILED:
        refund["status"] = "failed"
    return _refund_events(e, refund, updated=True)


def _charge_refunded(e: _Event) -> list[dict[str, Any]]:
    charge = e.obj
    listed = _obj(charge.get("refunds")).get("data")
    refunds = [r for r in listed if isinstance(r, Mapping)] if isinstance(listed, list) else []
    if refunds:
        # The newest refund is the news; the list is newest first, but do not rely on it.
        latest = max(enumerate(refunds), key=lambda p: (_created(p[1]), -p[0]))[1]
        return _refund_events(e, latest, updated=False, charge=charge)
    # No list (API 2022-11-15 and later). From 2024-10-28.acacia on, refund.created
    # announces the same refund with its own id, so this event is no news; announcing it
    # would tell the customer twice under two ids that cannot collapse.
    if _api_version(e.event) >= REFUND_EVENTS_FOR_CHARGES:
        return []
    charge_id = _id(charge.get("id"))
    if charge_id is None:
        raise _invalid("data.object.id", "a charge needs its id")
    refunded = _amount(charge.get("amount_refunded"), "data.object.amount_refunded")
    intent = _id(charge.get("payment_intent"))
    method = _obj(charge.get("payment_method_details")).get("type")
    data = {
        "order_id": e.order_id(intent or charge_id, charge.get("metadata")),
        "refund_id": f"{charge_id}/{refunded}",
        "payment_id": intent or charge_id,
        "amount": refunded,
        "currency": _currency(charge.get("currency"), "data.object.currency"),
        "reason_code": None,
        "method": method if isinstance(method, str) else None,
        "authorized_at": e.created,
        "cumulative": True,
    }
    ce_id = f"refund/{charge_id}/{refunded}/authorized"
    return [e.cloudevent(ce_id, "refund.authorized", e.created, data)]


# The first API version that sends refund.created for refunds of a charge.
REFUND_EVENTS_FOR_CHARGES = "2024-10-28"


def _api_version(event: Mapping[str, Any]) -> str:
    """The date part of ``api_version`` ("2024-10-28.acacia"); unknown sorts oldest."""
    value = event.get("api_version")
    return value[:10] if isinstance(value, str) else ""


def _created(refund: Mapping[str, Any]) -> int:
    value = refund.get("created")
    return value if isinstance(value, int) else 0


# -- payments -----------------------------------------------------------------------


def _attempt(value: Any, default: int = 1) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return default


def _payment_failed(e: _Event) -> list[dict[str, Any]]:
    intent = e.obj
    intent_id = _id(intent.get("id"))
    if intent_id is None:
        raise _invalid("data.object.id", "a PaymentIntent needs its id")
    error = _obj(intent.get("last_payment_error"))
    attempt = _attempt(_obj(intent.get("metadata")).get("attempt"))
    decline = error.get("decline_code") or error.get("code")
    charge_id = _id(error.get("charge")) or _id(intent.get("latest_charge"))
    data = {
        "order_id": e.order_id(intent_id, intent.get("metadata")),
        "payment_id": intent_id,
        "amount": _amount(intent.get("amount"), "data.object.amount"),
        "currency": _currency(intent.get("currency"), "data.object.currency"),
        "gateway": "stripe",
        "decline_code": decline if isinstance(decline, str) else None,
        "attempt": attempt,
        "failure_message": error.get("message") if isinstance(error.get("message"), str) else None,
    }
    ce_id = f"payment/{intent_id}/failed/{charge_id or f'attempt-{attempt}'}"
    return [e.cloudevent(ce_id, "payment.failed", e.created, data)]


def _invoice_payment_failed(e: _Event) -> list[dict[str, Any]]:
    invoice = e.obj
    invoice_id = _id(invoice.get("id"))
    if invoice_id is None:
        raise _invalid("data.object.id", "an invoice needs its id")
    # payment_intent and charge exist on invoices before API 2025-03-31.basil.
    intent_id = _id(invoice.get("payment_intent"))
    charge_id = _id(invoice.get("charge"))
    attempt = _attempt(invoice.get("attempt_count"))
    subscription = _obj(invoice.get("subscription_details")) or _obj(
        _obj(invoice.get("parent")).get("subscription_details")
    )
    next_attempt = invoice.get("next_payment_attempt")
    data = {
        "order_id": e.order_id(
            intent_id or invoice_id, invoice.get("metadata"), subscription.get("metadata")
        ),
        "payment_id": intent_id or invoice_id,
        "invoice_id": invoice_id,
        "amount": _amount(invoice.get("amount_due"), "data.object.amount_due"),
        "currency": _currency(invoice.get("currency"), "data.object.currency"),
        "gateway": "stripe",
        "decline_code": None,
        "attempt": attempt,
        "next_attempt_at": (
            _time(next_attempt, "data.object.next_payment_attempt") if next_attempt else None
        ),
    }
    # The charge id, when given, is the one payment_intent.payment_failed names too.
    ce_id = f"payment/{intent_id or invoice_id}/failed/{charge_id or f'attempt-{attempt}'}"
    return [e.cloudevent(ce_id, "payment.failed", e.created, data)]


def _payment_succeeded(e: _Event) -> list[dict[str, Any]]:
    intent = e.obj
    intent_id = _id(intent.get("id"))
    if intent_id is None:
        raise _invalid("data.object.id", "a PaymentIntent needs its id")
    data = {
        "order_id": e.order_id(intent_id, intent.get("metadata")),
        "payment_id": intent_id,
        "amount": _amount(intent.get("amount_received"), "data.object.amount_received"),
        "currency": _currency(intent.get("currency"), "data.object.currency"),
        "gateway": "stripe",
    }
    return [e.cloudevent(f"payment/{intent_id}/captured", "payment.captured", e.created, data)]


_TYPES: dict[str, Callable[[_Event], list[dict[str, Any]]]] = {
    "refund.created": _refund_created,
    "refund.updated": _refund_updated,
    "charge.refund.updated": _refund_updated,
    "refund.failed": _refund_failed,
    "charge.refunded": _charge_refunded,
    "payment_intent.payment_failed": _payment_failed,
    "invoice.payment_failed": _invoice_payment_failed,
    "payment_intent.succeeded": _payment_succeeded,
}


class StripeAdapter(SourceAdapter):
    name = "stripe"

    def verify(self, request: WebhookRequest, secret: str) -> None:
        header = request.header("stripe-signature")
        if not header:
            raise SignatureError("The request has no Stripe-Signature header.")
        timestamp: str | None = None
        signatures: list[bytes] = []
        for element in header.split(","):
            key, sep, value = element.strip().partition("=")
            if sep and key == "t":
                timestamp = value.strip()
            elif sep and key == "v1":
                signatures.append(value.strip().encode())
        if timestamp is None or not timestamp.isdigit():
            raise SignatureError("Stripe-Signature has no timestamp (t=...).")
        if not signatures:
            raise SignatureError("Stripe-Signature has no v1 signature.")
        signed = timestamp.encode() + b"." + request.body
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest().encode()
        # Check every v1 without stopping early: the time taken says nothing.
        matches = [hmac.compare_digest(expected, candidate) for candidate in signatures]
        if not any(matches):
            raise SignatureError(
                "No v1 signature in Stripe-Signature matches the body: the body was altered "
                "or the endpoint's signing secret is not the one configured."
            )
        skew = request.received_at.timestamp() - int(timestamp)
        if abs(skew) > TOLERANCE_SECONDS:
            raise SignatureError(
                f"The Stripe-Signature timestamp is {int(abs(skew))} s away from the time the "
                f"request arrived; at most {TOLERANCE_SECONDS} s are accepted (replay "
                "protection)."
            )

    def account(self, request: WebhookRequest) -> str | None:
        try:
            event = json.loads(request.body)
        except ValueError:
            return None
        account = event.get("account") if isinstance(event, dict) else None
        return account if isinstance(account, str) and account else None

    def map(self, request: WebhookRequest, options: MapOptions) -> list[dict[str, Any]]:
        try:
            event = json.loads(request.body)
        except ValueError as exc:
            raise MappingError("invalid_json", f"The body is not valid JSON: {exc}.") from exc
        if not isinstance(event, Mapping) or event.get("object") != "event":
            raise _invalid("object", "a Stripe webhook body is an event object")
        event_type = event.get("type")
        if not isinstance(event_type, str) or not event_type:
            raise _invalid("type", "the event has no type")
        if not isinstance(event.get("livemode"), bool):
            raise _invalid("livemode", "must be true or false")
        handler = _TYPES.get(event_type)
        if handler is None:
            return []
        data_object = _obj(event.get("data")).get("object")
        if not isinstance(data_object, Mapping):
            raise _invalid("data.object", "the event carries no object")
        return handler(_Event(event, data_object, options))


ADAPTER = StripeAdapter()
