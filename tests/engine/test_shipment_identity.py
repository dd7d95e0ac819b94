"""One parcel across sources: Shopify fulfillment events name only the fulfillment id,
AfterShip names the tracking number, and the customer hears each step once, in order.

Through the real webhook routes, with the providers' sample payloads.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tidings.db.schema import events, notifications, shipments
from tidings.runtime import Runtime

SAMPLES = Path(__file__).parent.parent / "intake" / "sources" / "samples"
SECRETS = {"shopify": "shp-secret", "aftership": "as-secret"}
ORDER = "5820982911946154"
TRACKING = "6A12345678901"
FULFILLMENT = "4255858131"


def sample(provider: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SAMPLES / provider / f"{name}.json").read_text())
    return data


@pytest.fixture
def webhooks(runtime: Runtime) -> Runtime:
    runtime.webhooks.secrets.update(SECRETS)  # type: ignore[attr-defined]
    return runtime


def post(client: TestClient, source: str, body: bytes, headers: dict[str, str]) -> None:
    response = client.post(
        f"/api/intake/{source}",
        content=body,
        headers={"Content-Type": "application/json", "Authorization": "", **headers},
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1, response.json()


def shopify(client: TestClient, topic: str, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    mac = base64.b64encode(hmac.new(SECRETS["shopify"].encode(), body, hashlib.sha256).digest())
    post(
        client,
        "shopify",
        body,
        {
            "X-Shopify-Topic": topic,
            "X-Shopify-Shop-Domain": "lumen-atelier.myshopify.com",
            "X-Shopify-Hmac-Sha256": mac.decode(),
            "X-Shopify-Webhook-Id": str(uuid.uuid4()),
            "X-Shopify-Event-Id": str(uuid.uuid4()),
            "X-Shopify-Triggered-At": "2026-11-22T09:00:00Z",
        },
    )


def fulfillment_event(client: TestClient, status: str) -> None:
    """A Shopify fulfillment event: the fulfillment id, never the tracking number."""
    payload = sample("shopify", "fulfillment_events_create")
    payload["status"] = status
    assert "tracking_number" not in payload
    shopify(client, "fulfillment_events/create", payload)


def aftership(client: TestClient, tag: str, subtag: str, *, order: bool = True) -> None:
    """An AfterShip scan: the tracking number and AfterShip's own tracking id."""
    payload = sample("aftership", "tracking_update_in_transit")
    payload["msg"].update(tag=tag, subtag=subtag, order_id=ORDER if order else None)
    body = json.dumps(payload).encode()
    mac = base64.b64encode(hmac.new(SECRETS["aftership"].encode(), body, hashlib.sha256).digest())
    post(client, "aftership", body, {"aftership-hmac-sha256": mac.decode()})


def shipment_emails(runtime: Runtime) -> list[tuple[str, str, str | None]]:
    with runtime.engine.connect() as conn:
        rows = conn.execute(
            select(notifications.c.kind, notifications.c.status, notifications.c.reason)
            .where(notifications.c.channel == "email", notifications.c.kind.like("shipment_%"))
            .order_by(notifications.c.created_at, notifications.c.id)
        ).all()
    return [(row.kind, row.status, row.reason) for row in rows]


def parcels(runtime: Runtime) -> list[tuple[str, str | None, str, str | None]]:
    with runtime.engine.connect() as conn:
        rows = conn.execute(select(shipments).order_by(shipments.c.key)).mappings().all()
    return [(r["key"], r["shipment_id"], r["status"], r["order_id"]) for r in rows]


def placed_and_shipped(client: TestClient) -> None:
    shopify(client, "orders/create", sample("shopify", "orders_create"))
    shopify(client, "fulfillments/create", sample("shopify", "fulfillments_create"))


