"""POST /api/intake/stripe: Stripe-Signature, event mapping, one fact stored once."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import Row, select

from tidings.db.schema import events, rejects
from tidings.intake.webhooks import Strictness
from tidings.runtime import Runtime

URL = "/api/intake/stripe"
SECRET = "whsec_9b8a7c6d5e4f3a2b1c0d9e8f7a6b5c4d"
SAMPLES = Path(__file__).parent / "samples" / "stripe"
REFUND = "re_3QZk7d2eZvKYlo2C1K4oRm7T"
INTENT = "pi_3QZk7d2eZvKYlo2C1hXb9Dq4"


def sample(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SAMPLES / f"{name}.json").read_text())
    return data


def signature(body: bytes, *, secret: str = SECRET, at: int | None = None) -> str:
    stamp = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


def deliver(
    client: TestClient,
    payload: dict[str, Any] | bytes,
    *,
    secret: str = SECRET,
    at: int | None = None,
    header: str | None = None,
) -> Response:
    """One delivery, signed now (each call is a new delivery with a new signature)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {
        "Authorization": "",
        "Content-Type": "application/json; charset=utf-8",
        "Stripe-Signature": header or signature(body, secret=secret, at=at),
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
    }
    return client.post(URL, content=body, headers=headers)


def stored(runtime: Runtime) -> list[Row[Any]]:
    with runtime.engine.connect() as conn:
        return list(conn.execute(select(events).order_by(events.c.ce_id)).all())


def kept(runtime: Runtime) -> list[Row[Any]]:
    with runtime.engine.connect() as conn:
        return list(conn.execute(select(rejects)).all())


@pytest.fixture
def stripe(runtime: Runtime) -> Runtime:
    runtime.webhooks.secrets["stripe"] = SECRET  # type: ignore[index]
    return runtime


def accepted_one(response: Response) -> None:
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (1, 0, 0), body


# -- each mapped event type ----------------------------------------------------------


def test_refund_created_is_refund_authorized(client: TestClient, stripe: Runtime) -> None:
    accepted_one(deliver(client, sample("refund_created")))
    [row] = stored(stripe)
    assert (row.source, row.ce_id, row.type) == (
        "stripe:platform",
        f"refund/{REFUND}/authorized",
        "refund.authorized",
    )
    assert (row.subject, row.order_id) == ("order/1042", "1042")
    assert row.time == datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    data = row.data
    assert (data["refund_id"], data["payment_id"]) == (REFUND, INTENT)
    assert (data["amount"], data["currency"]) == (1250, "EUR")
    assert (data["reason_code"], data["method"]) == ("requested_by_customer", "card")
    assert data["authorized_at"] == "2026-11-22T09:00:00Z"
    assert data["livemode"] is False


def test_charge_refunded_and_refund_created_for_one_refund_store_one_event(
    client: TestClient, stripe: Runtime
) -> None:
    accepted_one(deliver(client, sample("charge_refunded")))
    [row] = stored(stripe)
    # The newest of the charge's two refunds is the news.
    assert (row.ce_id, row.type) == (f"refund/{REFUND}/authorized", "refund.authorized")
    assert (row.data["amount"], row.data["order_id"]) == (1250, "1042")

    again = deliver(client, sample("refund_created"))
    assert again.status_code == 200
    assert (again.json()["accepted"], again.json()["duplicate"]) == (0, 1)
    assert len(stored(stripe)) == 1


def test_charge_refunded_without_a_refund_list_uses_the_amount_refunded(
    client: TestClient, stripe: Runtime
) -> None:
    event = sample("charge_refunded")
    event["api_version"] = "2024-06-20"
    del event["data"]["object"]["refunds"]
    accepted_one(deliver(client, event))
    [row] = stored(stripe)
    charge = "ch_3QZk7d2eZvKYlo2C1Vd8fNn2"
    assert row.ce_id == f"refund/{charge}/1750/authorized"
    assert (row.data["amount"], row.data["currency"], row.data["payment_id"]) == (
        1750,
        "EUR",
        INTENT,
    )


