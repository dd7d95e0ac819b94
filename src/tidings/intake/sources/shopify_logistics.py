"""Shopify fulfillments, fulfillment events, inventory levels and returns to canonical data.

- Fulfillments carry ``shipment_status`` (null until a carrier scan); fulfillment events
  carry ``status`` from the same vocabulary, and no tracking number.
- ``inventory_levels/update`` names an ``inventory_item_id``, not a SKU.
- Return payloads differ per topic: ``returns/request`` and ``returns/approve`` carry
  ``order.id`` and the lines, ``returns/close|reopen|cancel`` carry only ``order_id``,
  and ``returns/decline`` names no order at all. None of them carries a timestamp, and
  return lines name the order's line item, not its SKU.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tidings.intake.sources.base import MappingError
from tidings.intake.sources.shopify_mapping import (
    ident,
    invalid,
    obj,
    opt_ident,
    opt_obj,
    opt_timestamp,
    positive_int,
    text,
)

# Shopify shipment/fulfillment-event statuses -> canonical shipment taxonomy.
SHIPMENT_STATUS = {
    "label_printed": "info_received",
    "label_purchased": "info_received",
    "confirmed": "info_received",
    "carrier_picked_up": "in_transit",
    "in_transit": "in_transit",
    "delayed": "in_transit",
    "out_for_delivery": "out_for_delivery",
    "attempted_delivery": "attempt_failed",
    "ready_for_pickup": "available_for_pickup",
    "ready_for_recipient_pickup": "available_for_pickup",
    "picked_up": "delivered",
    "delivered": "delivered",
    "failure": "exception",
    "buyer_action_required": "exception",
    "returning_to_sender": "return_to_sender",
}


# -- shipments ----------------------------------------------------------------------


def canonical_shipment_status(value: Any, field: str) -> str:
    status = SHIPMENT_STATUS.get(value) if isinstance(value, str) else None
    if status is None:
        raise MappingError(
            "unknown_status", f"{field}: {value!r} is not a known shipment status", field=field
        )
    return status


def fulfillment(f: Mapping[str, Any]) -> dict[str, Any]:
    state, shipment_status = f.get("status"), f.get("shipment_status")
    carrier_status: str | None
    if state == "cancelled":
        status, carrier_status = "canceled", "cancelled"
    elif state in ("error", "failure"):
        status, carrier_status = "exception", str(state)
    elif shipment_status:
        status = canonical_shipment_status(shipment_status, "shipment_status")
        carrier_status = str(shipment_status)
    else:
        # Shipped, but the carrier has not scanned it yet. A fulfillment a service
        # has not accepted (pending/open) has not left the warehouse.
        status = "pending" if state in ("pending", "open") else "info_received"
        carrier_status = str(state) if state else None
    numbers = [n for n in f.get("tracking_numbers") or [] if isinstance(n, str) and n.strip()]
    urls = [u for u in f.get("tracking_urls") or [] if isinstance(u, str) and u.strip()]
    return {
        "order_id": ident(f.get("order_id"), "order_id"),
        "shipment_id": ident(f.get("id"), "id"),
        "carrier": text(f.get("tracking_company")),
        "tracking_number": text(numbers[0] if numbers else f.get("tracking_number")),
        "tracking_url": text(urls[0] if urls else f.get("tracking_url")),
        "status": status,
        "carrier_status": carrier_status,
        "occurred_at": opt_timestamp(f.get("updated_at") or f.get("created_at"), "updated_at"),
        "estimated_delivery": None,
    }


def fulfillment_event(e: Mapping[str, Any]) -> dict[str, Any]:
    eta = opt_timestamp(e.get("estimated_delivery_at"), "estimated_delivery_at")
    return {
        "order_id": ident(e.get("order_id"), "order_id"),
        "shipment_id": ident(e.get("fulfillment_id"), "fulfillment_id"),
        "status": canonical_shipment_status(e.get("status"), "status"),
        "carrier_status": str(e.get("status")),
        "message": text(e.get("message")),
        "occurred_at": opt_timestamp(e.get("happened_at") or e.get("created_at"), "happened_at"),
        "estimated_delivery": eta[:10] if eta else None,
    }


# -- inventory ----------------------------------------------------------------------


def inventory_level(level: Mapping[str, Any]) -> dict[str, Any]:
    # The payload is inventory_item_id, location_id, available, updated_at and
    # admin_graphql_api_id (https://shopify.dev/docs/api/webhooks, inventory_levels/update);
    # the SKU lives on the InventoryItem, so the item id stands in for it.
    item = ident(level.get("inventory_item_id"), "inventory_item_id")
    available = level.get("available")
    if not isinstance(available, int) or isinstance(available, bool):
        raise invalid("available", "must be an integer")
    return {
        "sku": f"inventory_item:{item}",
        "inventory_item_id": item,
        "location": ident(level.get("location_id"), "location_id"),
        "available": available,
    }


# -- returns ------------------------------------------------------------------------

RETURN_TOPICS = {
    "returns/request": "requested",
    "returns/approve": "approved",
    "returns/decline": "declined",
    "returns/close": "closed",
    "returns/reopen": "approved",  # open again: back in progress
    "returns/cancel": "canceled",
}


def return_order_id(payload: Mapping[str, Any]) -> str | None:
    return opt_ident(opt_obj(payload.get("order")).get("id")) or opt_ident(payload.get("order_id"))


def return_status(payload: Mapping[str, Any], topic: str) -> dict[str, Any]:
    lines = []
    for n, raw in enumerate(payload.get("return_line_items") or []):
        item = obj(raw, f"return_line_items[{n}]")
        line_item = opt_obj(opt_obj(item.get("fulfillment_line_item")).get("line_item"))
        sku = text(line_item.get("sku"))
        if sku is None:
            sku = f"line_item:{ident(line_item.get('id'), f'return_line_items[{n}].line_item.id')}"
        lines.append(
            {
                "sku": sku,
                "quantity": positive_int(item.get("quantity"), f"return_line_items[{n}].quantity"),
                "reason": text(item.get("return_reason")),
                "note": text(item.get("return_reason_note")) or text(item.get("customer_note")),
            }
        )
    decline = opt_obj(payload.get("decline"))
    return {
        "return_id": ident(payload.get("id"), "id"),
        "return_reference": text(payload.get("name")),
        "status": RETURN_TOPICS[topic],
        "shopify_status": text(payload.get("status")),
        "lines": lines,
        "label_url": None,
        "reason": text(decline.get("note")) or text(decline.get("reason")),
        "decline_reason": text(decline.get("reason")),
    }
