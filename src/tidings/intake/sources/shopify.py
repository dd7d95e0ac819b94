"""Shopify webhooks (REST payloads): verify the HMAC, map the topics Tidings uses.

Verification: ``X-Shopify-Hmac-Sha256`` is the base64 HMAC-SHA256 of the raw body, keyed
with the app's client secret. The topic and the shop come in ``X-Shopify-Topic`` and
``X-Shopify-Shop-Domain``; ``X-Shopify-Event-Id`` is the same on every delivery of one
event, ``X-Shopify-Webhook-Id`` and ``X-Shopify-Triggered-At`` describe the delivery.

| topic                                        | canonical event                         |
| -------------------------------------------- | --------------------------------------- |
| orders/create                                | order.placed                            |
| orders/cancelled                             | order.canceled                          |
| refunds/create                               | refund.authorized                       |
| fulfillments/create, fulfillments/update     | shipment.status_changed                 |
| fulfillment_events/create                    | shipment.status_changed                 |
| inventory_levels/update                      | inventory.level_changed                 |
| returns/request|approve|decline|close|reopen|cancel | return.status_changed            |

Every other topic is answered 200 with nothing stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tidings.engine.returns import placeholder_order_id
from tidings.intake.sources import shopify_logistics as lg
from tidings.intake.sources import shopify_mapping as m
from tidings.intake.sources.base import (
    MapOptions,
    MappingError,
    SignatureError,
    SourceAdapter,
    WebhookRequest,
)


@dataclass(frozen=True, slots=True)
class _Delivery:
    topic: str
    shop: str
    payload: Mapping[str, Any]
    request: WebhookRequest
    options: MapOptions

    @property
    def source(self) -> str:
        return f"shopify:{self.shop}"

    def fallback_time(self) -> str:
        """When the payload has no timestamp: when Shopify says it fired, else arrival."""
        triggered = self.request.header("x-shopify-triggered-at")
        if triggered:
            try:
                return m.timestamp(triggered.replace("Z", "+00:00"), "X-Shopify-Triggered-At")
            except MappingError:
                pass
        return self.request.received_at.isoformat()

    def event(
        self, ce_id: str, event_type: str, time: str | None, data: dict[str, Any]
    ) -> dict[str, Any]:
        order_id = data.get("order_id")
        return {
            "specversion": "1.0",
            "id": ce_id,
            "source": self.source,
            "type": event_type,
            "subject": f"order/{order_id}" if order_id else None,
            "time": time or self.fallback_time(),
            "data": data,
        }


def _orders_create(d: _Delivery) -> list[dict[str, Any]]:
    data = m.order_placed(d.payload, d.options)
    time = m.opt_timestamp(d.payload.get("created_at"), "created_at")
    return [d.event(f"order/{data['order_id']}/placed", "order.placed", time, data)]


def _orders_cancelled(d: _Delivery) -> list[dict[str, Any]]:
    data = m.order_canceled(d.payload)
    at = d.payload.get("cancelled_at") or d.payload.get("updated_at")
    time = m.opt_timestamp(at, "cancelled_at")
    return [d.event(f"order/{data['order_id']}/canceled", "order.canceled", time, data)]


def _refunds_create(d: _Delivery) -> list[dict[str, Any]]:
    data = m.refund_authorized(d.payload)
    ce_id = f"refund/{data['refund_id']}/authorized"
    return [d.event(ce_id, "refund.authorized", data["authorized_at"], data)]


def _shipment(data: dict[str, Any], d: _Delivery) -> list[dict[str, Any]]:
    # One fact per parcel and status, whichever topic told it first.
    ce_id = f"shipment/{data['shipment_id']}/{data['status']}"
    return [d.event(ce_id, "shipment.status_changed", data["occurred_at"], data)]


def _fulfillments(d: _Delivery) -> list[dict[str, Any]]:
    return _shipment(lg.fulfillment(d.payload), d)


def _fulfillment_events(d: _Delivery) -> list[dict[str, Any]]:
    return _shipment(lg.fulfillment_event(d.payload), d)


def _inventory_levels(d: _Delivery) -> list[dict[str, Any]]:
    data = lg.inventory_level(d.payload)
    time = m.opt_timestamp(d.payload.get("updated_at"), "updated_at")
    moment = time or d.request.header("x-shopify-event-id")
    if not moment:
        raise m.invalid("updated_at", "is required to tell one stock change from another")
    item, location = data["inventory_item_id"], data["location"]
    ce_id = f"inventory/{item}/{location}/{moment}/{data['available']}"
    return [d.event(ce_id, "inventory.level_changed", time, data)]


def _returns(d: _Delivery) -> list[dict[str, Any]]:
    data = lg.return_status(d.payload, d.topic)
    return_id = data["return_id"]
    order_id = lg.return_order_id(d.payload)
    # returns/decline names no order at all, in every integration, so even a strict shop
    # takes it: the engine finds the order an earlier event of the return named.
    known = order_id is not None
    time = d.fallback_time()
    data = {"order_id": order_id or placeholder_order_id(return_id), **data, "occurred_at": time}
    ce_id = f"return/{return_id}/{data['status']}"
    if d.topic == "returns/reopen":
        # A reopen is a new fact each time; the event id is stable across redeliveries.
        event_id = d.request.header("x-shopify-event-id")
        ce_id = f"return/{return_id}/reopened" + (f"/{event_id}" if event_id else "")
    event = d.event(ce_id, "return.status_changed", time, data)
    if not known:
        event["subject"] = f"return/{return_id}"
    return [event]


_TOPICS: dict[str, Callable[[_Delivery], list[dict[str, Any]]]] = {
    "orders/create": _orders_create,
    "orders/cancelled": _orders_cancelled,
    "refunds/create": _refunds_create,
    "fulfillments/create": _fulfillments,
    "fulfillments/update": _fulfillments,
    "fulfillment_events/create": _fulfillment_events,
    "inventory_levels/update": _inventory_levels,
    **{topic: _returns for topic in lg.RETURN_TOPICS},
}


class ShopifyAdapter(SourceAdapter):
    name = "shopify"

    def verify(self, request: WebhookRequest, secret: str) -> None:
        received = request.header("x-shopify-hmac-sha256")
        if not received or not received.strip():
            raise SignatureError("The request has no X-Shopify-Hmac-Sha256 header.")
        try:
            claimed = base64.b64decode(received.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise SignatureError("X-Shopify-Hmac-Sha256 is not base64.") from None
        expected = hmac.new(secret.encode(), request.body, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, claimed):
            raise SignatureError(
                "X-Shopify-Hmac-Sha256 does not match the body: the body was altered or the "
                "app's client secret is not the one configured."
            )

    def account(self, request: WebhookRequest) -> str | None:
        shop = request.header("x-shopify-shop-domain")
        return shop.strip().lower() if shop and shop.strip() else None

    def map(self, request: WebhookRequest, options: MapOptions) -> list[dict[str, Any]]:
        topic = (request.header("x-shopify-topic") or "").strip()
        if not topic:
            raise MappingError(
                "missing_header",
                "The request has no X-Shopify-Topic header.",
                field="X-Shopify-Topic",
            )
        handler = _TOPICS.get(topic)
        if handler is None:
            return []
        shop = self.account(request)
        if shop is None:
            raise MappingError(
                "missing_header",
                "The request has no X-Shopify-Shop-Domain header.",
                field="X-Shopify-Shop-Domain",
            )
        try:
            payload = json.loads(request.body, parse_float=Decimal)
        except ValueError as exc:
            raise MappingError("invalid_json", f"The body is not valid JSON: {exc}.") from exc
        if not isinstance(payload, Mapping):
            raise MappingError("invalid_payload", f"A {topic} payload must be a JSON object.")
        return handler(_Delivery(topic, shop, payload, request, options))


ADAPTER = ShopifyAdapter()