def test_charge_refunded_from_2024_10_28_leaves_the_news_to_refund_created(
    client: TestClient, stripe: Runtime
) -> None:
    # From that version both events come for one refund, and only refund.created knows
    # the refund's id: one message, not two.
    event = sample("charge_refunded")
    event["api_version"] = "2024-10-28.acacia"
    del event["data"]["object"]["refunds"]
    response = deliver(client, event)
    assert response.status_code == 200
    assert response.json()["accepted"] == 0
    assert stored(stripe) == []
    created = sample("refund_created")
    accepted_one(deliver(client, created))
    assert [row.type for row in stored(stripe)] == ["refund.authorized"]


def test_refund_updated_to_succeeded_is_refund_succeeded(
    client: TestClient, stripe: Runtime
) -> None:
    accepted_one(deliver(client, sample("refund_updated")))
    [row] = stored(stripe)
    assert (row.ce_id, row.type) == (f"refund/{REFUND}/succeeded", "refund.succeeded")
    assert row.time == datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
    assert (row.data["amount"], row.data["order_id"]) == (1250, "1042")


@pytest.mark.parametrize("status", ["failed", "canceled"])
def test_refund_updated_to_failed_or_canceled_is_refund_failed(
    client: TestClient, stripe: Runtime, status: str
) -> None:
    event = sample("refund_updated")
    event["data"]["object"].update(status=status, failure_reason="lost_or_stolen_card")
    accepted_one(deliver(client, event))
    [row] = stored(stripe)
    assert (row.ce_id, row.type) == (f"refund/{REFUND}/failed", "refund.failed")
    assert (row.data["failure_reason"], row.data["refund_status"]) == (
        "lost_or_stolen_card",
        status,
    )


def test_refund_failed_and_refund_updated_failed_store_one_event(
    client: TestClient, stripe: Runtime
) -> None:
    accepted_one(deliver(client, sample("refund_failed")))
    [row] = stored(stripe)
    assert (row.ce_id, row.type) == (f"refund/{REFUND}/failed", "refund.failed")
    assert row.data["failure_reason"] == "expired_or_canceled_card"
    assert row.time == datetime(2026, 11, 25, 14, 0, tzinfo=UTC)

    updated = sample("refund_updated")
    updated["data"]["object"]["status"] = "failed"
    assert deliver(client, updated).json()["duplicate"] == 1
    assert len(stored(stripe)) == 1


def test_charge_refund_updated_of_older_api_versions_is_read_like_refund_updated(
    client: TestClient, stripe: Runtime
) -> None:
    # Before 2024-10-28.acacia a charge refund's changes come as charge.refund.updated,
    # with the Refund as data.object (docs.stripe.com/api/refunds, Events).
    event = sample("refund_updated")
    event.update(type="charge.refund.updated", api_version="2024-06-20")
    event["data"]["object"].update(status="failed", failure_reason="insufficient_funds")
    accepted_one(deliver(client, event))
    [row] = stored(stripe)
    assert (row.ce_id, row.type) == (f"refund/{REFUND}/failed", "refund.failed")
    assert row.data["failure_reason"] == "insufficient_funds"

    assert deliver(client, sample("refund_failed")).json()["duplicate"] == 1
    assert len(stored(stripe)) == 1


def test_payment_intent_payment_failed_is_payment_failed(
    client: TestClient, stripe: Runtime
) -> None:
    accepted_one(deliver(client, sample("payment_intent_payment_failed")))
    [row] = stored(stripe)
    intent = "pi_3QZm1f2eZvKYlo2C0c7Ldp9R"
    assert (row.ce_id, row.type) == (
        f"payment/{intent}/failed/ch_3QZm1f2eZvKYlo2C0GmCq3Xy",
        "payment.failed",
    )
    assert row.time == datetime(2026, 11, 21, 12, 0, 3, tzinfo=UTC)
    data = row.data
    assert (data["order_id"], data["payment_id"]) == ("1043", intent)
    assert (data["amount"], data["currency"], data["gateway"]) == (4500, "USD", "stripe")
    assert (data["decline_code"], data["attempt"]) == ("insufficient_funds", 1)


