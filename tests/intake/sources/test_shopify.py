"""POST /api/intake/shopify: HMAC verification, topic mapping, idempotency, strictness."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import Row, select

from tidings.db.schema import delivery_jobs, events, notifications, rejects
from tidings.intake.webhooks import Strictness
from tidings.runtime import Runtime

URL = "/api/intake/shopify"
SECRET = "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"
SHOP = "lumen-atelier.myshopify.com"
SOURCE = f"shopify:{SHOP}"
SAMPLES = Path(__file__).parent / "samples" / "shopify"
ORDER = "5820982911946154"


def sample(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SAMPLES / f"{name}.json").read_text())
    return data


def sign(body: bytes, secret: str = SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def deliver(
    client: TestClient,
    topic: str,
    payload: dict[str, Any] | bytes,
    *,
    shop: str = SHOP,
    secret: str = SECRET,
    signature: str | None = None,
    event_id: str | None = None,
) -> Response:
    """One delivery as Shopify makes it: every call is a new delivery (new webhook id)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {
        "Authorization": "",
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": shop,
        "X-Shopify-Hmac-Sha256": signature or sign(body, secret),
        "X-Shopify-API-Version": "2025-01",
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        "X-Shopify-Event-Id": event_id or str(uuid.uuid4()),
        "X-Shopify-Triggered-At": "2026-11-22T09:00:00.123456789Z",
    }
    return client.post(URL, content=body, headers=headers)


def stored(runtime: Runtime) -> list[Row[Any]]:
    with runtime.engine.connect() as conn:
        return list(conn.execute(select(events).order_by(events.c.ce_id)).all())


def from_shop(runtime: Runtime) -> list[Row[Any]]:
    """The events the adapter made, without those the engine concludes from them (a
    backorder when stock runs out), which it stores under its own source."""
    return [row for row in stored(runtime) if row.source == SOURCE]


def kept(runtime: Runtime) -> list[Row[Any]]:
    with runtime.engine.connect() as conn:
        return list(conn.execute(select(rejects)).all())


@pytest.fixture
def shopify(runtime: Runtime) -> Runtime:
    runtime.webhooks.secrets["shopify"] = SECRET  # type: ignore[index]
    return runtime


def accepted_one(response: Response) -> None:
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (1, 0, 0), body


# -- each mapped topic ----------------------------------------------------------------


def test_orders_create_becomes_order_placed(client: TestClient, shopify: Runtime) -> None:
    accepted_one(deliver(client, "orders/create", sample("orders_create")))
    [row] = stored(shopify)
    assert (row.source, row.ce_id, row.type) == (SOURCE, f"order/{ORDER}/placed", "order.placed")
    assert row.subject == f"order/{ORDER}"
    assert row.order_id == ORDER
    assert row.time == datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    data = row.data
    assert data["order_number"] == "#1042"
    assert (data["currency"], data["total"]) == ("EUR", 10150)
    assert data["customer"] == {
        "id": "115310627314723954",
        "name": "Camille Durand",
        "email": "camille@example.fr",
        "phone": "+33612345678",
        "locale": "fr-FR",
        "time_zone": None,
        "segment": None,
    }
    assert data["lines"] == [
        {"sku": "LAMP-01", "name": "Lampe Opaline", "quantity": 1, "unit_price": 8900},
        {"sku": "BULB-4", "name": "Ampoule E27 - 4 W", "quantity": 2, "unit_price": 375},
    ]


def test_orders_cancelled_becomes_order_canceled(client: TestClient, shopify: Runtime) -> None:
    accepted_one(deliver(client, "orders/cancelled", sample("orders_cancelled")))
    [row] = stored(shopify)
    assert (row.ce_id, row.type) == (f"order/{ORDER}/canceled", "order.canceled")
    assert row.time == datetime(2026, 11, 21, 14, 30, tzinfo=UTC)
    assert (row.data["order_id"], row.data["reason"]) == (ORDER, "customer")


