"""Push from event to device: rules, the devices API, the worker, both push services.

FCM runs against the loopback stand-in of ``providers/test_push_fcm`` (Google's token
endpoint verifying the service-account JWT, and messages:send answering as the HTTP v1 API
documents, UNREGISTERED included). Web Push runs against the push service of
``providers/test_push_webpush`` (VAPID checked, payload decrypted as the browser would),
served over TLS: the devices API only accepts an https:// push resource (RFC 8030
section 8), so the worker reaches it as it would a real one, trusting a test CA.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.delivery.providers.test_push_fcm import Google, service_account
from tests.delivery.providers.test_push_webpush import PushService, raw_key, subscription
from tests.support.events import CAMILLE, JORDAN, order_placed, refund_authorized
from tests.support.http_stub import Handler, HttpStub
from tests.support.smtp import SmtpServer
from tests.support.tls import loopback_tls
from tests.support.work import drain
from tidings.audit.chain import verify
from tidings.config import Settings
from tidings.db.schema import audit_log, devices, notifications
from tidings.delivery.webpush_crypto import public_key_bytes
from tidings.runtime import Runtime

STRUCTURED = {"Content-Type": "application/cloudevents+json"}
FCM_TOKEN = "eXaMpLe:APA91bFakeButWellFormedRegistrationToken_0123456789-abc"
RULES = """
categories:
  refund: {critical: true}
policy:
  quiet_hours: null
rules:
  - {id: refund-authorized, event: refund.authorized, kind: refund_authorized,
     category: refund, priority: critical, channels: [push, email]}
