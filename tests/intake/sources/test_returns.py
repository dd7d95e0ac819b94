"""Returns webhooks (Loop Returns and the generic ERP shape) through ``/api/intake/returns``."""

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

from tidings.db.schema import delivery_jobs, events, notifications, rejects
from tidings.intake.sources.base import MapOptions, MappingError, WebhookRequest
from tidings.intake.sources.returns import ADAPTER
from tidings.intake.webhooks import Strictness
from tidings.runtime import Runtime

SAMPLES = Path(__file__).parent / "samples" / "returns"
SECRET = "returns-secret-2e8a"
ROUTE = "/api/intake/returns"


def sample(name: str) -> bytes:
    return (SAMPLES / f"{name}.json").read_bytes()


def edited(name: str, **changes: Any) -> bytes:
    document = json.loads(sample(name))
    document.update(changes)
    for key in [key for key, value in changes.items() if value is ...]:
        del document[key]
    return json.dumps(document).encode()


def loop_signature(body: bytes, secret: str = SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def erp_signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post_loop(
    client: TestClient, body: bytes, signature: str | None = None
) -> Any:  # starlette may answer with httpx or httpx2 responses
    headers = {"Content-Type": "application/json", "Authorization": ""}
    headers["X-Loop-Signature"] = loop_signature(body) if signature is None else signature
    return client.post(ROUTE, content=body, headers=headers)


def post_erp(
    client: TestClient, body: bytes, signature: str | None = None
) -> Any:  # starlette may answer with httpx or httpx2 responses
    headers = {"Content-Type": "application/json", "Authorization": ""}
    headers["X-Tidings-Signature"] = erp_signature(body) if signature is None else signature
    return client.post(ROUTE, content=body, headers=headers)


def stored(runtime: Runtime) -> list[RowMapping]:
    with runtime.engine.connect() as conn:
        return list(conn.execute(select(events).order_by(events.c.ce_id)).mappings())


def kept(runtime: Runtime) -> list[RowMapping]:
    with runtime.engine.connect() as conn:
        return list(conn.execute(select(rejects)).mappings())


def subset(data: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    return {key: data.get(key, "<missing>") for key in expected}


def erp_map(document: dict[str, Any], *, strict: bool = False) -> list[dict[str, Any]]:
    request = WebhookRequest(
        headers={"x-tidings-signature": "sha256=..."},
        body=json.dumps(document).encode(),
        received_at=datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
    )
    return ADAPTER.map(request, MapOptions(strict=strict))


@pytest.fixture
def configured(runtime: Runtime) -> Runtime:
    cast(dict[str, str | None], runtime.webhooks.secrets)["returns"] = SECRET
    return runtime


# --- Loop Returns ------------------------------------------------------------------------


def test_loop_return_with_a_label_is_label_issued(client: TestClient, configured: Runtime) -> None:
    response = post_loop(client, sample("loop_return_created"))
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1
    [row] = stored(configured)
    assert (row.source, row.ce_id, row.type, row.subject, row.order_id) == (
        "returns:loop",
        "return/1673/label_issued",
        "return.status_changed",
        "order/1042",
        "1042",
    )
    expected = {
        "order_id": "1042",  # Shopify's order id (provider_order_id), not Loop's 2871
        "order_number": "#1042",
        "loop_order_id": "2871",
        "return_id": "1673",
        "return_reference": None,
        "status": "label_issued",
        "platform_state": "open",
        # Loop lists one entry per unit: two bulbs, one lamp.
        "lines": [{"sku": "BULB-4", "quantity": 2}, {"sku": "LAMP-01", "quantity": 1}],
        "label_url": "https://partner.loopreturns.com/label/12345456",
        "reason": "Arrived broken; Changed my mind",
        "occurred_at": "2026-11-26T09:13:02Z",
        "outcome": None,
    }
    assert subset(row.data, expected) == expected


def test_loop_closed_with_a_refund_emits_the_refund_too(
    client: TestClient, configured: Runtime
) -> None:
    body = sample("loop_return_closed_refunded")
    response = post_loop(client, body)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 2
    refund, returned = stored(configured)
    assert (returned.ce_id, returned.type, returned.data["status"]) == (
        "return/1673/refunded",
        "return.status_changed",
        "refunded",
    )
    assert returned.data["occurred_at"] == "2026-12-02T15:30:00Z"
    assert (refund.source, refund.ce_id, refund.type, refund.subject) == (
        "returns:loop",
        "refund/return:1673/succeeded",
        "refund.succeeded",
        "order/1042",
    )
    expected = {
        "order_id": "1042",
        "refund_id": "return:1673",
        "amount": 4750,
        "currency": "EUR",
        "method": "stripe",
        "return_id": "1673",
    }
    assert subset(refund.data, expected) == expected

    again = post_loop(client, body)
    assert (again.json()["accepted"], again.json()["duplicate"]) == (0, 2)
    assert len(stored(configured)) == 2


@pytest.mark.parametrize("amount", [47.5, 47, "47.50"])
def test_loop_refund_amounts_may_be_json_numbers(amount: object) -> None:
    # Loop's return webhook example sends refunds[].amount as a number ("amount": 20)
    # although its schema says string (docs.loopreturns.com/reference/return-webhook).
    document = json.loads(sample("loop_return_closed_refunded"))
    document["refunds"][0]["amount"] = amount
    request = WebhookRequest(
        headers={"x-loop-signature": "..."},
        body=json.dumps(document).encode(),
        received_at=datetime(2026, 12, 2, 16, 0, tzinfo=UTC),
    )
    [_, refund] = ADAPTER.map(request, MapOptions())
    minor = 4700 if amount == 47 else 4750
    assert (refund["data"]["amount"], refund["data"]["currency"]) == (minor, "EUR")


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({"labels": [{"status": "in_transit", "url": "https://l.example/1"}]}, "in_transit"),
        ({"labels": [{"status": "out_for_delivery", "url": "https://l.example/1"}]}, "in_transit"),
        ({"labels": [{"status": "delivered", "url": "https://l.example/1"}]}, "received"),
        ({"labels": []}, "requested"),
        ({"labels": [], "state": "review"}, "requested"),
        ({"state": "cancelled"}, "canceled"),
        ({"state": "expired"}, "canceled"),
        ({"state": "closed", "refund": "0.00", "refunds": []}, "closed"),
    ],
)
def test_loop_states(
    client: TestClient, configured: Runtime, changes: dict[str, Any], status: str
) -> None:
    assert post_loop(client, edited("loop_return_created", **changes)).json()["accepted"] == 1
    [row] = stored(configured)
    assert (row.ce_id, row.data["status"]) == (f"return/1673/{status}", status)


