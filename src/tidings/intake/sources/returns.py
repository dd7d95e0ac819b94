"""Returns platforms: ``POST /api/intake/returns`` → ``return.status_changed`` (+ refunds).

Two shapes are accepted on the one route; the signature header says which, and the
source of the events says which it was (``returns:loop`` or ``returns:erp``). The secret
for both is ``TIDINGS_RETURNS_WEBHOOK_SECRET``.

Loop Returns (https://docs.loopreturns.com/webhook-reference/validation and
https://docs.loopreturns.com/reference/return-webhook)
    Header ``X-Loop-Signature``: the base64 HMAC-SHA256 of the raw body keyed with the
    webhook secret from Loop's Developer Tools page (Loop signs the exact JSON it sends,
    so the raw body is what is verified). Only the ``return`` topic is mapped
    (triggers ``return.created``, ``return.updated``, ``return.closed``); ``label``,
    ``restock``, ``giftcard`` and Happy Returns topics are answered 200 and not stored.
    Read from the body: ``id`` (the return), ``state`` (open, review / needs review,
    closed, cancelled, expired), ``provider_order_id`` (the store's order id, used as
    ``order_id``; Loop's own ``order_id`` is kept as ``loop_order_id``), ``order_name``,
    ``created_at``, ``edited_at``, ``currency``, ``refund``, ``refunds[]`` (``amount``
    in major units, ``currency``, ``gateway``), ``labels[]`` (``status``, ``url``,
    ``updated_at``; older payloads flatten these to ``label_status``, ``label_url``,
    ``label_updated_at``), ``line_items[]`` (one unit each: ``sku``, ``return_reason``),
    ``status_page_url``. Canonical status: cancelled or expired → ``canceled``; review →
    ``requested``; open → ``received`` once the label is delivered, ``in_transit`` while
    it moves, ``label_issued`` once a label exists, else ``requested``; closed →
    ``refunded`` when money went back to the customer (then also ``refund.succeeded``),
    else ``closed``.

Generic ERP / WMS JSON (documented here; any system can send it)
    Header ``X-Tidings-Signature: sha256=<hex>``: the hex HMAC-SHA256 of the raw body
    keyed with the secret. Body::

        {"event_id": "evt-1", "return_id": "rma_7", "order_id": "1042",
         "status": "received", "return_reference": "R-1042-1",
         "label_url": null, "reason": "too small", "outcome": null,
         "lines": [{"sku": "BULB-4", "quantity": 1}],
         "occurred_at": "2026-11-21T10:00:00+01:00",
         "refund": {"amount": 1250, "currency": "EUR"}}

    ``status`` is a canonical return status (requested, approved, declined,
    label_issued, in_transit, received, inspected, restocked, refund_authorized,
    refunded, closed, canceled). ``outcome`` is "accepted" or "rejected" (for
    ``inspected``). ``refund.amount`` is an integer in minor units (1250 = 12.50), or a
    decimal string in major units ("12.50"). ``event_id`` is informative only.

Both: the event id is ``return/<return id>/<status>``. When the return reaches
``refund_authorized`` or ``refunded`` and the payload carries a refund amount and
currency, a ``refund.authorized`` / ``refund.succeeded`` event follows, with refund id
``return:<return id>`` and event id ``refund/return:<return id>/authorized`` (or
``succeeded``), so the refund family of messages is used for it.

An ERP refund status without the refund (no ``refund``, or no amount or currency) is
refused in strict mode (``missing_refund``, naming the field). Lenient mode keeps the
event id of the status sent but tells the step it implies, as Loop's closed-without-refund
does: ``refund_authorized`` becomes ``inspected`` with outcome ``accepted`` (a refund is
to come), ``refunded`` becomes ``closed``; ``reported_status`` keeps what was sent and
``refund_missing`` says which field was missing.

Strictness: ``order_id`` (Loop: ``provider_order_id``) is always required, since a
return event is order-scoped. Strict mode also requires the returned lines, each with a
SKU (and, for the ERP shape, a positive integer quantity); lenient mode drops lines it
cannot read and lets the optional fields be null.
"""

from __future__ import annotations

import base64
from collections import Counter
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, get_args

from babel.numbers import get_currency_precision, list_currencies

from tidings.events.schemas import ReturnStatus
from tidings.intake.sources.base import (
    MapOptions,
    MappingError,
    SignatureError,
    SourceAdapter,
    WebhookRequest,
)
from tidings.intake.sources.carrier_status import (
    hmac_sha256,
    instant,
    json_object,
    same_signature,
    text,
)

LOOP, ERP = "loop", "erp"
LOOP_HEADER = "x-loop-signature"
ERP_HEADER = "x-tidings-signature"
ERP_PREFIX = "sha256="