def test_a_decline_without_decline_code_uses_the_error_code_and_metadata_attempt(
    client: TestClient, stripe: Runtime
) -> None:
    event = sample("payment_intent_payment_failed")
    intent = event["data"]["object"]
    del intent["last_payment_error"]["decline_code"]
    intent["last_payment_error"]["code"] = "expired_card"
    intent["metadata"]["attempt"] = "3"
    accepted_one(deliver(client, event))
    data = stored(stripe)[0].data
    assert (data["decline_code"], data["attempt"]) == ("expired_card", 3)


def test_invoice_payment_failed_counts_attempts(client: TestClient, stripe: Runtime) -> None:
    accepted_one(deliver(client, sample("invoice_payment_failed")))
    [row] = stored(stripe)
    intent = "pi_3QZp3h2eZvKYlo2C0InvPi7c"
    assert (row.ce_id, row.type) == (
        f"payment/{intent}/failed/ch_3QZp3h2eZvKYlo2C0InvCh2b",
        "payment.failed",
    )
    data = row.data
    assert (data["order_id"], data["payment_id"]) == ("SUB-1044", intent)
    assert (data["amount"], data["currency"], data["attempt"]) == (1900, "EUR", 2)
    assert datetime.fromisoformat(data["next_attempt_at"]) == datetime(2026, 11, 25, 8, tzinfo=UTC)


def test_payment_intent_succeeded_is_payment_captured(client: TestClient, stripe: Runtime) -> None:
    accepted_one(deliver(client, sample("payment_intent_succeeded")))
    [row] = stored(stripe)
    intent = "pi_3QZn2g2eZvKYlo2C1cOk4Zz1"
    assert (row.ce_id, row.type) == (f"payment/{intent}/captured", "payment.captured")
    data = row.data
    assert (data["order_id"], data["payment_id"]) == ("1042", intent)
    assert (data["amount"], data["currency"], data["gateway"]) == (10150, "EUR", "stripe")


def test_connect_events_are_sourced_by_their_account(client: TestClient, stripe: Runtime) -> None:
    event = {**sample("refund_created"), "account": "acct_1Nv0FGQ9RKHgCVdK"}
    accepted_one(deliver(client, event))
    assert stored(stripe)[0].source == "stripe:acct_1Nv0FGQ9RKHgCVdK"


# -- idempotency ----------------------------------------------------------------------


def test_a_redelivery_stores_nothing_new(client: TestClient, stripe: Runtime) -> None:
    event = sample("payment_intent_payment_failed")
    accepted_one(deliver(client, event))
    again = deliver(client, event, at=int(time.time()) - 30)
    assert again.status_code == 200
    assert (again.json()["accepted"], again.json()["duplicate"]) == (0, 1)
    assert len(stored(stripe)) == 1


# -- signatures -----------------------------------------------------------------------


def test_any_v1_signature_may_match_during_a_secret_roll(
    client: TestClient, stripe: Runtime
) -> None:
    body = json.dumps(sample("refund_created")).encode()
    stale = signature(body, secret="whsec_previous").split(",")[1]
    good = signature(body)
    header = f"{good.split(',')[0]},{stale},{good.split(',')[1]},v0=6ffbb59b2300aae63f27240"
    accepted_one(deliver(client, body, header=header))


def test_a_tampered_body_is_refused_and_kept(client: TestClient, stripe: Runtime) -> None:
    body = json.dumps(sample("refund_created")).encode()
    tampered = body.replace(b'"amount": 1250', b'"amount": 125000')
    assert tampered != body
    response = deliver(client, tampered, header=signature(body))
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "invalid_signature"
    assert stored(stripe) == []
    [reject] = kept(stripe)
    assert (reject.channel, reject.code, reject.status) == ("stripe", "invalid_signature", "open")
    assert reject.payload == tampered.decode()


def test_a_wrong_secret_is_refused(client: TestClient, stripe: Runtime) -> None:
    response = deliver(client, sample("refund_created"), secret="whsec_someone_else")
    assert (response.status_code, response.json()["code"]) == (401, "invalid_signature")
    assert [r.code for r in kept(stripe)] == ["invalid_signature"]