def test_refunds_create_counts_only_settled_refund_transactions(
    client: TestClient, shopify: Runtime
) -> None:
    accepted_one(deliver(client, "refunds/create", sample("refunds_create")))
    [row] = stored(shopify)
    assert (row.ce_id, row.type) == ("refund/890088186047892319/authorized", "refund.authorized")
    data = row.data
    # 12.50 succeeded; the declined 40.00 attempt is not money given back.
    assert (data["amount"], data["currency"]) == (1250, "EUR")
    assert data["order_id"] == ORDER
    assert data["refund_id"] == "890088186047892319"
    assert data["payment_id"] == "389404469"
    assert data["method"] == "card"
    assert data["reason"] == "Abat-jour fissuré à la livraison"
    assert data["authorized_at"] == "2026-11-22T10:00:00+01:00"
    assert row.time == datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def test_refund_without_transactions_is_its_lines_with_tax(
    client: TestClient, shopify: Runtime
) -> None:
    payload = sample("refunds_create")
    payload["transactions"] = []
    accepted_one(deliver(client, "refunds/create", payload))
    [row] = stored(shopify)
    assert (row.data["amount"], row.data["currency"]) == (8900 + 1483, "EUR")
    assert row.data["method"] is None


@pytest.mark.parametrize(
    ("topic", "name", "ce_id", "status", "carrier_status"),
    [
        ("fulfillments/create", "fulfillments_create", "info_received", "info_received", "success"),
        (
            "fulfillments/update",
            "fulfillments_update",
            "out_for_delivery",
            "out_for_delivery",
            "out_for_delivery",
        ),
    ],
)
def test_fulfillments_become_shipment_status_changes(
    client: TestClient,
    shopify: Runtime,
    topic: str,
    name: str,
    ce_id: str,
    status: str,
    carrier_status: str,
) -> None:
    accepted_one(deliver(client, topic, sample(name)))
    [row] = stored(shopify)
    assert (row.ce_id, row.type) == (f"shipment/4255858131/{ce_id}", "shipment.status_changed")
    data = row.data
    assert (data["status"], data["carrier_status"]) == (status, carrier_status)
    assert (data["order_id"], data["shipment_id"]) == (ORDER, "4255858131")
    assert (data["carrier"], data["tracking_number"]) == ("Colissimo", "6A12345678901")
    assert data["tracking_url"] == (
        "https://www.laposte.fr/outils/suivre-vos-envois?code=6A12345678901"
    )


@pytest.mark.parametrize(
    ("shopify_status", "canonical"),
    [
        ("label_printed", "info_received"),
        ("label_purchased", "info_received"),
        ("confirmed", "info_received"),
        ("in_transit", "in_transit"),
        ("out_for_delivery", "out_for_delivery"),
        ("attempted_delivery", "attempt_failed"),
        ("ready_for_pickup", "available_for_pickup"),
        ("delivered", "delivered"),
        ("failure", "exception"),
    ],
)
def test_shipment_statuses_map_to_the_canonical_taxonomy(
    client: TestClient, shopify: Runtime, shopify_status: str, canonical: str
) -> None:
    payload = sample("fulfillments_update")
    payload["shipment_status"] = shopify_status
    accepted_one(deliver(client, "fulfillments/update", payload))
    [row] = stored(shopify)
    assert (row.data["status"], row.data["carrier_status"]) == (canonical, shopify_status)


def test_a_fulfillment_not_yet_accepted_by_its_service_is_pending(
    client: TestClient, shopify: Runtime
) -> None:
    payload = sample("fulfillments_create")
    payload["status"] = "pending"
    accepted_one(deliver(client, "fulfillments/create", payload))
    assert stored(shopify)[0].data["status"] == "pending"


def test_fulfillment_event_and_fulfillment_update_of_one_status_store_once(
    client: TestClient, shopify: Runtime
) -> None:
    accepted_one(deliver(client, "fulfillment_events/create", sample("fulfillment_events_create")))
    [row] = stored(shopify)
    assert (row.ce_id, row.type) == ("shipment/4255858131/in_transit", "shipment.status_changed")
    assert row.time == datetime(2026, 11, 22, 17, 4, tzinfo=UTC)
    data = row.data
    assert (data["status"], data["carrier_status"]) == ("in_transit", "in_transit")
    assert (data["order_id"], data["shipment_id"]) == (ORDER, "4255858131")
    assert data["estimated_delivery"] == "2026-11-23"
    assert data["message"] == "Votre colis est en cours d'acheminement"

    update = sample("fulfillments_update")
    update["shipment_status"] = "in_transit"
    again = deliver(client, "fulfillments/update", update)
    assert again.json()["duplicate"] == 1
    assert len(stored(shopify)) == 1