RETURN_STATUSES = frozenset(get_args(ReturnStatus))
OUTCOMES = frozenset({"accepted", "rejected"})
REFUND_EVENTS = {"refund_authorized": "authorized", "refunded": "succeeded"}
# Lenient: what a refund status without its refund is told as (accepted, refund to come;
# complete), the same choice Loop's closed-without-refund gets.
TOLD_WITHOUT_REFUND = {"refund_authorized": "inspected", "refunded": "closed"}
_CURRENCIES = frozenset(list_currencies())

LOOP_STATES = {
    "cancelled": "canceled",
    "expired": "canceled",
    "review": "requested",
    "needs review": "requested",
    "needs_review": "requested",
}
LOOP_LABEL_STATUSES = {
    "in_transit": "in_transit",
    "out_for_delivery": "in_transit",
    "delivered": "received",
}


def platform(request: WebhookRequest) -> str | None:
    """Which shape this is, from the signature header it carries."""
    if request.header(LOOP_HEADER):
        return LOOP
    if request.header(ERP_HEADER):
        return ERP
    return None


class ReturnsAdapter(SourceAdapter):
    name = "returns"

    def verify(self, request: WebhookRequest, secret: str) -> None:
        kind = platform(request)
        if kind is None:
            raise SignatureError(
                "The request has no X-Loop-Signature (Loop) nor X-Tidings-Signature (ERP) "
                "header; returns webhooks must be signed."
            )
        if kind == LOOP:
            expected = base64.b64encode(hmac_sha256(secret.encode(), request.body)).decode()
            received = request.header(LOOP_HEADER) or ""
        else:
            expected = ERP_PREFIX + hmac_sha256(secret.encode(), request.body).hex()
            received = request.header(ERP_HEADER) or ""
        if not same_signature(received, expected):
            raise SignatureError(
                f"The {'X-Loop-Signature' if kind == LOOP else 'X-Tidings-Signature'} does "
                "not match the body. Check that TIDINGS_RETURNS_WEBHOOK_SECRET is the "
                "webhook secret the sender signs with."
            )

    def account(self, request: WebhookRequest) -> str | None:
        if platform(request) != LOOP:
            return None
        try:
            return text(json_object(request.body, provider="Loop").get("shop_id"))
        except MappingError:
            return None

    def map(self, request: WebhookRequest, options: MapOptions) -> list[dict[str, Any]]:
        kind = platform(request)
        document = json_object(request.body, provider="returns")
        if kind == LOOP or (kind is None and "topic" in document):
            return _map_loop(document, request, options)
        return _map_erp(document, request, options)


# --- Loop Returns ------------------------------------------------------------------------


def _map_loop(
    document: dict[str, Any], request: WebhookRequest, options: MapOptions
) -> list[dict[str, Any]]:
    if document.get("topic") != "return":
        return []
    return_id = _required(document, "id", "The Loop return has no id.")
    order_id = _required(
        document,
        "provider_order_id",
        "The Loop return has no provider_order_id (the store's order id).",
    )
    state = (text(document.get("state")) or "").lower()
    label = _loop_label(document)
    refund = _loop_refund(document) if state == "closed" else None
    if state == "closed":
        status = "refunded" if refund is not None else "closed"
    elif state == "open":
        status = LOOP_LABEL_STATUSES.get(label["status"] or "") or (
            "label_issued" if label["url"] else "requested"
        )
    elif state in LOOP_STATES:
        status = LOOP_STATES[state]
    else:
        raise MappingError(
            "unknown_status",
            f"Loop return state {state or None!r} is not one of open, review, closed, "
            "cancelled, expired.",
            field="state",
        )
    if status in ("label_issued", "in_transit", "received"):
        occurred = label["updated_at"]
    elif status == "requested":
        occurred = instant(document.get("created_at"))
    else:
        occurred = instant(document.get("edited_at"))
    raw_lines = document.get("line_items")
    items = [line for line in _list(raw_lines) if isinstance(line, dict)]
    # Loop lists one entry per returned unit.
    units = [dict(line, quantity=1) for line in items] if isinstance(raw_lines, list) else None
    reasons = dict.fromkeys(r for line in items if (r := text(line.get("return_reason"))))
    data: dict[str, Any] = {
        "order_id": order_id,
        "order_number": text(document.get("order_name")),
        "loop_order_id": text(document.get("order_id")),
        "return_id": return_id,
        "return_reference": None,
        "status": status,
        "platform_state": state,
        "lines": _lines(units, options, field="line_items"),
        "label_url": label["url"],
        "reason": "; ".join(reasons) or None,
        "occurred_at": occurred.isoformat() if occurred else None,
        "status_page_url": text(document.get("status_page_url")),
    }
    amount, gateway = (refund[:2], refund[2]) if refund else (None, None)
    return _events(LOOP, data, occurred, request, amount=amount, method=gateway)