def test_a_late_fulfillment_event_after_delivery_is_recorded_and_suppressed(
    client: TestClient, webhooks: Runtime
) -> None:
    placed_and_shipped(client)
    aftership(client, "Delivered", "Delivered_001")
    fulfillment_event(client, "out_for_delivery")

    assert shipment_emails(webhooks) == [
        ("shipment_shipped", "queued", None),
        ("shipment_delivered", "queued", None),
        (
            "shipment_out_for_delivery",
            "suppressed",
            "'out_for_delivery' is older than 'delivered', already reached",
        ),
    ]
    with webhooks.engine.connect() as conn:
        late = conn.execute(
            select(events.c.order_id).where(
                events.c.ce_id == f"shipment/{FULFILLMENT}/out_for_delivery"
            )
        ).scalar_one()
    assert late == ORDER
    # Both sources' names for the parcel live on one row.
    assert parcels(webhooks) == [(TRACKING, FULFILLMENT, "delivered", ORDER)]


@pytest.mark.parametrize("shopify_first", [False, True], ids=["aftership-first", "shopify-first"])
def test_delivered_told_by_two_sources_is_one_message(
    client: TestClient, webhooks: Runtime, shopify_first: bool
) -> None:
    placed_and_shipped(client)
    if shopify_first:
        fulfillment_event(client, "delivered")
        aftership(client, "Delivered", "Delivered_001", order=False)
    else:
        aftership(client, "Delivered", "Delivered_001", order=False)
        fulfillment_event(client, "delivered")

    delivered = [e for e in shipment_emails(webhooks) if e[0] == "shipment_delivered"]
    assert [status for _, status, _ in delivered] == ["queued", "suppressed"]
    assert delivered[1][2] == "'delivered' was already reached"
    assert parcels(webhooks) == [(TRACKING, FULFILLMENT, "delivered", ORDER)]


def test_a_parcel_first_known_by_its_fulfillment_id_joins_its_tracking_number(
    client: TestClient, webhooks: Runtime
) -> None:
    shopify(client, "orders/create", sample("shopify", "orders_create"))
    fulfillment_event(client, "out_for_delivery")  # before Shopify tells the tracking number
    assert parcels(webhooks) == [(FULFILLMENT, FULFILLMENT, "out_for_delivery", ORDER)]

    update = sample("shopify", "fulfillments_update")
    update["shipment_status"] = "in_transit"  # late: a lower step, with both names
    shopify(client, "fulfillments/update", update)
    assert parcels(webhooks) == [(TRACKING, FULFILLMENT, "out_for_delivery", ORDER)]

    aftership(client, "Delivered", "Delivered_001", order=False)
    fulfillment_event(client, "delivered")
    assert [(kind, status) for kind, status, _ in shipment_emails(webhooks)] == [
        ("shipment_out_for_delivery", "queued"),
        ("shipment_in_transit", "suppressed"),
        ("shipment_delivered", "queued"),
        ("shipment_delivered", "suppressed"),
    ]
    assert parcels(webhooks) == [(TRACKING, FULFILLMENT, "delivered", ORDER)]


def test_the_fulfillment_id_is_found_when_aftership_named_the_parcel_first(
    client: TestClient, webhooks: Runtime
) -> None:
    shopify(client, "orders/create", sample("shopify", "orders_create"))
    aftership(client, "InfoReceived", "InfoReceived_001")  # keeps AfterShip's own id
    shopify(client, "fulfillments/create", sample("shopify", "fulfillments_create"))
    aftership(client, "Delivered", "Delivered_001")
    fulfillment_event(client, "out_for_delivery")

    assert [(kind, status) for kind, status, _ in shipment_emails(webhooks)] == [
        ("shipment_shipped", "queued"),
        ("shipment_shipped", "suppressed"),
        ("shipment_delivered", "queued"),
        ("shipment_out_for_delivery", "suppressed"),
    ]
    # From now on the row answers to the id Shopify uses on its own.
    assert parcels(webhooks) == [(TRACKING, FULFILLMENT, "delivered", ORDER)]


def test_a_held_in_transit_from_shopify_is_superseded_by_a_newer_aftership_scan(
    client: TestClient, webhooks: Runtime
) -> None:
    placed_and_shipped(client)
    fulfillment_event(client, "in_transit")
    aftership(client, "OutForDelivery", "OutForDelivery_001")
    assert [(kind, status) for kind, status, _ in shipment_emails(webhooks)] == [
        ("shipment_shipped", "queued"),
        ("shipment_in_transit", "superseded"),
        ("shipment_out_for_delivery", "queued"),
    ]