def test_loop_label_flattened_fields_of_older_payloads(
    client: TestClient, configured: Runtime
) -> None:
    body = edited(
        "loop_return_created",
        labels=...,
        label_status="in_transit",
        label_url="https://partner.loopreturns.com/label/1",
        label_updated_at="2026-11-27T08:00:00+00:00",
    )
    post_loop(client, body)
    [row] = stored(configured)
    assert subset(row.data, {"status": "", "label_url": "", "occurred_at": ""}) == {
        "status": "in_transit",
        "label_url": "https://partner.loopreturns.com/label/1",
        "occurred_at": "2026-11-27T08:00:00Z",
    }


def test_other_loop_topics_are_answered_and_not_stored(
    client: TestClient, configured: Runtime
) -> None:
    response = post_loop(client, sample("loop_label_updated"))
    assert response.status_code == 200
    assert response.json()["results"] == []
    assert stored(configured) == []
    assert kept(configured) == []


def test_unknown_loop_state_is_unmappable(client: TestClient, configured: Runtime) -> None:
    body = edited("loop_return_created", state="teleported")
    response = post_loop(client, body)
    assert response.status_code == 422
    assert (response.json()["code"], response.json()["field"]) == ("unknown_status", "state")
    [reject] = kept(configured)
    assert (reject.channel, reject.payload) == ("returns", body.decode())