def _loop_label(document: dict[str, Any]) -> dict[str, Any]:
    """The return label's status, URL and update time (first of ``labels``, or the
    flat fields older payloads carry)."""
    labels = document.get("labels")
    first = labels[0] if isinstance(labels, list) and labels and isinstance(labels[0], dict) else {}
    status = text(first.get("status")) or text(document.get("label_status"))
    return {
        "status": status.lower() if status else None,
        "url": text(first.get("url")) or text(document.get("label_url")),
        "updated_at": instant(first.get("updated_at") or document.get("label_updated_at")),
    }


def _loop_refund(document: dict[str, Any]) -> tuple[int, str, str | None] | None:
    """(amount in minor units, currency, gateway) refunded to the customer, or None when
    nothing went back to the original payment (an exchange, store credit)."""
    refunds = [r for r in _list(document.get("refunds")) if isinstance(r, dict)]
    if refunds:
        amounts = [(r.get("amount"), text(r.get("currency"))) for r in refunds]
        field, gateway = "refunds", text(refunds[0].get("gateway"))
    elif document.get("refund") not in (None, ""):
        amounts, field, gateway = [(document.get("refund"), None)], "refund", None
    else:
        return None
    currencies = {currency or text(document.get("currency")) for _, currency in amounts}
    currency = currencies.pop() if len(currencies) == 1 else None
    if currency is None:
        raise MappingError(
            "invalid_payload",
            "The Loop refund needs one currency ('currency' or refunds[].currency).",
            field="currency",
        )
    total = sum(_minor_units(value, currency, field, major=True) for value, _ in amounts)
    return (total, currency, gateway) if total > 0 else None


# --- Generic ERP / WMS -------------------------------------------------------------------


def _map_erp(
    document: dict[str, Any], request: WebhookRequest, options: MapOptions
) -> list[dict[str, Any]]:
    return_id = _required(document, "return_id", "The return has no return_id.")
    order_id = _required(document, "order_id", "The return has no order_id.")
    raw_status = (text(document.get("status")) or "").lower()
    status = "canceled" if raw_status == "cancelled" else raw_status
    if status not in RETURN_STATUSES:
        raise MappingError(
            "unknown_status",
            f"Return status {raw_status or None!r} is not one of "
            f"{', '.join(sorted(RETURN_STATUSES))}.",
            field="status",
        )
    outcome = text(document.get("outcome"))
    if outcome is not None and outcome not in OUTCOMES:
        raise MappingError(
            "invalid_payload", "outcome must be 'accepted' or 'rejected'.", field="outcome"
        )
    occurred = instant(document.get("occurred_at"))
    if document.get("occurred_at") is not None and occurred is None:
        raise MappingError(
            "invalid_payload",
            "occurred_at must be an RFC 3339 time with an offset, such as "
            "2026-11-21T10:00:00+01:00.",
            field="occurred_at",
        )
    raw_lines = document.get("lines")
    data: dict[str, Any] = {
        "order_id": order_id,
        "return_id": return_id,
        "return_reference": text(document.get("return_reference")),
        "status": status,
        "outcome": outcome,
        "lines": _lines(raw_lines if isinstance(raw_lines, list) else None, options, "lines"),
        "label_url": text(document.get("label_url")),
        "reason": text(document.get("reason")),
        "occurred_at": occurred.isoformat() if occurred else None,
    }
    amount = None
    if status in REFUND_EVENTS:
        refund = document.get("refund")
        missing = _missing_refund_field(refund)
        if missing is not None:
            if options.strict:
                raise MappingError(
                    "missing_refund",
                    f"Status '{status}' promises a refund, but the return has no {missing}. "
                    'Send the refund with it, such as "refund": {"amount": 1250, "currency": '
                    '"EUR"} (the amount in minor units), or set this source to lenient.',
                    field=missing,
                )
            data = _told_without_refund(data, missing)
        elif isinstance(refund, dict):
            currency = str(refund["currency"]).strip()
            amount = (_minor_units(refund["amount"], currency, "refund", major=False), currency)
    return _events(ERP, data, occurred, request, amount=amount)


def _missing_refund_field(refund: object) -> str | None:
    """The first field a refund event needs that the ERP's ``refund`` lacks, if any."""
    if not isinstance(refund, dict):
        return "refund"
    if refund.get("amount") in (None, ""):
        return "refund.amount"
    if text(refund.get("currency")) is None:
        return "refund.currency"
    return None