def test_inventory_levels_update_names_the_inventory_item(
    client: TestClient, shopify: Runtime
) -> None:
    accepted_one(deliver(client, "inventory_levels/update", sample("inventory_levels_update")))
    [row] = from_shop(shopify)
    assert row.type == "inventory.level_changed"
    assert row.subject is None
    data = row.data
    assert data["sku"] == "inventory_item:271878346596884015"
    assert (data["location"], data["available"]) == ("24826418", 0)

    # Restocked a minute later: a new stock level, still named by the inventory item.
    restocked = {
        **sample("inventory_levels_update"),
        "available": 3,
        "updated_at": "2026-11-21T11:01:03+01:00",
    }
    accepted_one(deliver(client, "inventory_levels/update", restocked))
    assert [(r.data["sku"], r.data["available"]) for r in from_shop(shopify)] == [
        ("inventory_item:271878346596884015", 0),
        ("inventory_item:271878346596884015", 3),
    ]


@pytest.mark.parametrize(
    ("topic", "status", "ce_suffix"),
    [
        ("returns/request", "requested", "requested"),
        ("returns/approve", "approved", "approved"),
        ("returns/close", "closed", "closed"),
        ("returns/cancel", "canceled", "canceled"),
        ("returns/reopen", "approved", "reopened/evt-reopen-1"),
    ],
)
def test_returns_become_return_status_changes(
    client: TestClient, shopify: Runtime, topic: str, status: str, ce_suffix: str
) -> None:
    name = topic.replace("/", "_")
    accepted_one(deliver(client, topic, sample(name), event_id="evt-reopen-1"))
    [row] = stored(shopify)
    assert (row.ce_id, row.type) == (f"return/3547267221/{ce_suffix}", "return.status_changed")
    data = row.data
    assert (data["order_id"], data["return_id"], data["status"]) == (ORDER, "3547267221", status)
    assert data["occurred_at"] == "2026-11-22T09:00:00.123456Z"


def test_a_requested_return_lists_its_lines(client: TestClient, shopify: Runtime) -> None:
    accepted_one(deliver(client, "returns/request", sample("returns_request")))
    data = stored(shopify)[0].data
    assert data["return_reference"] == "#1042-R1"
    assert data["lines"] == [
        {
            "sku": "line_item:141249953214522974",
            "quantity": 1,
            "reason": "defective",
            "note": "L'ampoule ne s'allume pas",
        }
    ]


def test_a_declined_return_names_no_order_and_is_filed_under_the_return(
    client: TestClient, shopify: Runtime
) -> None:
    accepted_one(deliver(client, "returns/decline", sample("returns_decline")))
    [row] = stored(shopify)
    assert row.ce_id == "return/3547267221/declined"
    assert (row.data["status"], row.data["order_id"]) == ("declined", "return:3547267221")
    assert row.subject == "return/3547267221"
    assert row.data["reason"] == "Le délai de retour de 30 jours est dépassé."
    assert row.data["decline_reason"] == "return_period_ended"

    # No integration can send it, so strictness does not ask for it: the engine finds
    # the order an earlier event of the return named.
    shopify.webhooks.strictness = Strictness({"shopify": "strict"})
    again = deliver(client, "returns/decline", sample("returns_decline"))
    assert again.json()["duplicate"] == 1
    assert kept(shopify) == []


@pytest.mark.parametrize("topic", ["returns/close", "returns/cancel", "returns/reopen"])
def test_return_topics_with_a_bare_order_id_name_their_order(
    client: TestClient, shopify: Runtime, topic: str
) -> None:
    payload = sample(topic.replace("/", "_"))
    assert "order" not in payload
    accepted_one(deliver(client, topic, payload))
    [row] = stored(shopify)
    assert (row.data["order_id"], row.subject) == (ORDER, f"order/{ORDER}")


# -- money ----------------------------------------------------------------------------


def _priced(currency: str, amount: str) -> dict[str, Any]:
    order = sample("orders_create")
    money = {"amount": amount, "currency_code": currency}
    order.update(currency=currency, presentment_currency=currency, total_price=amount)
    order["total_price_set"] = {"shop_money": money, "presentment_money": money}
    order["line_items"] = [order["line_items"][0]]
    line = order["line_items"][0]
    line.update(price=amount, price_set={"shop_money": money, "presentment_money": money})
    return order