def test_loop_strict_mode_requires_skus(client: TestClient, configured: Runtime) -> None:
    document = json.loads(sample("loop_return_created"))
    del document["line_items"][2]["sku"]
    body = json.dumps(document).encode()
    lenient = post_loop(client, body)
    assert lenient.json()["accepted"] == 1
    assert stored(configured)[0].data["lines"] == [{"sku": "BULB-4", "quantity": 2}]

    configured.webhooks.strictness = Strictness({"returns:12345": "strict"})  # per shop
    strict = post_loop(client, edited("loop_return_created", state="review", line_items=[{}]))
    assert strict.status_code == 422
    assert strict.json()["field"] == "line_items[0].sku"


def test_tampered_loop_body_is_401_and_kept(client: TestClient, configured: Runtime) -> None:
    body = sample("loop_return_created")
    response = post_loop(client, body.replace(b'"1673"', b'"1674"'), loop_signature(body))
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_signature"
    [reject] = kept(configured)
    assert reject.code == "invalid_signature"
    assert reject.payload == body.replace(b'"1673"', b'"1674"').decode()
    assert stored(configured) == []


# --- Generic ERP / WMS -------------------------------------------------------------------


def test_erp_return_received(client: TestClient, configured: Runtime) -> None:
    response = post_erp(client, sample("erp_received"))
    assert response.status_code == 200, response.text
    [row] = stored(configured)
    assert (row.source, row.ce_id, row.subject) == (
        "returns:erp",
        "return/rma_7/received",
        "order/1042",
    )
    expected = {
        "order_id": "1042",
        "return_id": "rma_7",
        "return_reference": "R-1042-1",
        "status": "received",
        "lines": [{"sku": "BULB-4", "quantity": 1}, {"sku": "LAMP-01", "quantity": 1}],
        "label_url": "https://labels.example.com/rma_7.pdf",
        "reason": "too small",
        "outcome": None,
        "occurred_at": "2026-11-28T10:15:00+01:00",
    }
    assert subset(row.data, expected) == expected
    assert row.time == datetime(2026, 11, 28, 9, 15, tzinfo=UTC)


def test_erp_refund_authorized_emits_refund_authorized(
    client: TestClient, configured: Runtime
) -> None:
    body = sample("erp_refund_authorized")
    assert post_erp(client, body).json()["accepted"] == 2
    refund, returned = stored(configured)
    assert returned.ce_id == "return/rma_7/refund_authorized"
    assert returned.data["outcome"] == "accepted"
    assert (refund.ce_id, refund.type) == ("refund/return:rma_7/authorized", "refund.authorized")
    expected = {
        "order_id": "1042",
        "refund_id": "return:rma_7",
        "amount": 1250,
        "currency": "EUR",
        "authorized_at": "2026-11-29T09:00:00+01:00",
    }
    assert subset(refund.data, expected) == expected
    assert post_erp(client, body).json()["duplicate"] == 2


def test_erp_inspected_keeps_the_outcome(client: TestClient, configured: Runtime) -> None:
    post_erp(client, sample("erp_inspected_rejected"))
    [row] = stored(configured)
    assert (row.ce_id, row.data["status"], row.data["outcome"]) == (
        "return/rma_8/inspected",
        "inspected",
        "rejected",
    )


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [(1250, "EUR", 1250), ("12.50", "EUR", 1250), ("1500", "JPY", 1500), ("1.234", "BHD", 1234)],
)
def test_erp_refund_amounts(amount: object, currency: str, minor: int) -> None:
    document = json.loads(sample("erp_refund_authorized"))
    document["refund"] = {"amount": amount, "currency": currency}
    [_, refund] = erp_map(document)
    assert (refund["data"]["amount"], refund["data"]["currency"]) == (minor, currency)


@pytest.mark.parametrize(
    ("refund", "field"),
    [
        ({"amount": 12.5, "currency": "EUR"}, "refund.amount"),  # a float is ambiguous
        ({"amount": "12.505", "currency": "EUR"}, "refund.amount"),
        ({"amount": -100, "currency": "EUR"}, "refund.amount"),
        ({"amount": 1250, "currency": "euros"}, "refund.currency"),
    ],
)
def test_erp_unreadable_refund_is_refused(refund: dict[str, Any], field: str) -> None:
    document = json.loads(sample("erp_refund_authorized"))
    document["refund"] = refund
    with pytest.raises(MappingError) as error:
        erp_map(document)
    assert error.value.field == field