def _told_without_refund(data: dict[str, Any], missing: str) -> dict[str, Any]:
    """A refund status with no refund to tell: the customer hears the return step it
    implies (accepted, refund to come; or complete) instead of nothing, and the event
    says what was missing, so neither the customer nor the operator is left guessing."""
    reported = data["status"]
    told = TOLD_WITHOUT_REFUND[reported]
    return {
        **data,
        "status": told,
        "outcome": "accepted" if told == "inspected" else data["outcome"],
        "reported_status": reported,
        "refund_missing": (
            f"'{reported}' promises a refund, but the return has no {missing}: no refund "
            "message was sent; the customer was told the return step instead."
        ),
    }


# --- Shared ------------------------------------------------------------------------------


def _events(
    kind: str,
    data: dict[str, Any],
    occurred: datetime | None,
    request: WebhookRequest,
    *,
    amount: tuple[int, str] | None,
    method: str | None = None,
) -> list[dict[str, Any]]:
    return_id, order_id, status = data["return_id"], data["order_id"], data["status"]
    time = (occurred or request.received_at).isoformat()
    # Named after what the source said, so a step told in place of a refund status is not
    # taken for a redelivery of that step.
    reported = data.get("reported_status") or status
    events = [
        {
            "specversion": "1.0",
            "id": f"return/{return_id}/{reported}",
            "source": f"returns:{kind}",
            "type": "return.status_changed",
            "subject": f"order/{order_id}",
            "time": time,
            "data": data,
        }
    ]
    stage = REFUND_EVENTS.get(status)
    if stage is not None and amount is not None:
        refund: dict[str, Any] = {
            "order_id": order_id,
            "refund_id": f"return:{return_id}",
            "amount": amount[0],
            "currency": amount[1],
            "method": method,
            "return_id": return_id,
        }
        if stage == "authorized":
            refund["authorized_at"] = data["occurred_at"]
        events.append(
            {
                "specversion": "1.0",
                "id": f"refund/return:{return_id}/{stage}",
                "source": f"returns:{kind}",
                "type": f"refund.{stage}",
                "subject": f"order/{order_id}",
                "time": time,
                "data": refund,
            }
        )
    return events


def _required(document: dict[str, Any], field: str, detail: str) -> str:
    value = text(document.get(field))
    if value is None:
        raise MappingError("invalid_payload", detail, field=field)
    return value


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _lines(raw: list[Any] | None, options: MapOptions, field: str) -> list[dict[str, Any]]:
    """Returned lines as ``[{sku, quantity}]``, one entry per SKU in first-seen order.

    Strict: the lines must be there and readable. Lenient: unreadable lines are dropped.
    """
    if raw is None:
        if options.strict:
            raise MappingError(
                "invalid_payload", "The return lists no returned lines.", field=field
            )
        return []
    quantities: Counter[str] = Counter()
    for index, line in enumerate(raw):
        sku = text(line.get("sku")) if isinstance(line, dict) else None
        raw_quantity = line.get("quantity") if isinstance(line, dict) else None
        quantity = (
            raw_quantity
            if isinstance(raw_quantity, int) and not isinstance(raw_quantity, bool)
            else 0
        )
        if sku is None or quantity <= 0:
            if options.strict:
                missing = "sku" if sku is None else "quantity"
                what = "SKU" if sku is None else "positive integer quantity"
                raise MappingError(
                    "invalid_payload",
                    f"Returned line {index} has no {what}.",
                    field=f"{field}[{index}].{missing}",
                )
            continue
        quantities[sku] += quantity
    if options.strict and not quantities:
        raise MappingError("invalid_payload", "The return lists no returned lines.", field=field)
    return [{"sku": sku, "quantity": quantity} for sku, quantity in quantities.items()]


def _minor_units(value: object, currency: str, field: str, *, major: bool) -> int:
    """An amount in minor units of ``currency`` (two decimals for EUR, none for JPY).

    With ``major`` (Loop) any JSON number or decimal string is in major units. Without
    it (ERP) an integer is already in minor units and a decimal string is in major units.
    """
    if currency not in _CURRENCIES:
        raise MappingError(
            "invalid_payload",
            f"The refund currency {currency!r} is not an ISO 4217 code such as EUR.",
            field=f"{field}.currency",
        )
    amount: Decimal | None = None
    if isinstance(value, int) and not isinstance(value, bool) and not major:
        amount = Decimal(value)
    elif isinstance(value, str) or (major and isinstance(value, int | float)):
        try:
            amount = Decimal(str(value).strip()).scaleb(get_currency_precision(currency))
        except InvalidOperation:
            amount = None
    if amount is None or not amount.is_finite() or amount < 0 or amount != amount.to_integral():
        raise MappingError(
            "invalid_payload",
            f"The refund amount {value!r} is not a non-negative amount of {currency}.",
            field=f"{field}.amount",
        )
    return int(amount)


ADAPTER = ReturnsAdapter()
