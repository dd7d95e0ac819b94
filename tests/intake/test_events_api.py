"""POST /api/events: the three CloudEvents modes, idempotency, problems and the reject log."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.support.events import CAMILLE, cloudevent, order_placed, refund_authorized
from tests.support.smtp import SmtpServer
from tests.support.work import drain
from tidings.db.schema import delivery_jobs, events, notifications, rejects
from tidings.runtime import Runtime

STRUCTURED = {"Content-Type": "application/cloudevents+json"}
BATCH = {"Content-Type": "application/cloudevents-batch+json"}


def count(runtime: Runtime, table: object) -> int:
    with runtime.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)  # type: ignore[arg-type]


def test_structured_event_is_stored_once_and_a_repeat_changes_nothing(
    client: TestClient, runtime: Runtime
) -> None:
    body = json.dumps(refund_authorized("1042", customer=CAMILLE))
    first = client.post("/api/events", content=body, headers=STRUCTURED)
    assert first.status_code == 202
    assert first.json()["status"] == "accepted"
    assert first.json()["notifications"] == 2  # email and in-app

    again = client.post("/api/events", content=body, headers=STRUCTURED)
    assert again.status_code == 200
    assert again.json()["status"] == "duplicate"
    assert again.json()["event_id"] == first.json()["event_id"]
    assert count(runtime, events) == 1
    assert count(runtime, notifications) == 2
    assert count(runtime, delivery_jobs) == 2


def test_binary_mode_reads_ce_headers(client: TestClient, runtime: Runtime) -> None:
    event = refund_authorized("77", customer=CAMILLE)
    headers = {
        "Content-Type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": event["id"],
        "ce-source": event["source"],
        "ce-type": event["type"],
        "ce-time": event["time"],
    }
    response = client.post("/api/events", content=json.dumps(event["data"]), headers=headers)
    assert response.status_code == 202, response.text
    with runtime.engine.connect() as conn:
        row = conn.execute(select(events)).one()
    assert (row.source, row.ce_id, row.subject) == (event["source"], event["id"], "order/77")


def test_batch_accepts_and_rejects_each_event_on_its_own(
    client: TestClient, runtime: Runtime
) -> None:
    good = order_placed("1", CAMILLE)
    bad = refund_authorized("1", amount=12.5)  # type: ignore[arg-type]
    response = client.post("/api/events", content=json.dumps([good, bad, good]), headers=BATCH)
    assert response.status_code == 200
    body = response.json()
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (1, 1, 1)
    rejected = body["results"][1]
    assert rejected["status"] == "rejected"
    assert rejected["problem"]["code"] == "invalid_data"
    assert rejected["problem"]["field"] == "data.amount"
    assert count(runtime, events) == 1
    with runtime.engine.connect() as conn:
        kept = conn.execute(select(rejects)).one()
    assert kept.id == rejected["problem"]["reject_id"]
    assert json.loads(kept.payload)["data"]["amount"] == 12.5


def test_malformed_event_is_a_problem_and_is_kept(client: TestClient, runtime: Runtime) -> None:
    event = refund_authorized("9", currency="euros")
    response = client.post("/api/events", content=json.dumps(event), headers=STRUCTURED)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "invalid_data"
    assert problem["field"] == "data.currency"
    assert problem["status"] == 422
    assert "ISO 4217" in problem["detail"]
    with runtime.engine.connect() as conn:
        kept = conn.execute(select(rejects)).one()
    assert (kept.code, kept.field, kept.status) == ("invalid_data", "data.currency", "open")
    assert json.loads(kept.payload) == event


def test_unreadable_json_is_kept_too(client: TestClient, runtime: Runtime) -> None:
    response = client.post("/api/events", content=b'{"specversion": "1.0", ', headers=STRUCTURED)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_json"
    with runtime.engine.connect() as conn:
        kept = conn.execute(select(rejects)).one()
    assert response.json()["reject_id"] == kept.id
    assert kept.payload == '{"specversion": "1.0", '


def test_wrong_media_type_is_refused(client: TestClient) -> None:
    response = client.post("/api/events", content="hello", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert response.json()["field"] == "Content-Type"


def test_batch_over_the_limit_is_refused_whole(client: TestClient, runtime: Runtime) -> None:
    runtime.intake.max_batch = 3
    batch = [order_placed(str(n), CAMILLE) for n in range(4)]
    response = client.post("/api/events", content=json.dumps(batch), headers=BATCH)
    assert response.status_code == 413
    assert response.json()["code"] == "batch_too_large"
    assert count(runtime, events) == 0


def test_credentials_and_scopes_are_required(client: TestClient, runtime: Runtime) -> None:
    body = json.dumps(order_placed("5", CAMILLE))
    anonymous = client.post(
        "/api/events", content=body, headers={**STRUCTURED, "Authorization": ""}
    )
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    forged = client.post(
        "/api/events",
        content=body,
        headers={**STRUCTURED, "Authorization": "Bearer tdg_00000000_nope"},
    )
    assert forged.status_code == 401

    from tidings.api.keys import create_key
    from tidings.db.types import utcnow

    with runtime.engine.begin() as conn:
        _, reader = create_key(conn, name="reader", scopes=["inbox:read"], actor=None, now=utcnow())
    narrow = client.post(
        "/api/events", content=body, headers={**STRUCTURED, "Authorization": f"Bearer {reader}"}
    )
    assert narrow.status_code == 403
    assert narrow.json()["required_scope"] == "events:write"
    assert count(runtime, events) == 0
    assert client.get("/healthz", headers={"Authorization": ""}).status_code == 200


def test_later_events_reach_the_customer_of_the_order(
    client: TestClient, runtime: Runtime, smtp_server: SmtpServer
) -> None:
    client.post(
        "/api/events", content=json.dumps(order_placed("1042", CAMILLE)), headers=STRUCTURED
    )
    # The refund carries no customer: the order's customer gets it.
    client.post("/api/events", content=json.dumps(refund_authorized("1042")), headers=STRUCTURED)
    drain(runtime)
    mail = smtp_server.parsed()
    assert [m["To"] for m in mail] == ["camille@example.fr"]
    assert "12,50\u00a0€" in mail[0].get_body(preferencelist=("plain",)).get_content()


def test_an_event_naming_only_the_customer_keeps_the_profile_of_its_batch(
    client: TestClient, runtime: Runtime, smtp_server: SmtpServer
) -> None:
    # In one batch: the order with the full profile, then a refund naming only the id.
    refund = refund_authorized("1042", customer={"id": CAMILLE["id"]})
    batch = [order_placed("1042", CAMILLE), refund]
    response = client.post("/api/events", content=json.dumps(batch), headers=BATCH)
    assert response.json()["accepted"] == 2
    drain(runtime)
    assert [m["To"] for m in smtp_server.parsed()] == ["camille@example.fr"]


def test_event_for_unknown_customer_is_recorded_as_suppressed(
    client: TestClient, runtime: Runtime
) -> None:
    response = client.post(
        "/api/events", content=json.dumps(refund_authorized("404")), headers=STRUCTURED
    )
    assert response.status_code == 202
    with runtime.engine.connect() as conn:
        rows = conn.execute(select(notifications.c.status, notifications.c.reason)).all()
    assert {row.status for row in rows} == {"suppressed"}
    assert all("no recipient" in (row.reason or "") for row in rows)
    assert count(runtime, delivery_jobs) == 0


def test_unknown_type_names_the_catalogue(client: TestClient) -> None:
    event = cloudevent("order.teleported", {"order_id": "1"})
    response = client.post("/api/events", content=json.dumps(event), headers=STRUCTURED)
    assert response.status_code == 422
    assert response.json()["code"] == "unknown_event_type"
    assert "refund.authorized" in response.json()["detail"]


def test_a_forged_verified_mark_does_not_let_a_replay_skip_the_signature(
    client: TestClient, runtime: Runtime
) -> None:
    runtime.webhooks.secrets["aftership"] = "right-secret"
    body = json.dumps({"event": "tracking_update", "msg": {"tracking_number": "6A1"}}).encode()
    response = client.post(
        "/api/intake/aftership",
        content=body,
        headers={
            "aftership-hmac-sha256": "forged",
            "x-tidings-signature-verified": "1",
            "Content-Type": "application/json",
            "Authorization": "",
        },
    )
    assert response.status_code == 401
    reject_id = response.json()["reject_id"]
    with runtime.engine.connect() as conn:
        kept = conn.execute(select(rejects.c.headers).where(rejects.c.id == reject_id)).one()
    assert "x-tidings-signature-verified" not in kept.headers
    from tidings.intake.webhooks import WebhookError

    with pytest.raises(WebhookError) as refused:
        runtime.replay_reject(reject_id, actor="operator")
    assert refused.value.code == "invalid_signature"
    assert count(runtime, events) == 0
