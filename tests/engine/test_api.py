"""Preferences, subscriptions and the order timeline over HTTP."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from tests.support.events import CAMILLE, JORDAN, cloudevent, order_placed, refund_authorized
from tidings.runtime import Runtime

STRUCTURED = {"Content-Type": "application/cloudevents+json"}


def post(client: TestClient, event: dict[str, object]) -> None:
    response = client.post("/api/events", content=json.dumps(event), headers=STRUCTURED)
    assert response.status_code in (200, 202), response.text


def test_preferences_round_trip_and_critical_categories_stay_on(client: TestClient) -> None:
    post(client, order_placed("1042", CAMILLE))
    url = f"/api/customers/{CAMILLE['id']}/preferences"
    before = client.get(url).json()
    assert before["locale"] == "fr"
    assert before["quiet_hours"] == "21:00-08:00"  # the store's default
    assert before["channels"] == {"email": True, "sms": True, "push": True, "in_app": True}
    assert "refund" in before["always_on"]

    changed = client.put(
        url,
        json={
            "quiet_hours": "22:30-07:00",
            "channels": {"sms": False},
            "opted_out": ["shipping"],
            "digest": {"categories": ["inventory"], "hour": 19},
            "phone": "+33698765432",
        },
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["quiet_hours"] == "22:30-07:00"
    assert body["channels"]["sms"] is False
    assert body["opted_out"] == ["shipping"]
    assert body["digest"] == {"categories": ["inventory"], "hour": 19}
    assert body["phone"] == "+33698765432"
    assert body["locale"] == "fr"  # untouched fields keep their value
    assert client.get(url).json() == body

    off = client.put(url, json={"quiet_hours": "off"}).json()
    assert off["quiet_hours"] is None


def test_bad_preferences_are_clear_problems(client: TestClient) -> None:
    post(client, order_placed("1042", CAMILLE))
    url = f"/api/customers/{CAMILLE['id']}/preferences"
    for body, field in (
        ({"opted_out": ["gossip"]}, "opted_out"),
        ({"phone": "06 12 34 56 78"}, "phone"),  # locale "fr" names no country
        ({"email": "camille@"}, "email"),
        ({"quiet_hours": "late"}, "body.quiet_hours"),
        ({"time_zone": "Paris"}, "body.time_zone"),
        ({"channels": {"fax": True}}, "body.channels.fax.[key]"),
    ):
        response = client.put(url, json=body)
        assert response.status_code == 422, body
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["field"] == field
    assert client.get("/api/customers/nobody/preferences").status_code == 404


def test_addresses_are_stored_normalized(client: TestClient) -> None:
    post(client, order_placed("1042", CAMILLE))
    post(client, order_placed("2001", JORDAN))
    camille = f"/api/customers/{CAMILLE['id']}/preferences"
    jordan = f"/api/customers/{JORDAN['id']}/preferences"

    changed = client.put(
        camille, json={"email": " Camille.D@EXAMPLE.FR ", "phone": "+33 6 98 76 54 32"}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["email"] == "Camille.D@example.fr"
    assert changed.json()["phone"] == "+33698765432"

    # A national number is read in the country the locale names, also one set alongside.
    national = client.put(camille, json={"locale": "fr-FR", "phone": "06 12 34 56 78"})
    assert national.status_code == 200, national.text
    assert national.json()["phone"] == "+33612345678"
    us = client.put(jordan, json={"phone": "(415) 555-2671"})  # profile locale en-US
    assert us.json()["phone"] == "+14155552671"
    assert client.get(jordan).json()["phone"] == "+14155552671"


def test_invalid_addresses_say_what_to_send_and_change_nothing(client: TestClient) -> None:
    post(client, order_placed("1042", CAMILLE))
    url = f"/api/customers/{CAMILLE['id']}/preferences"
    before = client.get(url).json()
    for body, code, field in (
        ({"phone": "+33 1 23"}, "invalid_phone", "phone"),
        ({"phone": "call me", "locale": "fr-FR"}, "invalid_phone", "phone"),
        ({"phone": "+999 123456789"}, "invalid_phone", "phone"),
        ({"email": "camille at example.fr"}, "invalid_email", "email"),
        ({"email": "camille@localhost", "quiet_hours": "off"}, "invalid_email", "email"),
    ):
        response = client.put(url, json=body)
        assert response.status_code == 422, body
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert (problem["code"], problem["field"]) == (code, field), body
        assert "send" in problem["detail"].lower(), problem
    assert client.get(url).json() == before


def test_opted_out_customer_still_gets_refunds_and_the_timeline_says_why(
    client: TestClient, runtime: Runtime
) -> None:
    post(client, order_placed("1042", CAMILLE))
    client.put(
        f"/api/customers/{CAMILLE['id']}/preferences", json={"opted_out": ["refund", "shipping"]}
    )
    post(client, refund_authorized("1042"))
    post(
        client,
        cloudevent(
            "shipment.status_changed",
            {
                "order_id": "1042",
                "shipment_id": "shp_1",
                "tracking_number": "6A1",
                "status": "out_for_delivery",
            },
        ),
    )
    timeline = client.get("/api/orders/1042/timeline").json()
    assert timeline["order_number"] == "#1042"
    types = [e["type"] for e in timeline["entries"] if e["entry"] == "event"]
    assert types == ["order.placed", "refund.authorized", "shipment.status_changed"]
    messages = {
        (e["kind"], e["channel"]): e for e in timeline["entries"] if e["entry"] == "notification"
    }
    assert messages[("refund_authorized", "email")]["status"] == "queued"
    shipment = messages[("shipment_out_for_delivery", "email")]
    assert shipment["status"] == "suppressed"
    assert shipment["reason"] == "the customer opted out of the 'shipping' category"
    assert shipment["rule"] == "shipment-out-for-delivery"
    assert client.get("/api/orders/nope/timeline").status_code == 404


def test_subscriptions(client: TestClient) -> None:
    post(client, order_placed("1042", CAMILLE))
    body = {"customer_id": CAMILLE["id"], "sku": "LAMP-01"}
    first = client.post("/api/inventory/subscriptions", json=body)
    assert first.status_code == 201
    assert first.json()["status"] == "subscribed"
    again = client.post("/api/inventory/subscriptions", json=body)
    assert (again.status_code, again.json()["status"]) == (200, "already_subscribed")
    unknown = client.post(
        "/api/inventory/subscriptions", json={"customer_id": "ghost", "sku": "LAMP-01"}
    )
    assert unknown.status_code == 404