INCOMPLETE_REFUNDS = [
    pytest.param(..., "refund", id="no-refund"),
    pytest.param(None, "refund", id="null-refund"),
    pytest.param({"amount": 1250}, "refund.currency", id="no-currency"),
    pytest.param({"currency": "EUR"}, "refund.amount", id="no-amount"),
]


@pytest.mark.parametrize("status", ["refund_authorized", "refunded"])
@pytest.mark.parametrize(("refund", "field"), INCOMPLETE_REFUNDS)
def test_strict_erp_refund_status_without_the_refund_is_refused_and_kept(
    client: TestClient, configured: Runtime, status: str, refund: object, field: str
) -> None:
    configured.webhooks.strictness = Strictness({"returns": "strict"})
    body = edited("erp_refund_authorized", status=status, refund=refund)
    response = post_erp(client, body)
    assert response.status_code == 422
    problem = response.json()
    assert (problem["code"], problem["field"]) == ("missing_refund", field)
    assert f"'{status}' promises a refund" in problem["detail"]
    assert '"refund": {"amount": 1250, "currency": "EUR"}' in problem["detail"]
    [reject] = kept(configured)
    assert (reject.code, reject.field, reject.payload) == ("missing_refund", field, body.decode())
    assert stored(configured) == []


def place_order_1042(client: TestClient) -> None:
    order = {
        "specversion": "1.0",
        "id": "order-1042",
        "source": "shop",
        "type": "order.placed",
        "data": {
            "order_id": "1042",
            "order_number": "#1042",
            "currency": "EUR",
            "total": 8900,
            "customer": {"id": "cam", "email": "cam@example.fr", "locale": "en"},
        },
    }
    response = client.post(
        "/api/events", json=order, headers={"Content-Type": "application/cloudevents+json"}
    )
    assert response.status_code == 202, response.text


def return_emails(runtime: Runtime) -> list[tuple[str, str, str | None]]:
    with runtime.engine.connect() as conn:
        rows = conn.execute(
            select(notifications.c.kind, notifications.c.status, notifications.c.recipient)
            .where(notifications.c.channel == "email")
            .order_by(notifications.c.created_at, notifications.c.id)
        ).all()
    return [(row.kind, row.status, row.recipient) for row in rows]


@pytest.mark.parametrize(
    ("status", "told", "kind"),
    [
        ("refund_authorized", "inspected", "return_inspected"),
        ("refunded", "closed", "return_closed"),
    ],
)
@pytest.mark.parametrize(("refund", "field"), INCOMPLETE_REFUNDS)
def test_lenient_erp_refund_status_without_the_refund_is_told_as_a_return_step(
    client: TestClient,
    configured: Runtime,
    status: str,
    told: str,
    kind: str,
    refund: object,
    field: str,
) -> None:
    place_order_1042(client)
    response = post_erp(client, edited("erp_refund_authorized", status=status, refund=refund))
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1
    [row] = [r for r in stored(configured) if r.type != "order.placed"]
    assert (row.ce_id, row.type) == (f"return/rma_7/{status}", "return.status_changed")
    assert (row.data["status"], row.data["reported_status"]) == (told, status)
    if told == "inspected":
        assert row.data["outcome"] == "accepted"  # what a refund on its way means
    assert row.data["refund_missing"] == (
        f"'{status}' promises a refund, but the return has no {field}: no refund "
        "message was sent; the customer was told the return step instead."
    )
    assert return_emails(configured) == [(kind, "queued", "cam@example.fr")]