@pytest.mark.parametrize(
    ("currency", "amount", "minor"),
    [("EUR", "12.50", 1250), ("JPY", "1250", 1250), ("BHD", "1.250", 1250), ("EUR", "0.1", 10)],
)
def test_decimal_money_becomes_exact_minor_units(
    client: TestClient, shopify: Runtime, currency: str, amount: str, minor: int
) -> None:
    accepted_one(deliver(client, "orders/create", _priced(currency, amount)))
    data = stored(shopify)[0].data
    assert (data["currency"], data["total"], data["lines"][0]["unit_price"]) == (
        currency,
        minor,
        minor,
    )


def test_money_finer_than_the_currency_allows_is_refused(
    client: TestClient, shopify: Runtime
) -> None:
    response = deliver(client, "orders/create", _priced("JPY", "12.50"))
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_amount"
    assert stored(shopify) == []


def test_shop_money_is_used_when_the_payload_has_no_presentment_money(
    client: TestClient, shopify: Runtime
) -> None:
    order = sample("orders_create")
    del order["total_price_set"]
    for line in order["line_items"]:
        del line["price_set"]
    accepted_one(deliver(client, "orders/create", order))
    data = stored(shopify)[0].data
    assert (data["currency"], data["total"]) == ("EUR", 10150)
    assert [line["unit_price"] for line in data["lines"]] == [8900, 375]


# -- idempotency ----------------------------------------------------------------------


def test_a_redelivery_stores_nothing_new(client: TestClient, shopify: Runtime) -> None:
    order = sample("orders_create")
    accepted_one(deliver(client, "orders/create", order))
    again = deliver(client, "orders/create", order)
    assert again.status_code == 200
    assert (again.json()["accepted"], again.json()["duplicate"]) == (0, 1)
    assert len(stored(shopify)) == 1


