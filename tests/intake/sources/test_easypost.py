"""EasyPost tracker webhooks through ``POST /api/intake/easypost``."""

from __future__ import annotations

import hashlib
import hmac
import json
import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import RowMapping, select

from tidings.db.schema import delivery_jobs, events, notifications, rejects
from tidings.intake.sources.base import MapOptions, WebhookRequest
from tidings.intake.sources.easypost import ADAPTER
from tidings.intake.webhooks import Strictness
from tidings.runtime import Runtime

SAMPLES = Path(__file__).parent / "samples" / "easypost"
SECRET = "easypost-secret-91b7"
ROUTE = "/api/intake/easypost"


def sample(name: str) -> bytes:
    return (SAMPLES / f"{name}.json").read_bytes()


def edited(name: str, **changes: Any) -> bytes:
    document = json.loads(sample(name))
    document["result"].update(changes)
    return json.dumps(document).encode()


def sign(body: bytes, secret: str = SECRET) -> str:
    key = unicodedata.normalize("NFKD", secret).encode()
    return "hmac-sha256-hex=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def post(
    client: TestClient, body: bytes, signature: str | None = None
) -> Any:  # starlette may answer with httpx or httpx2 responses
    headers = {"Content-Type": "application/json", "Authorization": ""}
    headers["X-Hmac-Signature"] = sign(body) if signature is None else signature
    return client.post(ROUTE, content=body, headers=headers)


def stored(runtime: Runtime) -> list[RowMapping]:
    with runtime.engine.connect() as conn:
        return list(conn.execute(select(events).order_by(events.c.ce_id)).mappings())


def kept(runtime: Runtime) -> list[RowMapping]:
    with runtime.engine.connect() as conn:
        return list(conn.execute(select(rejects)).mappings())


def subset(data: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    return {key: data.get(key, "<missing>") for key in expected}


def set_secret(runtime: Runtime, secret: str) -> None:
    cast(dict[str, str | None], runtime.webhooks.secrets)["easypost"] = secret


@pytest.fixture
def configured(runtime: Runtime) -> Runtime:
    set_secret(runtime, SECRET)
    return runtime


def test_signed_tracker_update_becomes_a_canonical_shipment_event(
    client: TestClient, configured: Runtime
) -> None:
    response = post(client, sample("tracker_updated_in_transit"))
    assert response.status_code == 200, response.text
    assert (response.json()["accepted"], response.json()["rejected"]) == (1, 0)

    [row] = stored(configured)
    assert (row.source, row.ce_id, row.type, row.subject, row.order_id) == (
        "easypost:test",
        "shipment/EZ4000000004/in_transit",
        "shipment.status_changed",
        "shipment/EZ4000000004",
        None,
    )
    expected = {
        "order_id": None,  # EasyPost trackers name no order
        "shipment_id": "trk_6c0e8f6d2b3a4f1e9d1c6f1e2b0a7c51",
        "carrier": "USPS",
        "tracking_number": "EZ4000000004",
        "tracking_url": "https://track.easypost.com/djE6dHJrXzZjMGU4ZjZk",
        "status": "in_transit",
        "carrier_status": "in_transit:arrived_at_facility",
        "status_message": "Arrived at USPS Regional Origin Facility",
        "occurred_at": "2026-11-21T14:48:00Z",
        "estimated_delivery": "2026-11-24",
        "easypost_shipment_id": "shp_0a7c51e8f6d2b3a4f1e9d1c6f1e2b0",
    }
    assert subset(row.data, expected) == expected
    assert row.time == datetime(2026, 11, 21, 14, 48, tzinfo=UTC)


def test_mapper_output_leaves_the_order_to_the_engine() -> None:
    request = WebhookRequest(
        headers={}, body=sample("tracker_updated_in_transit"), received_at=datetime.now(UTC)
    )
    [event] = ADAPTER.map(request, MapOptions(strict=True))
    assert "order_id" not in event["data"]
    assert event["data"]["tracking_number"] == "EZ4000000004"


def test_redelivery_and_a_second_scan_with_the_same_status_store_once(
    client: TestClient, configured: Runtime
) -> None:
    body = sample("tracker_updated_in_transit")
    post(client, body)
    assert post(client, body).json()["duplicate"] == 1
    departed = post(client, sample("tracker_updated_in_transit_departed"))
    assert (departed.json()["accepted"], departed.json()["duplicate"]) == (0, 1)
    [row] = stored(configured)
    assert row.data["carrier_status"] == "in_transit:arrived_at_facility"


def test_production_delivery(client: TestClient, configured: Runtime) -> None:
    response = post(client, sample("tracker_updated_delivered_production"))
    assert response.json()["accepted"] == 1
    [row] = stored(configured)
    assert (row.source, row.ce_id) == (
        "easypost:production",
        "shipment/1Z999AA10123456784/delivered",
    )
    expected = {
        "status": "delivered",
        "carrier_status": "delivered:arrived_at_destination",
        "carrier": "UPS",
        "occurred_at": "2026-11-24T11:41:00-05:00",
        "estimated_delivery": None,
        "easypost_shipment_id": None,
    }
    assert subset(row.data, expected) == expected


@pytest.mark.parametrize(
    ("status", "canonical"),
    [
        ("pre_transit", "info_received"),
        ("return_to_sender", "return_to_sender"),
        ("failure", "exception"),
        ("cancelled", "canceled"),
        ("unknown", "pending"),
    ],
)
def test_statuses_through_the_route(
    client: TestClient, configured: Runtime, status: str, canonical: str
) -> None:
    body = edited("tracker_updated_in_transit", status=status, status_detail=None)
    assert post(client, body).json()["accepted"] == 1
    [row] = stored(configured)
    assert row.ce_id == f"shipment/EZ4000000004/{canonical}"
    assert (row.data["status"], row.data["carrier_status"]) == (canonical, status)


def test_the_secret_is_nfkd_normalized(client: TestClient, runtime: Runtime) -> None:
    composed = "s\u00e9cret-\ufb01le"  # é as one code point, and the "fi" ligature
    set_secret(runtime, composed)
    body = sample("tracker_updated_in_transit")
    decomposed_key = b"se\xcc\x81cret-file"  # NFKD: e + combining acute, and plain "fi"
    signature = "hmac-sha256-hex=" + hmac.new(decomposed_key, body, hashlib.sha256).hexdigest()
    assert post(client, body, signature=signature).json()["accepted"] == 1

    raw_key_signature = hmac.new(composed.encode(), body, hashlib.sha256).hexdigest()
    refused = post(client, body, signature="hmac-sha256-hex=" + raw_key_signature)
    assert refused.status_code == 401


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(lambda body: sign(body + b"\n"), id="tampered-body"),
        pytest.param(lambda body: sign(body, "not-the-secret"), id="wrong-secret"),
        pytest.param(lambda body: sign(body).removeprefix("hmac-sha256-hex="), id="no-prefix"),
        pytest.param(lambda body: "", id="missing"),
    ],
)
def test_bad_signature_is_401_and_the_raw_body_is_kept(
    client: TestClient, configured: Runtime, signature: Any
) -> None:
    body = sample("tracker_updated_in_transit")
    response = post(client, body, signature=signature(body))
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "invalid_signature"
    [reject] = kept(configured)
    assert (reject.channel, reject.code) == ("easypost", "invalid_signature")
    assert reject.payload == body.decode()
    assert stored(configured) == []


