"""A whole order life through the real webhook routes, to a real SMTP server and the inbox.

Placed (Shopify) → shipped (Shopify fulfillment) → in transit, again (a redelivery), out
for delivery, delivered (AfterShip) → a late in-transit scan (EasyPost) → return requested,
received, refund authorized, refunded (returns platform). The French customer must get
exactly: shipped, out for delivery (the held in-transit is superseded), delivered, return
requested, return received, refund authorized, refund succeeded — once each, in French.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re
import time
import unicodedata
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from tests.support.smtp import SmtpServer
from tests.support.work import drain
from tidings.api.app import create_app
from tidings.api.keys import create_key
from tidings.config import Settings
from tidings.db.schema import notifications
from tidings.db.types import utcnow
from tidings.engine.rules import BUILTIN_RULES
from tidings.runtime import Runtime, build_runtime

SAMPLES = Path(__file__).parent.parent / "intake" / "sources" / "samples"
SECRETS = {
    "shopify": "shp-secret",
    "aftership": "as-secret",
    "easypost": "ep-secret",
    "returns": "erp-secret",
    "stripe": "whsec_test",
}
ORDER = "5820982911946154"  # Shopify's order id; #1042 is its number
TRACKING = "6A12345678901"
EXPECTED = [
    "shipment_shipped",
    "shipment_out_for_delivery",
    "shipment_delivered",
    "return_requested",
    "return_received",
    "refund_authorized",
    "refund_succeeded",
]


def sample(provider: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SAMPLES / provider / f"{name}.json").read_text())
    return data


@pytest.fixture
def life(
    settings: Settings, engine: Engine, tmp_path: Path
) -> Iterator[tuple[TestClient, Runtime]]:
    # The per-order contact budget is its own feature (property-tested); a real order life
    # spreads over days, so this one gets room for every step.
    rules = yaml.safe_load(BUILTIN_RULES.read_text())
    rules["policy"]["contact_budget_per_order_per_day"] = 20
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    runtime = build_runtime(settings.model_copy(update={"rules_path": path}), engine=engine)
    runtime.webhooks.secrets.update(SECRETS)
    with runtime.engine.begin() as conn:
        _, key = create_key(conn, name="t", scopes=["admin"], actor="t", now=utcnow())
    with TestClient(create_app(runtime)) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        yield client, runtime


def post(client: TestClient, source: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    response = client.post(
        f"/api/intake/{source}",
        content=body,
        headers={"Content-Type": "application/json", "Authorization": "", **headers},
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def shopify(client: TestClient, topic: str, payload: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps(payload).encode()
    mac = base64.b64encode(hmac.new(SECRETS["shopify"].encode(), body, hashlib.sha256).digest())
    return post(
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


def aftership(client: TestClient, tag: str, subtag: str) -> dict[str, Any]:
    payload = sample("aftership", "tracking_update_in_transit")
    payload["msg"].update(tag=tag, subtag=subtag, order_id=ORDER)
    body = json.dumps(payload).encode()
    mac = base64.b64encode(hmac.new(SECRETS["aftership"].encode(), body, hashlib.sha256).digest())
    return post(client, "aftership", body, {"aftership-hmac-sha256": mac.decode()})


def easypost_late_in_transit(client: TestClient) -> dict[str, Any]:
    payload = sample("easypost", "tracker_updated_in_transit")
    payload["result"]["tracking_code"] = TRACKING
    body = json.dumps(payload).encode()
    key = unicodedata.normalize("NFKD", SECRETS["easypost"]).encode()
    signature = "hmac-sha256-hex=" + hmac.new(key, body, hashlib.sha256).hexdigest()
    return post(client, "easypost", body, {"X-Hmac-Signature": signature})


def returns(client: TestClient, status: str, **extra: Any) -> dict[str, Any]:
    payload = {
        **sample("returns", "erp_received"),
        "event_id": f"erp-{status}",
        "order_id": ORDER,
        "status": status,
        "outcome": None,
        **extra,
    }
    body = json.dumps(payload).encode()
    mac = hmac.new(SECRETS["returns"].encode(), body, hashlib.sha256).hexdigest()
    return post(client, "returns", body, {"X-Tidings-Signature": f"sha256={mac}"})


@pytest.mark.slow
def test_a_whole_order_life_reaches_the_customer_once_in_french(
    life: tuple[TestClient, Runtime], smtp_server: SmtpServer
) -> None:
    client, runtime = life
    order = sample("shopify", "orders_create")
    assert shopify(client, "orders/create", order)["accepted"] == 1
    fulfillment = sample("shopify", "fulfillments_create")
    assert shopify(client, "fulfillments/create", fulfillment)["accepted"] == 1

    assert aftership(client, "InTransit", "InTransit_002")["accepted"] == 1
    assert aftership(client, "InTransit", "InTransit_002")["duplicate"] == 1  # redelivered
    assert aftership(client, "OutForDelivery", "OutForDelivery_001")["accepted"] == 1
    assert aftership(client, "Delivered", "Delivered_001")["accepted"] == 1
    assert easypost_late_in_transit(client)["accepted"] == 1  # recorded, then suppressed

    returns(client, "requested")
    returns(client, "received")
    returns(client, "refund_authorized", refund={"amount": 1250, "currency": "EUR"})
    returns(client, "refunded", refund={"amount": 1250, "currency": "EUR"})
    drain(runtime)

    with runtime.engine.connect() as conn:
        emails = {
            row.id: row
            for row in conn.execute(select(notifications).where(notifications.c.channel == "email"))
        }
    mail = smtp_server.parsed()
    received = {str(m["Message-ID"]): m for m in mail}
    assert len(mail) == len(received)  # nothing twice
    got = [emails[mid.strip("<>").split(".")[0]].kind for mid in received]
    assert sorted(got) == sorted(EXPECTED)
    assert {m["To"] for m in mail} == {"camille@example.fr"}
    assert {m["Content-Language"] for m in mail} == {"fr"}

    by_kind = {emails[mid.strip("<>").split(".")[0]].kind: m for mid, m in received.items()}
    refund_text = by_kind["refund_authorized"].get_body(preferencelist=("plain",)).get_content()
    assert "12,50\u00a0€" in refund_text
    assert "1042" in refund_text, refund_text  # the order number, not Shopify's long id
    assert ORDER not in refund_text
    tracking = by_kind["shipment_shipped"].get_body(preferencelist=("plain",)).get_content()
    assert TRACKING in tracking

    in_transit = sorted(
        (row.status, row.reason) for row in emails.values() if row.kind == "shipment_in_transit"
    )
    assert [status for status, _ in in_transit] == ["superseded", "suppressed"]
    assert "superseded by a newer update" in in_transit[0][1]
    assert "older than 'delivered'" in in_transit[1][1]  # the late EasyPost scan

    # The subjects in French, the amount written the French way (comma, narrow space).
    assert str(by_kind["shipment_shipped"]["Subject"]) == "Votre commande n° 1042 a été expédiée"
    assert str(by_kind["refund_authorized"]["Subject"]) == (
        "Votre remboursement de 12,50\u00a0€ pour la commande n°\u00a01042 est en route"
    )

    customer_id = str(order["customer"]["id"])
    inbox = client.get(f"/api/customers/{customer_id}/inbox").json()["messages"]
    # Each expected message once, and the superseded in-transit update not at all. (The
    # inbox is newest first by delivery, and the queue serves the refunds' lane first.)
    assert sorted(m["kind"] for m in inbox) == sorted(EXPECTED)
    assert "shipment_in_transit" not in {m["kind"] for m in inbox}
    for message in inbox:
        # French wording around the order number, where English would say "order #1042"
        # (the refund templates keep "n°" and the number together with a no-break space).
        assert re.search("commande n°[ \u00a0]1042", message["body"]), message
        assert "order" not in message["body"].lower(), message
    inbox_by_kind = {m["kind"]: m for m in inbox}
    assert inbox_by_kind["refund_authorized"]["title"] == "Remboursement de 12,50\u00a0€ en route"
    assert inbox_by_kind["refund_succeeded"]["title"] == "Remboursement de 12,50\u00a0€ effectué"
    assert "12,50\u00a0€" in inbox_by_kind["refund_succeeded"]["body"]
    assert "12.50" not in inbox_by_kind["refund_succeeded"]["body"]
    timeline = client.get(f"/api/orders/{ORDER}/timeline").json()
    kinds_in_timeline = {e["kind"] for e in timeline["entries"] if e["entry"] == "notification"}
    assert set(EXPECTED) | {"shipment_in_transit"} <= kinds_in_timeline


def stripe(client: TestClient, payload: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps(payload).encode()
    stamp = int(time.time())
    mac = hmac.new(SECRETS["stripe"].encode(), f"{stamp}.".encode() + body, hashlib.sha256)
    return post(client, "stripe", body, {"Stripe-Signature": f"t={stamp},v1={mac.hexdigest()}"})


def test_a_stripe_refund_for_a_shopify_order_is_one_french_refund_email(
    life: tuple[TestClient, Runtime], smtp_server: SmtpServer
) -> None:
    client, runtime = life
    shopify(client, "orders/create", sample("shopify", "orders_create"))
    created = sample("stripe", "refund_created")
    created["data"]["object"]["metadata"]["order_id"] = ORDER
    assert stripe(client, created)["accepted"] == 1
    assert stripe(client, created)["duplicate"] == 1  # a redelivery
    drain(runtime)
    [mail] = smtp_server.parsed()
    assert mail["To"] == "camille@example.fr"
    assert "12,50\u00a0€" in mail.get_body(preferencelist=("plain",)).get_content()


def test_every_sample_payload_this_life_uses_is_accepted(
    life: tuple[TestClient, Runtime],
) -> None:
    """A guard for the fixture data above: each provider sample the order life posts
    still maps to a canonical event, through its own signed route."""
    client, _ = life
    posted = {
        "shopify orders/create": shopify(
            client, "orders/create", copy.deepcopy(sample("shopify", "orders_create"))
        ),
        "shopify fulfillments/create": shopify(
            client, "fulfillments/create", copy.deepcopy(sample("shopify", "fulfillments_create"))
        ),
        "aftership tracking_update_in_transit": aftership(client, "InTransit", "InTransit_002"),
        "easypost tracker_updated_in_transit": easypost_late_in_transit(client),
        "returns erp_received": returns(client, "received"),
        "stripe refund_created": stripe(client, sample("stripe", "refund_created")),
    }
    for name, result in posted.items():
        assert (result["accepted"], result["duplicate"], result["rejected"]) == (1, 0, 0), (
            name,
            result,
        )