def snapshot(runtime: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    """What a delivery can leave behind: events, messages, their jobs, kept rejects."""
    queries = {
        "events": select(events.c.source, events.c.ce_id),
        "notifications": select(notifications.c.id, notifications.c.kind, notifications.c.status),
        "jobs": select(delivery_jobs.c.id, delivery_jobs.c.status),
        "rejects": select(rejects.c.id),
    }
    with runtime.engine.connect() as conn:
        return {name: sorted(tuple(row) for row in conn.execute(q)) for name, q in queries.items()}


@pytest.mark.parametrize(
    ("topic", "kind"),
    [("returns/reopen", "return_approved"), ("returns/request", "return_requested")],
)
def test_redelivering_the_same_return_webhook_stores_and_queues_nothing_new(
    client: TestClient, shopify: Runtime, topic: str, kind: str
) -> None:
    accepted_one(deliver(client, "orders/create", sample("orders_create")))
    # A redelivery is the same request again: same body, signature, webhook and event ids.
    body = json.dumps(sample(topic.replace("/", "_"))).encode()
    headers = {
        "Authorization": "",
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": SHOP,
        "X-Shopify-Hmac-Sha256": sign(body),
        "X-Shopify-API-Version": "2025-01",
        "X-Shopify-Webhook-Id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
        "X-Shopify-Event-Id": "98880550-7158-44d4-b7cd-2c97c8a091b5",
        "X-Shopify-Triggered-At": "2026-11-22T09:00:00.123456789Z",
    }
    before = snapshot(shopify)
    accepted_one(client.post(URL, content=body, headers=headers))
    first = snapshot(shopify)
    # The first delivery was news: one event, and the customer's message on its way.
    assert len(first["events"]) == len(before["events"]) + 1
    told = [n for n in first["notifications"] if n not in before["notifications"]]
    assert {(k, status) for _, k, status in told} == {(kind, "queued")}, told
    assert len(first["jobs"]) > len(before["jobs"])

    again = client.post(URL, content=body, headers=headers)
    assert again.status_code == 200, again.text
    assert (again.json()["accepted"], again.json()["duplicate"], again.json()["rejected"]) == (
        0,
        1,
        0,
    )
    assert snapshot(shopify) == first


# -- refusals -------------------------------------------------------------------------


def test_a_tampered_body_is_refused_and_kept(client: TestClient, shopify: Runtime) -> None:
    body = json.dumps(sample("orders_create")).encode()
    tampered = body.replace(b'"101.50"', b'"1.50"')
    assert tampered != body
    response = deliver(client, "orders/create", tampered, signature=sign(body))
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "invalid_signature"
    assert stored(shopify) == []
    [reject] = kept(shopify)
    assert (reject.channel, reject.code, reject.status) == ("shopify", "invalid_signature", "open")
    assert reject.payload == tampered.decode()
    assert reject.headers["x-shopify-topic"] == "orders/create"
    assert "authorization" not in reject.headers


def test_a_wrong_secret_is_refused(client: TestClient, shopify: Runtime) -> None:
    response = deliver(client, "orders/create", sample("orders_create"), secret="not-the-secret")
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_signature"
    assert [r.code for r in kept(shopify)] == ["invalid_signature"]


def test_a_missing_signature_is_refused(client: TestClient, shopify: Runtime) -> None:
    response = deliver(client, "orders/create", sample("orders_create"), signature="%%%")
    assert response.status_code == 401
    assert stored(shopify) == []


def test_without_a_secret_webhooks_are_not_accepted(client: TestClient, runtime: Runtime) -> None:
    runtime.webhooks.secrets["shopify"] = None  # type: ignore[index]
    response = deliver(client, "orders/create", sample("orders_create"))
    assert response.status_code == 503
    assert response.json()["code"] == "source_not_configured"
    assert stored(runtime) == []
    assert [r.code for r in kept(runtime)] == ["source_not_configured"]


def test_an_unmappable_payload_is_422_and_kept(client: TestClient, shopify: Runtime) -> None:
    refund = sample("refunds_create")
    del refund["order_id"]
    response = deliver(client, "refunds/create", refund)
    assert response.status_code == 422
    assert (response.json()["code"], response.json()["field"]) == ("invalid_payload", "order_id")
    assert stored(shopify) == []
    [reject] = kept(shopify)
    assert (reject.code, reject.field) == ("invalid_payload", "order_id")
    assert json.loads(reject.payload) == refund


def test_an_unknown_shipment_status_is_kept_for_replay(
    client: TestClient, shopify: Runtime
) -> None:
    payload = sample("fulfillment_events_create")
    payload["status"] = "teleported"
    response = deliver(client, "fulfillment_events/create", payload)
    assert response.status_code == 422
    assert (response.json()["code"], response.json()["field"]) == ("unknown_status", "status")
    assert len(kept(shopify)) == 1


def test_unknown_topics_are_acknowledged_and_not_stored(
    client: TestClient, shopify: Runtime
) -> None:
    response = deliver(client, "products/update", {"id": 632910392, "title": "Lampe Opaline"})
    assert response.status_code == 200
    assert response.json() == {
        "accepted": 0,
        "duplicate": 0,
        "rejected": 0,
        "deferred": 0,
        "results": [],
    }
    assert stored(shopify) == []
    assert kept(shopify) == []


# -- strictness -----------------------------------------------------------------------


def test_strictness_per_shop_decides_on_a_missing_locale(
    client: TestClient, shopify: Runtime
) -> None:
    shopify.webhooks.strictness = Strictness(
        {"shopify": "lenient", "shopify:strict-shop.myshopify.com": "strict"}
    )
    order = copy.deepcopy(sample("orders_create"))
    del order["customer_locale"]

    accepted_one(deliver(client, "orders/create", order))
    [row] = stored(shopify)
    assert row.data["customer"]["locale"] is None

    refused = deliver(client, "orders/create", order, shop="strict-shop.myshopify.com")
    assert refused.status_code == 422
    assert (refused.json()["code"], refused.json()["field"]) == ("missing_field", "customer_locale")
    assert len(stored(shopify)) == 1
    [reject] = kept(shopify)
    assert (reject.channel, reject.code) == ("shopify", "missing_field")


def test_a_phone_that_is_not_e164_is_dropped_when_lenient_and_refused_when_strict(
    client: TestClient, shopify: Runtime
) -> None:
    order = sample("orders_create")
    order["phone"] = "06 12 34 56 78"
    accepted_one(deliver(client, "orders/create", order))
    assert stored(shopify)[0].data["customer"]["phone"] is None

    shopify.webhooks.strictness = Strictness({"shopify": "strict"})
    refused = deliver(client, "orders/create", order)
    assert (refused.status_code, refused.json()["code"]) == (422, "invalid_phone")


def test_a_guest_order_is_identified_by_its_email(client: TestClient, shopify: Runtime) -> None:
    order = sample("orders_create")
    order["customer"] = None
    accepted_one(deliver(client, "orders/create", order))
    customer = stored(shopify)[0].data["customer"]
    assert (customer["id"], customer["name"]) == ("email:camille@example.fr", None)
