"""AfterShip Tracking webhooks through ``POST /api/intake/aftership``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import RowMapping, select

from tidings.db.schema import events, rejects
from tidings.intake.sources.aftership import ADAPTER
from tidings.intake.sources.base import MapOptions, WebhookRequest
from tidings.intake.webhooks import Strictness
from tidings.runtime import Runtime

SAMPLES = Path(__file__).parent / "samples" / "aftership"
SECRET = "aftership-secret-4c1d9e"
ROUTE = "/api/intake/aftership"


def sample(name: str) -> bytes:
    return (SAMPLES / f"{name}.json").read_bytes()


def edited(name: str, **changes: Any) -> bytes:
    document = json.loads(sample(name))
    document["msg"].update(changes)
    return json.dumps(document).encode()


def sign(body: bytes, secret: str = SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def post(
    client: TestClient, body: bytes, signature: str | None = None
) -> Any:  # starlette may answer with httpx or httpx2 responses
    headers = {"Content-Type": "application/json", "Authorization": ""}
    headers["aftership-hmac-sha256"] = sign(body) if signature is None else signature
    return client.post(ROUTE, content=body, headers=headers)


def stored(runtime: Runtime) -> list[RowMapping]:
    with runtime.engine.connect() as conn:
        return list(conn.execute(select(events).order_by(events.c.ce_id)).mappings())


def kept(runtime: Runtime) -> list[RowMapping]:
    with runtime.engine.connect() as conn:
        return list(conn.execute(select(rejects)).mappings())


def subset(data: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    return {key: data.get(key, "<missing>") for key in expected}


@pytest.fixture
def configured(runtime: Runtime) -> Runtime:
    cast(dict[str, str | None], runtime.webhooks.secrets)["aftership"] = SECRET
    return runtime


def test_signed_update_becomes_a_canonical_shipment_event(
    client: TestClient, configured: Runtime
) -> None:
    response = post(client, sample("tracking_update_in_transit"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (1, 0, 0)
    assert body["results"][0]["id"] == "shipment/6A12345678901/in_transit"
    assert body["results"][0]["source"] == "aftership:default"

    [row] = stored(configured)
    assert (row.source, row.ce_id, row.type, row.subject, row.order_id) == (
        "aftership:default",
        "shipment/6A12345678901/in_transit",
        "shipment.status_changed",
        "order/1042",
        "1042",
    )
    expected = {
        "order_id": "1042",
        "order_number": "#1042",
        "shipment_id": "grhrexm6t3hiwkjwq37jd003",
        "carrier": "colissimo",
        "tracking_number": "6A12345678901",
        "tracking_url": "https://shop.aftership.com/tracking/6A12345678901",
        "status": "in_transit",
        "carrier_status": "InTransit_002",
        "status_message": "Acceptance scan",
        # The latest checkpoint, 14:02 in Lyon.
        "occurred_at": "2026-11-21T14:02:00+01:00",
        "estimated_delivery": "2026-11-24",
    }
    assert subset(row.data, expected) == expected
    assert row.time == datetime(2026, 11, 21, 13, 2, tzinfo=UTC)
    assert kept(configured) == []


def test_redelivery_stores_nothing_new(client: TestClient, configured: Runtime) -> None:
    body = sample("tracking_update_in_transit")
    assert post(client, body).json()["accepted"] == 1
    again = post(client, body)
    assert again.status_code == 200
    assert (again.json()["accepted"], again.json()["duplicate"]) == (0, 1)
    assert len(stored(configured)) == 1


def test_a_new_checkpoint_with_the_same_status_is_the_same_event(
    client: TestClient, configured: Runtime
) -> None:
    post(client, sample("tracking_update_in_transit"))
    departure = post(client, sample("tracking_update_in_transit_departure"))
    assert departure.json()["duplicate"] == 1
    [row] = stored(configured)
    assert row.data["carrier_status"] == "InTransit_002"  # the first report is kept

    delivered = edited("tracking_update_in_transit_departure", tag="Delivered", subtag="")
    assert post(client, delivered).json()["accepted"] == 1
    assert [r.ce_id for r in stored(configured)] == [
        "shipment/6A12345678901/delivered",
        "shipment/6A12345678901/in_transit",
    ]


def test_returned_to_sender_without_order_id_is_accepted_when_lenient(
    client: TestClient, configured: Runtime
) -> None:
    response = post(client, sample("tracking_update_returned_to_sender"))
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1
    [row] = stored(configured)
    assert row.ce_id == "shipment/9361289676091361892011/return_to_sender"
    assert row.subject == "shipment/9361289676091361892011"
    expected = {
        "order_id": None,
        "shipment_id": "k2m4rfbg8sl2nkjwq37jd118",
        "carrier": "usps",
        "tracking_number": "9361289676091361892011",
        "tracking_url": (
            "https://tools.usps.com/go/TrackConfirmAction?tLabels=9361289676091361892011"
        ),
        "status": "return_to_sender",
        "carrier_status": "Exception_011",
        # Checkpoint times without an offset name no instant: AfterShip's update time.
        "occurred_at": "2026-11-25T16:20:45Z",
        "estimated_delivery": "2026-11-23",
    }
    assert subset(row.data, expected) == expected


def test_strict_mode_requires_the_order_id(client: TestClient, configured: Runtime) -> None:
    configured.webhooks.strictness = Strictness({"aftership": "strict"})
    body = sample("tracking_update_returned_to_sender")
    response = post(client, body)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert (problem["code"], problem["field"]) == ("invalid_payload", "msg.order_id")
    [reject] = kept(configured)
    assert (reject.channel, reject.code, reject.field) == (
        "aftership",
        "invalid_payload",
        "msg.order_id",
    )
    assert reject.payload == body.decode()
    assert problem["reject_id"] == reject.id

    # A complete tracking passes in strict mode too.
    assert post(client, sample("tracking_update_in_transit")).json()["accepted"] == 1
    assert [row.ce_id for row in stored(configured)] == ["shipment/6A12345678901/in_transit"]


def test_an_update_naming_neither_order_nor_parcel_is_refused_even_when_lenient(
    client: TestClient, configured: Runtime
) -> None:
    body = edited("tracking_update_returned_to_sender", tracking_number=None)
    response = post(client, body)
    assert response.status_code == 422
    assert response.json()["field"] == "msg.tracking_number"
    assert stored(configured) == []
    assert [r.code for r in kept(configured)] == ["invalid_payload"]


def test_unknown_tag_is_unmappable_and_kept(client: TestClient, configured: Runtime) -> None:
    body = edited("tracking_update_in_transit", tag="Teleported", subtag="Teleported_001")
    response = post(client, body)
    assert response.status_code == 422
    assert (response.json()["code"], response.json()["field"]) == ("unknown_status", "msg.tag")
    [reject] = kept(configured)
    assert (reject.code, reject.payload) == ("unknown_status", body.decode())
    assert stored(configured) == []


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(lambda body: sign(body + b" "), id="tampered-body"),
        pytest.param(lambda body: sign(body, "another-secret"), id="wrong-secret"),
        pytest.param(lambda body: hmac.new(SECRET.encode(), body, "sha256").hexdigest(), id="hex"),
        pytest.param(lambda body: "", id="missing"),
    ],
)
def test_bad_signature_is_401_and_the_raw_body_is_kept(
    client: TestClient, configured: Runtime, signature: Any
) -> None:
    body = sample("tracking_update_in_transit")
    response = post(client, body, signature=signature(body))
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "invalid_signature"
    [reject] = kept(configured)
    assert (reject.channel, reject.code, reject.status) == (
        "aftership",
        "invalid_signature",
        "open",
    )
    assert reject.payload == body.decode()
    assert "authorization" not in reject.headers
    assert stored(configured) == []


def test_without_a_secret_webhooks_are_refused_and_kept(
    client: TestClient, runtime: Runtime
) -> None:
    response = post(client, sample("tracking_update_in_transit"))
    assert response.status_code == 503
    assert response.json()["code"] == "source_not_configured"
    assert "TIDINGS_AFTERSHIP_WEBHOOK_SECRET" in response.json()["detail"]
    assert [r.code for r in kept(runtime)] == ["source_not_configured"]
    assert stored(runtime) == []


def test_events_without_a_status_change_are_answered_and_not_stored(
    client: TestClient, configured: Runtime
) -> None:
    response = post(client, sample("edd_revise"))
    assert response.status_code == 200
    assert response.json() == {
        "accepted": 0,
        "duplicate": 0,
        "rejected": 0,
        "deferred": 0,
        "results": [],
    }
    assert stored(configured) == []
    assert kept(configured) == []


def test_account_names_the_source() -> None:
    request = WebhookRequest(
        headers={},
        body=sample("tracking_update_in_transit"),
        received_at=datetime(2026, 11, 21, 15, 0, tzinfo=UTC),
    )
    [event] = ADAPTER.map(request, MapOptions(account="acme"))
    assert event["source"] == "aftership:acme"
    assert ADAPTER.map(request, MapOptions())[0]["source"] == "aftership:default"


def test_without_any_time_the_arrival_time_is_used() -> None:
    document = json.loads(sample("tracking_update_in_transit"))
    document.pop("ts")
    document["msg"].update(checkpoints=[], updated_at=None)
    arrived = datetime(2026, 11, 21, 15, 0, tzinfo=UTC)
    request = WebhookRequest(headers={}, body=json.dumps(document).encode(), received_at=arrived)
    [event] = ADAPTER.map(request, MapOptions())
    assert event["data"]["occurred_at"] is None
    assert event["time"] == "2026-11-21T15:00:00+00:00"


def test_ts_is_the_last_resort_for_the_time() -> None:
    document = json.loads(sample("tracking_update_in_transit"))
    document["msg"].update(checkpoints=[], updated_at=None)
    request = WebhookRequest(
        headers={}, body=json.dumps(document).encode(), received_at=datetime.now(UTC)
    )
    [event] = ADAPTER.map(request, MapOptions())
    assert event["data"]["occurred_at"] == "2026-11-21T14:05:11+00:00"


def test_a_strict_refusal_replays_once_the_source_is_lenient(
    client: TestClient, configured: Runtime
) -> None:
    configured.webhooks.strictness = Strictness({"aftership": "strict"})
    response = post(client, sample("tracking_update_returned_to_sender"))
    assert response.status_code == 422

    configured.webhooks.strictness = Strictness({"aftership": "lenient"})
    [outcome] = configured.replay_reject(response.json()["reject_id"], actor="tester")
    assert outcome.accepted is not None
    assert [row.ce_id for row in stored(configured)] == [
        "shipment/9361289676091361892011/return_to_sender"
    ]
    assert [reject.status for reject in kept(configured)] == ["replayed"]