"""


class TlsStub(HttpStub):
    """The HTTP stub behind TLS: each accepted connection is wrapped before it is served."""

    def __init__(self, handler: Handler, *, context: ssl.SSLContext) -> None:
        super().__init__(handler)
        self._context = context

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> TlsStub:
        super().start()
        server = self._server
        assert server is not None
        accept = server.get_request

        def get_request() -> tuple[Any, Any]:
            sock, address = accept()
            sock.settimeout(5.0)  # a client that never finishes the handshake
            wrapped = self._context.wrap_socket(sock, server_side=True)
            wrapped.settimeout(None)
            return wrapped, address

        server.get_request = get_request  # type: ignore[method-assign]
        return self


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def vapid_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def fcm(rsa_key: rsa.RSAPrivateKey) -> Iterator[tuple[Google, HttpStub]]:
    google = Google(public_key=rsa_key.public_key(), registered={FCM_TOKEN})
    stub = HttpStub(google.handle).start()
    google.token_uri = f"{stub.url}/token"
    yield google, stub
    stub.stop()


@pytest.fixture
def web_push(
    vapid_key: ec.EllipticCurvePrivateKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[PushService, HttpStub]]:
    ca_file, context = loopback_tls(tmp_path)
    # httpx reads it when the worker's client is made (trust_env).
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    push = PushService(
        vapid_public=public_key_bytes(vapid_key),
        ua_private=ec.generate_private_key(ec.SECP256R1()),
        auth=b"0123456789abcdef",
    )
    stub = TlsStub(push.handle, context=context).start()
    push.origin = stub.url
    yield push, stub
    stub.stop()


@pytest.fixture
def settings(
    settings: Settings,
    tmp_path: Path,
    rsa_key: rsa.RSAPrivateKey,
    vapid_key: ec.EllipticCurvePrivateKey,
    fcm: tuple[Google, HttpStub],
    web_push: tuple[PushService, HttpStub],
) -> Settings:
    google, fcm_stub = fcm
    account = tmp_path / "service-account.json"
    account.write_text(json.dumps(service_account(rsa_key, google.token_uri)), encoding="utf-8")
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    env = {
        "TIDINGS_PUSH_PROVIDERS": "fcm,webpush",
        "TIDINGS_FCM_SERVICE_ACCOUNT_FILE": str(account),
        "TIDINGS_FCM_API_URL": fcm_stub.url,
        "TIDINGS_VAPID_PRIVATE_KEY": raw_key(vapid_key),
        "TIDINGS_VAPID_SUBJECT": "mailto:ops@shop.example",
        "TIDINGS_RULES_PATH": str(rules),
    }
    # Read as an operator sets them: from the environment, through validation.
    configured = {name.removeprefix("TIDINGS_").lower() for name in env}
    base = {k: v for k, v in settings.model_dump().items() if k not in configured}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        return Settings(**base)


def post(client: TestClient, *events: dict[str, object]) -> None:
    for event in events:
        response = client.post("/api/events", content=json.dumps(event), headers=STRUCTURED)
        assert response.status_code in (200, 202), response.text


def devices_url(customer_id: str = CAMILLE["id"]) -> str:
    return f"/api/customers/{customer_id}/devices"


def push_notifications(runtime: Runtime) -> list[Any]:
    with runtime.engine.connect() as conn:
        return list(
            conn.execute(
                select(notifications)
                .where(notifications.c.channel == "push")
                .order_by(notifications.c.created_at, notifications.c.id)
            ).all()
        )


def second_refund(order_id: str) -> dict[str, Any]:
    event = refund_authorized(order_id, id=f"refund-{order_id}-2", amount=300)
    event["data"]["refund_id"] = f"re_{order_id}_2"  # another refund: news of its own
    return event


def test_push_reaches_every_device_and_a_dead_token_is_removed(
    client: TestClient,
    runtime: Runtime,
    smtp_server: SmtpServer,
    fcm: tuple[Google, HttpStub],
    web_push: tuple[PushService, HttpStub],
) -> None:
    google, _ = fcm
    push, push_stub = web_push
    post(client, order_placed("1042", CAMILLE))
    fcm_device = client.post(devices_url(), json={"kind": "fcm", "token": FCM_TOKEN})
    assert fcm_device.status_code == 201, fcm_device.text
    browser = json.loads(subscription(push, push_stub, "camille-laptop"))
    web_device = client.post(devices_url(), json={"kind": "webpush", "subscription": browser})
    assert web_device.status_code == 201, web_device.text

    post(client, refund_authorized("1042", customer=CAMILLE))
    drain(runtime)

    [first] = push_notifications(runtime)
    assert first.status == "sent"
    [sent_fcm] = google.sent
    assert sent_fcm["token"] == FCM_TOKEN
    assert sent_fcm["data"]["notification_id"] == f"{first.id}.push"
    [sent_web] = push.delivered
    assert sent_web["notification_id"] == f"{first.id}.push"
    assert [r.path for r in push_stub.taken()] == ["/push/camille-laptop"]
    [mail] = smtp_server.parsed()
    assert mail["To"] == CAMILLE["email"]

    # The app was uninstalled: FCM now answers UNREGISTERED for its token.
    google.registered.discard(FCM_TOKEN)
    post(client, second_refund("1042"))
    drain(runtime)

    _, second = push_notifications(runtime)
    assert second.status == "sent"
    delivered = [m["notification_id"] for m in push.delivered]
    assert delivered == [f"{first.id}.push", f"{second.id}.push"]
    assert len(google.sent) == 1
    listed = client.get(devices_url()).json()["devices"]
    assert [d["id"] for d in listed] == [web_device.json()["id"]]
    with runtime.engine.connect() as conn:
        row = conn.execute(
            select(devices.c.removed_at, devices.c.removed_reason).where(
                devices.c.id == fcm_device.json()["id"]
            )
        ).one()
        removals = conn.execute(
            select(audit_log.c.subject_id, audit_log.c.detail).where(
                audit_log.c.action == "device.removed"
            )
        ).all()
        assert verify(conn).ok
    assert row.removed_at is not None
    assert "UNREGISTERED" in row.removed_reason
    [removal] = removals
    assert removal.subject_id == CAMILLE["id"]
    detail = json.loads(removal.detail)
    assert detail["device"] == fcm_device.json()["id"]
    assert "UNREGISTERED" in detail["reason"]

    # Removed means removed: the next message does not try the dead token again.
    requests_before = google.send_requests
    third = refund_authorized("1042", id="refund-1042-3", amount=200)
    third["data"]["refund_id"] = "re_1042_3"
    post(client, third)
    drain(runtime)
    assert google.send_requests == requests_before
    assert len(push.delivered) == 3


def test_a_customer_without_a_device_gets_no_push(
    client: TestClient,
    runtime: Runtime,
    smtp_server: SmtpServer,
    fcm: tuple[Google, HttpStub],
    web_push: tuple[PushService, HttpStub],
) -> None:
    google, _ = fcm
    _, push_stub = web_push
    post(client, order_placed("2001", JORDAN))
    assert client.get(devices_url(JORDAN["id"])).json()["devices"] == []
    post(client, refund_authorized("2001"))
    drain(runtime)

    [planned] = push_notifications(runtime)
    assert planned.status == "suppressed"
    assert planned.reason == "the customer has no push address"
    assert google.send_requests == 0
    assert push_stub.taken() == []
    [mail] = smtp_server.parsed()
    assert mail["To"] == JORDAN["email"]