def test_a_signature_older_than_five_minutes_is_refused(
    client: TestClient, stripe: Runtime
) -> None:
    response = deliver(client, sample("refund_created"), at=int(time.time()) - 301 - 60)
    assert (response.status_code, response.json()["code"]) == (401, "invalid_signature")
    assert "300" in response.json()["detail"]
    assert stored(stripe) == []
    assert len(kept(stripe)) == 1


@pytest.mark.parametrize("header", ["", "t=1795338000", "v1=abc", "t=soon,v1=abc"])
def test_a_malformed_signature_header_is_refused(
    client: TestClient, stripe: Runtime, header: str
) -> None:
    response = client.post(
        URL,
        content=json.dumps(sample("refund_created")).encode(),
        headers={"Authorization": "", "Stripe-Signature": header},
    )
    assert response.status_code == 401
    assert stored(stripe) == []


def test_without_a_secret_webhooks_are_not_accepted(client: TestClient, runtime: Runtime) -> None:
    runtime.webhooks.secrets["stripe"] = None  # type: ignore[index]
    response = deliver(client, sample("refund_created"))
    assert (response.status_code, response.json()["code"]) == (503, "source_not_configured")
    assert stored(runtime) == []


# -- mapping refusals and strictness -------------------------------------------------


def _without_order(name: str) -> dict[str, Any]:
    event = sample(name)
    event["data"]["object"]["metadata"] = {}
    return event


def test_without_an_order_id_lenient_keeps_the_payment_intent(
    client: TestClient, stripe: Runtime
) -> None:
    accepted_one(deliver(client, _without_order("refund_created")))
    [row] = stored(stripe)
    assert (row.data["order_id"], row.subject) == (INTENT, f"order/{INTENT}")


def test_without_an_order_id_strict_refuses_and_keeps(client: TestClient, stripe: Runtime) -> None:
    stripe.webhooks.strictness = Strictness({"stripe": "strict"})
    event = _without_order("payment_intent_payment_failed")
    response = deliver(client, event)
    assert response.status_code == 422
    assert (response.json()["code"], response.json()["field"]) == (
        "missing_order",
        "data.object.metadata.order_id",
    )
    assert stored(stripe) == []
    [reject] = kept(stripe)
    assert (reject.code, reject.field) == ("missing_order", "data.object.metadata.order_id")
    assert json.loads(reject.payload) == event


def test_strictness_can_be_set_per_connected_account(client: TestClient, stripe: Runtime) -> None:
    stripe.webhooks.strictness = Strictness({"stripe:acct_1StrictAccount00": "strict"})
    platform = _without_order("refund_created")
    accepted_one(deliver(client, platform))
    connected = {**platform, "account": "acct_1StrictAccount00"}
    assert deliver(client, connected).status_code == 422


def test_an_unmappable_payload_is_422_and_kept(client: TestClient, stripe: Runtime) -> None:
    event = sample("refund_created")
    event["data"]["object"]["amount"] = "12.50"
    response = deliver(client, event)
    assert response.status_code == 422
    assert (response.json()["code"], response.json()["field"]) == (
        "invalid_payload",
        "data.object.amount",
    )
    assert [r.code for r in kept(stripe)] == ["invalid_payload"]


def test_a_body_that_is_not_an_event_is_422(client: TestClient, stripe: Runtime) -> None:
    response = deliver(client, {"id": "re_1", "object": "refund"})
    assert (response.status_code, response.json()["code"]) == (422, "invalid_payload")


def test_unknown_event_types_are_acknowledged_and_not_stored(
    client: TestClient, stripe: Runtime
) -> None:
    response = deliver(client, sample("customer_updated"))
    assert response.status_code == 200
    assert response.json() == {
        "accepted": 0,
        "duplicate": 0,
        "rejected": 0,
        "deferred": 0,
        "results": [],
    }
    assert stored(stripe) == []
    assert kept(stripe) == []
