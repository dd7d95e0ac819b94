"""Push devices over HTTP and the queries delivery uses: register, list, remove."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.support.events import CAMILLE, JORDAN, order_placed
from tidings.api.keys import create_key
from tidings.audit.chain import verify
from tidings.db.schema import audit_log, devices
from tidings.db.types import utcnow
from tidings.delivery.devices import (
    active_device_ids,
    active_devices,
    address_hash,
    remove_device,
)
from tidings.engine.recipients import PUSH_DEVICES, recipient_from_row
from tidings.runtime import Runtime

STRUCTURED = {"Content-Type": "application/cloudevents+json"}
FCM_TOKEN = "eXaMpLe:APA91bFakeButWellFormedRegistrationToken_0123456789-abc"


def post_events(client: TestClient, *events: dict[str, object]) -> None:
    for event in events:
        response = client.post("/api/events", content=json.dumps(event), headers=STRUCTURED)
        assert response.status_code in (200, 202), response.text


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def browser_subscription(
    endpoint: str = "https://updates.push.services.mozilla.com/wpush/v2/x",
) -> dict[str, Any]:
    point = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    return {
        "endpoint": endpoint,
        "expirationTime": None,
        "keys": {"p256dh": b64url(point), "auth": b64url(b"0123456789abcdef")},
    }


def url(customer_id: str = CAMILLE["id"]) -> str:
    return f"/api/customers/{customer_id}/devices"


def test_register_list_and_remove(client: TestClient, runtime: Runtime) -> None:
    post_events(client, order_placed("1042", CAMILLE))
    first = client.post(url(), json={"kind": "fcm", "token": FCM_TOKEN})
    assert first.status_code == 201, first.text
    device_id = first.json()["id"]
    assert first.json()["kind"] == "fcm"
    assert FCM_TOKEN not in first.text  # the list shows a hint, not the credential

    again = client.post(url(), json={"kind": "fcm", "token": f" {FCM_TOKEN} "})
    assert again.status_code == 200
    assert again.json()["id"] == device_id

    sub = browser_subscription()
    web = client.post(url(), json={"kind": "webpush", "subscription": sub})
    assert web.status_code == 201, web.text
    assert web.json()["hint"] == "updates.push.services.mozilla.com"
    # The same subscription with padded keys and members in another order is the same device.
    keys = sub["keys"]
    reordered = {"keys": {"auth": keys["auth"] + "==", "p256dh": keys["p256dh"] + "="}}
    same = client.post(
        url(), json={"subscription": {**reordered, "endpoint": sub["endpoint"]}, "kind": "webpush"}
    )
    assert (same.status_code, same.json()["id"]) == (200, web.json()["id"])

    listed = client.get(url()).json()
    assert listed["customer_id"] == CAMILLE["id"]
    assert [d["id"] for d in listed["devices"]] == [device_id, web.json()["id"]]

    removed = client.delete(f"{url()}/{device_id}")
    assert removed.status_code == 204
    assert [d["id"] for d in client.get(url()).json()["devices"]] == [web.json()["id"]]
    assert client.delete(f"{url()}/{device_id}").status_code == 204  # already gone: no change
    with runtime.engine.connect() as conn:
        row = conn.execute(select(devices).where(devices.c.id == device_id)).mappings().one()
        actions = conn.execute(select(audit_log.c.action)).scalars().all()
        assert verify(conn).ok
    assert row["removed_reason"] == "removed by customer"
    assert row["removed_at"] is not None
    assert row["address"] == FCM_TOKEN
    assert row["address_hash"] == address_hash(FCM_TOKEN)
    assert actions.count("device.registered") == 2
    assert actions.count("device.removed") == 1

    # Registering a removed device again brings it back under its id.
    back = client.post(url(), json={"kind": "fcm", "token": FCM_TOKEN})
    assert (back.status_code, back.json()["id"]) == (201, device_id)
    assert len(client.get(url()).json()["devices"]) == 2


def test_devices_are_per_customer(client: TestClient) -> None:
    post_events(client, order_placed("1042", CAMILLE), order_placed("2001", JORDAN))
    mine = client.post(url(), json={"kind": "fcm", "token": FCM_TOKEN}).json()["id"]
    theirs = client.post(url(JORDAN["id"]), json={"kind": "fcm", "token": FCM_TOKEN})
    assert theirs.status_code == 201
    assert theirs.json()["id"] != mine
    stranger = client.delete(f"{url(JORDAN['id'])}/{mine}")
    assert stranger.status_code == 404
    assert stranger.json()["code"] == "device_not_found"
    assert len(client.get(url()).json()["devices"]) == 1
    assert client.post(url("ghost"), json={"kind": "fcm", "token": "t"}).status_code == 404
    assert client.get(url("ghost")).status_code == 404


def test_invalid_devices_are_problems_with_code_and_field(client: TestClient) -> None:
    post_events(client, order_placed("1042", CAMILLE))
    point = browser_subscription()["keys"]
    cases = [
        ({"kind": "fcm"}, "invalid_fcm_token", "token"),
        ({"kind": "fcm", "token": ""}, "invalid_fcm_token", "token"),
        ({"kind": "fcm", "token": "x" * 4097}, "invalid_fcm_token", "token"),
        ({"kind": "fcm", "token": "with space"}, "invalid_fcm_token", "token"),
        (
            {"kind": "fcm", "token": "t", "subscription": browser_subscription()},
            "invalid_device",
            "subscription",
        ),
        ({"kind": "webpush"}, "invalid_push_subscription", "subscription"),
        (
            {"kind": "webpush", "subscription": browser_subscription("http://push.example/x")},
            "invalid_push_endpoint",
            "subscription.endpoint",
        ),
        (
            {
                "kind": "webpush",
                "subscription": {
                    "endpoint": "https://push.example/x",
                    "keys": {**point, "p256dh": b64url(b"\x04" + bytes(64))},
                },
            },
            "invalid_push_key",
            "subscription.keys.p256dh",
        ),
        (
            {
                "kind": "webpush",
                "subscription": {
                    "endpoint": "https://push.example/x",
                    "keys": {**point, "auth": b64url(bytes(8))},
                },
            },
            "invalid_push_auth",
            "subscription.keys.auth",
        ),
        ({"kind": "sms", "token": "t"}, "invalid_request", "body.kind"),
        ({"kind": "fcm", "token": "t", "extra": 1}, "invalid_request", "body.extra"),
    ]
    for body, code, field in cases:
        response = client.post(url(), json=body)
        assert response.status_code == 422, body
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert (problem["code"], problem["field"]) == (code, field), body
        assert problem["detail"]
    assert client.get(url()).json()["devices"] == []


def test_scopes(client: TestClient, runtime: Runtime) -> None:
    post_events(client, order_placed("1042", CAMILLE))
    with runtime.engine.begin() as conn:
        _, reader = create_key(
            conn, name="reader", scopes=["customers:read"], actor="t", now=utcnow()
        )
    headers = {"Authorization": f"Bearer {reader}"}
    refused = client.post(url(), json={"kind": "fcm", "token": "t"}, headers=headers)
    assert refused.status_code == 403
    assert refused.json()["required_scope"] == "customers:write"
    assert client.delete(f"{url()}/dev_x", headers=headers).status_code == 403
    assert client.get(url(), headers=headers).status_code == 200
    assert client.get(url(), headers={"Authorization": ""}).status_code == 401


def test_a_dead_token_is_removed_and_push_reaches_only_live_devices(
    client: TestClient, runtime: Runtime
) -> None:
    post_events(client, order_placed("1042", CAMILLE), order_placed("2001", JORDAN))
    live = client.post(url(), json={"kind": "fcm", "token": FCM_TOKEN}).json()["id"]
    dead = client.post(url(), json={"kind": "fcm", "token": "dead-token"}).json()["id"]
    now = utcnow()
    with runtime.engine.begin() as conn:
        assert [d.id for d in active_devices(conn, CAMILLE["id"])] == [live, dead]
        assert remove_device(
            conn, customer_id=CAMILLE["id"], address="dead-token", reason="UNREGISTERED", now=now
        )
        # Twice, or for another customer: nothing to remove.
        again = now + timedelta(seconds=1)
        assert not remove_device(
            conn, customer_id=CAMILLE["id"], address="dead-token", reason="x", now=again
        )
        assert not remove_device(
            conn, customer_id=JORDAN["id"], address=FCM_TOKEN, reason="x", now=again
        )
        [device] = active_devices(conn, CAMILLE["id"])
        ids = active_device_ids(conn, [CAMILLE["id"], JORDAN["id"], "ghost"])
        row = conn.execute(select(devices).where(devices.c.id == dead)).mappings().one()
    assert (device.id, device.kind, device.address) == (live, "fcm", FCM_TOKEN)
    assert ids == {CAMILLE["id"]: (live,)}
    assert row["removed_reason"] == "UNREGISTERED"
    assert row["removed_at"] == now

    with_device = recipient_from_row(CAMILLE | {"preferences": {}}, push_devices=ids[CAMILLE["id"]])
    without = recipient_from_row(JORDAN | {"preferences": {}}, push_devices=())
    assert with_device.push_devices == (live,)
    assert with_device.address_for("push") == PUSH_DEVICES
    assert without.address_for("push") is None
    assert with_device.address_for("email") == CAMILLE["email"]