def test_erp_strict_mode_requires_the_lines(client: TestClient, configured: Runtime) -> None:
    body = edited("erp_received", lines=...)
    lenient = post_erp(client, body)
    assert lenient.json()["accepted"] == 1
    assert stored(configured)[0].data["lines"] == []

    configured.webhooks.strictness = Strictness({"returns": "strict"})
    strict = post_erp(client, edited("erp_received", status="in_transit", lines=...))
    assert strict.status_code == 422
    assert (strict.json()["code"], strict.json()["field"]) == ("invalid_payload", "lines")
    bad_quantity = edited("erp_received", lines=[{"sku": "BULB-4", "quantity": 0}])
    assert post_erp(client, bad_quantity).json()["field"] == "lines[0].quantity"
    assert len(stored(configured)) == 1


def test_erp_order_id_is_required_in_every_mode(client: TestClient, configured: Runtime) -> None:
    response = post_erp(client, edited("erp_received", order_id=...))
    assert response.status_code == 422
    assert (response.json()["code"], response.json()["field"]) == ("invalid_payload", "order_id")
    assert [r.field for r in kept(configured)] == ["order_id"]


def test_erp_unknown_status_is_unmappable(client: TestClient, configured: Runtime) -> None:
    response = post_erp(client, edited("erp_received", status="lost"))
    assert response.status_code == 422
    assert (response.json()["code"], response.json()["field"]) == ("unknown_status", "status")


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(lambda body: erp_signature(body, "wrong"), id="wrong-secret"),
        pytest.param(lambda body: erp_signature(body).removeprefix("sha256="), id="no-prefix"),
        pytest.param(lambda body: loop_signature(body), id="base64-instead-of-hex"),
    ],
)
def test_erp_bad_signature_is_401(client: TestClient, configured: Runtime, signature: Any) -> None:
    body = sample("erp_received")
    response = post_erp(client, body, signature(body))
    assert response.status_code == 401
    assert [r.code for r in kept(configured)] == ["invalid_signature"]


def test_unsigned_request_is_401(client: TestClient, configured: Runtime) -> None:
    response = client.post(
        ROUTE,
        content=sample("erp_received"),
        headers={"Content-Type": "application/json", "Authorization": ""},
    )
    assert response.status_code == 401
    assert "X-Loop-Signature" in response.json()["detail"]


def test_without_a_secret_webhooks_are_refused_and_kept(
    client: TestClient, runtime: Runtime
) -> None:
    response = post_erp(client, sample("erp_received"))
    assert response.status_code == 503
    assert response.json()["code"] == "source_not_configured"
    assert [r.code for r in kept(runtime)] == ["source_not_configured"]


def test_a_kept_loop_webhook_replays_as_loop(client: TestClient, configured: Runtime) -> None:
    configured.webhooks.strictness = Strictness({"returns": "strict"})
    response = post_loop(client, edited("loop_return_created", line_items=...))
    assert response.status_code == 422

    configured.webhooks.strictness = Strictness({})
    [outcome] = configured.replay_reject(response.json()["reject_id"], actor="tester")
    assert outcome.accepted is not None
    [row] = stored(configured)
    assert (row.source, row.ce_id) == ("returns:loop", "return/1673/label_issued")


def test_a_signed_loop_return_for_a_known_order_queues_the_customer_message(
    client: TestClient, configured: Runtime
) -> None:
    place_order_1042(client)
    response = post_loop(client, sample("loop_return_created"))
    assert response.status_code == 200, response.text
    assert (response.json()["accepted"], response.json()["rejected"]) == (1, 0)

    with configured.engine.connect() as conn:
        [event] = conn.execute(select(events).where(events.c.source == "returns:loop")).mappings()
        rows = (
            conn.execute(select(notifications).where(notifications.c.event_id == event.id))
            .mappings()
            .all()
        )
        jobs = conn.execute(select(delivery_jobs.c.notification_id, delivery_jobs.c.status)).all()
    # Loop names Shopify's order id; the order's customer hears of the label, on each channel.
    assert sorted((r.kind, r.channel, r.status, r.customer_id, r.order_id) for r in rows) == [
        ("return_label_issued", "email", "queued", "cam", "1042"),
        ("return_label_issued", "in_app", "queued", "cam", "1042"),
    ]
    assert {r.recipient for r in rows if r.channel == "email"} == {"cam@example.fr"}
    queued = {notification_id for notification_id, status in jobs if status == "queued"}
    assert {r.id for r in rows} <= queued