def test_without_a_secret_webhooks_are_refused_and_kept(
    client: TestClient, runtime: Runtime
) -> None:
    response = post(client, sample("tracker_updated_in_transit"))
    assert response.status_code == 503
    assert response.json()["code"] == "source_not_configured"
    assert [r.code for r in kept(runtime)] == ["source_not_configured"]


def test_unknown_status_is_unmappable_and_kept(client: TestClient, configured: Runtime) -> None:
    body = edited("tracker_updated_in_transit", status="lost_in_space")
    response = post(client, body)
    assert response.status_code == 422
    assert (response.json()["code"], response.json()["field"]) == (
        "unknown_status",
        "result.status",
    )
    [reject] = kept(configured)
    assert (reject.channel, reject.code, reject.payload) == (
        "easypost",
        "unknown_status",
        body.decode(),
    )
    assert stored(configured) == []


def test_a_tracker_without_tracking_code_is_refused(
    client: TestClient, configured: Runtime
) -> None:
    response = post(client, edited("tracker_updated_in_transit", tracking_code=None))
    assert response.status_code == 422
    assert response.json()["field"] == "result.tracking_code"


def test_strictness_does_not_require_an_order_easypost_never_sends(
    client: TestClient, configured: Runtime
) -> None:
    configured.webhooks.strictness = Strictness({"easypost": "strict"})
    assert post(client, sample("tracker_updated_in_transit")).json()["accepted"] == 1


def test_other_events_are_answered_and_not_stored(client: TestClient, configured: Runtime) -> None:
    response = post(client, sample("batch_created"))
    assert response.status_code == 200
    assert response.json()["results"] == []
    assert stored(configured) == []
    assert kept(configured) == []


def test_out_for_delivery_for_a_known_parcel_queues_the_customer_message(
    client: TestClient, configured: Runtime
) -> None:
    # The store placed the order and shipped it under the tracking number EasyPost tracks.
    cloudevents = {"Content-Type": "application/cloudevents+json"}
    customer = {"id": "cus_camille", "email": "camille@example.fr", "locale": "fr"}
    placed = {
        "specversion": "1.0",
        "id": "order-9001",
        "source": "shop",
        "type": "order.placed",
        "data": {
            "order_id": "9001",
            "order_number": "#9001",
            "currency": "EUR",
            "total": 8900,
            "customer": customer,
        },
    }
    shipped = {
        "specversion": "1.0",
        "id": "shipped-9001",
        "source": "shop",
        "type": "shipment.status_changed",
        "data": {
            "order_id": "9001",
            "shipment_id": "ful_1",
            "tracking_number": "EZ4000000004",
            "carrier": "USPS",
            "status": "info_received",
        },
    }
    for event in (placed, shipped):
        response = client.post("/api/events", json=event, headers=cloudevents)
        assert response.status_code == 202, response.text

    body = edited("tracker_updated_in_transit", status="out_for_delivery", status_detail=None)
    response = post(client, body)
    assert response.status_code == 200, response.text
    assert (response.json()["accepted"], response.json()["rejected"]) == (1, 0)

    with configured.engine.connect() as conn:
        [event] = conn.execute(select(events).where(events.c.source == "easypost:test")).mappings()
        rows = (
            conn.execute(select(notifications).where(notifications.c.event_id == event.id))
            .mappings()
            .all()
        )
        jobs = conn.execute(select(delivery_jobs.c.notification_id, delivery_jobs.c.status)).all()
    # Found through its tracking number, the parcel's order and customer hear of it.
    assert event.order_id == "9001"
    assert sorted((r.kind, r.channel, r.status, r.customer_id, r.order_id) for r in rows) == [
        ("shipment_out_for_delivery", "email", "queued", "cus_camille", "9001"),
        ("shipment_out_for_delivery", "in_app", "queued", "cus_camille", "9001"),
    ]
    assert {r.recipient for r in rows if r.channel == "email"} == {"camille@example.fr"}
    queued = {notification_id for notification_id, status in jobs if status == "queued"}
    assert {r.id for r in rows} <= queued
