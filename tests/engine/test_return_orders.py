"""A return event that names no order (Shopify's returns/decline) reaches the customer of
the order an earlier event of the same return named, and shows in that order's timeline.

Through the real Shopify webhook route, with Shopify's sample payloads.
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

from tests.support.smtp import SmtpServer
from tests.support.work import drain
from tidings.db.schema import events, notifications, returns
from tidings.intake.webhooks import Strictness
from tidings.runtime import Runtime

SAMPLES = Path(__file__).parent.parent / "intake" / "sources" / "samples" / "shopify"
SECRET = "shp-secret"
ORDER = "5820982911946154"
RETURN = "3547267221"


def sample(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SAMPLES / f"{name}.json").read_text())
    return data


@pytest.fixture
def shop(runtime: Runtime) -> Runtime:
    runtime.webhooks.secrets["shopify"] = SECRET  # type: ignore[index]
    return runtime


def shopify(client: TestClient, topic: str, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    mac = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest())
    response = client.post(
        "/api/intake/shopify",
        content=body,
        headers={
            "Content-Type": "application/json",
            "Authorization": "",
            "X-Shopify-Topic": topic,
            "X-Shopify-Shop-Domain": "lumen-atelier.myshopify.com",
            "X-Shopify-Hmac-Sha256": mac.decode(),
            "X-Shopify-Webhook-Id": str(uuid.uuid4()),
            "X-Shopify-Event-Id": str(uuid.uuid4()),
            "X-Shopify-Triggered-At": "2026-11-25T09:00:00Z",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1, response.json()


def decline_emails(runtime: Runtime) -> list[Any]:
    with runtime.engine.connect() as conn:
        return list(
            conn.execute(
                select(notifications).where(
                    notifications.c.kind == "return_declined", notifications.c.channel == "email"
                )
            ).mappings()
        )


def test_a_declined_return_reaches_the_customer_of_the_requested_return(
    client: TestClient, shop: Runtime, smtp_server: SmtpServer
) -> None:
    shopify(client, "orders/create", sample("orders_create"))
    shopify(client, "returns/request", sample("returns_request"))
    shopify(client, "returns/decline", sample("returns_decline"))

    [email] = decline_emails(shop)
    assert (email["status"], email["reason"]) == ("queued", None)
    assert (email["recipient"], email["order_id"]) == ("camille@example.fr", ORDER)
    drain(shop)
    [mail] = [
        m for m in smtp_server.parsed() if str(m["Message-ID"]).startswith(f"<{email['id']}.")
    ]
    assert mail["To"] == "camille@example.fr"
    assert RETURN in str(mail["Subject"])

    with shop.engine.connect() as conn:
        event_order = conn.execute(
            select(events.c.order_id).where(events.c.ce_id == f"return/{RETURN}/declined")
        ).scalar_one()
        remembered = conn.execute(select(returns.c.order_id, returns.c.status)).all()
    assert event_order == ORDER
    assert [tuple(r) for r in remembered] == [(ORDER, "declined")]

    timeline = client.get(f"/api/orders/{ORDER}/timeline").json()["entries"]
    assert {"return.status_changed"} <= {e["type"] for e in timeline if e["entry"] == "event"}
    declined_events = [e for e in timeline if e["entry"] == "event" and e["status"] == "declined"]
    assert len(declined_events) == 1
    assert {e["channel"] for e in timeline if e.get("kind") == "return_declined"} == {
        "email",
        "in_app",
    }


def test_a_decline_whose_order_is_unknown_is_kept_and_says_why(
    client: TestClient, shop: Runtime
) -> None:
    shopify(client, "orders/create", sample("orders_create"))
    shopify(client, "returns/decline", sample("returns_decline"))  # nothing before it

    [email] = decline_emails(shop)
    assert email["status"] == "suppressed"
    assert email["reason"] == f"return {RETURN} names no order and none is known"
    with shop.engine.connect() as conn:
        stored = conn.execute(
            select(events.c.type).where(events.c.ce_id == f"return/{RETURN}/declined")
        ).scalar_one()
        remembered = conn.execute(select(returns)).all()
    assert stored == "return.status_changed"
    assert remembered == []


def test_later_return_events_of_a_strict_shop_are_accepted_and_resolved(
    client: TestClient, shop: Runtime
) -> None:
    # No Shopify integration can send the order of a decline, so strictness cannot ask it.
    shop.webhooks.strictness = Strictness({"shopify": "strict"})
    shopify(client, "orders/create", sample("orders_create"))
    shopify(client, "returns/request", sample("returns_request"))
    shopify(client, "returns/decline", sample("returns_decline"))
    [email] = decline_emails(shop)
    assert (email["status"], email["order_id"]) == ("queued", ORDER)
