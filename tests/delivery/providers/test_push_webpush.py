"""Web Push against a loopback push service that checks what a real one checks: the RFC 8030
headers, the VAPID token (RFC 8292 section 4) and a payload it can decrypt as the browser
would (RFC 8291)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tests.support.http_stub import HttpStub, Reply, Request
from tidings.delivery.providers.base import (
    InvalidRecipientError,
    OutboundMessage,
    PermanentSendError,
    SendReceipt,
    TransientSendError,
)
from tidings.delivery.providers.http import new_client
from tidings.delivery.providers.push_webpush import WebPushProvider
from tidings.delivery.webpush_crypto import b64url_decode, b64url_encode, decrypt, public_key_bytes
from tidings.templates.rendering import RenderedMessage

SUBJECT = "mailto:ops@shop.example"
TOPIC_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")


@dataclass
class PushService:
    """The push service's view of one subscription and of the app server's VAPID key."""

    vapid_public: bytes
    ua_private: ec.EllipticCurvePrivateKey
    auth: bytes
    origin: str = ""
    fault: Reply | None = None
    delivered: list[dict[str, object]] = field(default_factory=list)

    def handle(self, request: Request) -> Reply:
        if request.method != "POST" or not request.path.startswith("/push/"):
            return Reply(404)
        refusal = self.check_headers(request) or self.check_vapid(request)
        if refusal is not None:
            return refusal
        try:
            message = json.loads(
                decrypt(request.body, ua_private=self.ua_private, auth_secret=self.auth)
            )
        except ValueError:
            return Reply(400, "payload does not decrypt")
        if set(message) != {"title", "body", "notification_id", "kind"} or not all(
            isinstance(value, str) for value in message.values()
        ):
            return Reply(400, "unexpected payload")
        if self.fault is not None:
            return self.fault
        self.delivered.append(message)
        # RFC 8030 5: 201 Created, Location names the push message resource.
        return Reply(201, headers={"Location": f"{self.origin}/m/{len(self.delivered)}"})

    @staticmethod
    def check_headers(request: Request) -> Reply | None:
        headers = request.headers
        if headers.get("content-encoding") != "aes128gcm":
            return Reply(415, "Content-Encoding must be aes128gcm")
        if headers.get("content-type") != "application/octet-stream":
            return Reply(400, "Content-Type")
        if not headers.get("ttl", "").isdigit():
            return Reply(400, "TTL header is required (RFC 8030 5.2)")
        if headers.get("urgency") not in ("very-low", "low", "normal", "high"):
            return Reply(400, "Urgency")
        topic = headers.get("topic")
        if topic is not None and not TOPIC_RE.fullmatch(topic):
            return Reply(400, "Topic")
        return None

    def check_vapid(self, request: Request) -> Reply | None:
        scheme, _, params = request.headers.get("authorization", "").partition(" ")
        if scheme != "vapid":
            return Reply(401, "vapid authorization required")
        try:
            fields = dict(part.strip().split("=", 1) for part in params.split(","))
            k = b64url_decode(fields["k"])
            head, claims, signature = fields["t"].split(".")
            raw = b64url_decode(signature)
            if len(raw) != 64:
                return Reply(401, "ES256 signature must be 64 bytes")
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), k)
            public.verify(
                encode_dss_signature(
                    int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
                ),
                f"{head}.{claims}".encode(),
                ec.ECDSA(hashes.SHA256()),
            )
            header = json.loads(b64url_decode(head))
            body = json.loads(b64url_decode(claims))
        except (ValueError, KeyError, InvalidSignature):
            return Reply(401, "bad VAPID token")
        now = time.time()
        if header.get("alg") != "ES256" or body.get("aud") != self.origin:
            return Reply(401, "wrong alg or audience")
        if not now < body.get("exp", 0) <= now + 24 * 3600:
            return Reply(401, "exp out of range")
        if not str(body.get("sub", "")).startswith(("mailto:", "https:")):
            return Reply(401, "sub")
        # RFC 8292 4.2: a key other than the one the subscription was made with is refused.
        if k != self.vapid_public:
            return Reply(403, "key does not match the subscription")
        return None


@pytest.fixture
def vapid_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def service(vapid_key: ec.EllipticCurvePrivateKey) -> Iterator[tuple[PushService, HttpStub]]:
    push = PushService(
        vapid_public=public_key_bytes(vapid_key),
        ua_private=ec.generate_private_key(ec.SECP256R1()),
        auth=b"0123456789abcdef",
    )
    stub = HttpStub(push.handle).start()
    push.origin = stub.url
    yield push, stub
    stub.stop()


def raw_key(key: ec.EllipticCurvePrivateKey) -> str:
    return b64url_encode(key.private_numbers().private_value.to_bytes(32, "big"))


def subscription(push: PushService, stub: HttpStub, name: str = "abc") -> str:
    return json.dumps(
        {
            "endpoint": f"{stub.url}/push/{name}",
            "expirationTime": None,
            "keys": {
                "p256dh": b64url_encode(public_key_bytes(push.ua_private)),
                "auth": b64url_encode(push.auth),
            },
        }
    )


def outbound(
    address: str, *, notification_id: str = "ntf_1", priority: str = "transactional"
) -> OutboundMessage:
    return OutboundMessage(
        notification_id=notification_id,
        channel="push",
        kind="refund.succeeded",
        address=address,
        customer_id="cus_1",
        rendered=RenderedMessage(
            kind="refund.succeeded",
            channel="push",
            locale="fr",
            parts={"title": "Remboursement effectué", "txt": "12,50 € sont en route."},
            version="v1",
        ),
        priority=priority,
    )


def send(
    key: str,
    messages: list[OutboundMessage],
    *,
    timeout: float = 5.0,
    ttl: int = 86400,
) -> list[SendReceipt | Exception]:
    async def run() -> list[SendReceipt | Exception]:
        client = new_client(timeout=timeout)
        provider = WebPushProvider(client, vapid_private_key=key, vapid_subject=SUBJECT, ttl=ttl)
        results: list[SendReceipt | Exception] = []
        try:
            for message in messages:
                try:
                    results.append(await provider.send(message))
                except Exception as exc:
                    results.append(exc)
        finally:
            await provider.close()
            await client.aclose()
        return results

    return asyncio.run(run())


Service = tuple[PushService, HttpStub]


def test_push_service_receives_and_decrypts_the_notification(
    service: Service, vapid_key: ec.EllipticCurvePrivateKey
) -> None:
    push, stub = service
    message = outbound(subscription(push, stub), priority="critical")
    [receipt] = send(raw_key(vapid_key), [message], ttl=3600)
    assert isinstance(receipt, SendReceipt)
    assert push.delivered == [
        {
            "title": "Remboursement effectué",
            "body": "12,50 € sont en route.",
            "notification_id": message.message_id,
            "kind": "refund.succeeded",
        }
    ]
    assert receipt.provider_message_id == f"{stub.url}/m/1"
    [request] = stub.taken()
    assert request.path == "/push/abc"
    assert request.headers["ttl"] == "3600"
    assert request.headers["urgency"] == "high"


def test_non_critical_is_normal_urgency_and_topic_is_stable_per_message(
    service: Service, vapid_key: ec.EllipticCurvePrivateKey
) -> None:
    push, stub = service
    address = subscription(push, stub)
    first = outbound(address, notification_id="ntf_1")
    results = send(raw_key(vapid_key), [first, first, outbound(address, notification_id="ntf_2")])
    assert all(isinstance(result, SendReceipt) for result in results)
    requests = stub.taken()
    assert {r.headers["urgency"] for r in requests} == {"normal"}
    topics = [r.headers["topic"] for r in requests]
    assert topics[0] == topics[1]
    assert topics[0] != topics[2]


def test_pem_vapid_key_is_accepted(service: Service, vapid_key: ec.EllipticCurvePrivateKey) -> None:
    push, stub = service
    pem = vapid_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    [receipt] = send(pem, [outbound(subscription(push, stub))])
    assert isinstance(receipt, SendReceipt)
    assert len(push.delivered) == 1


def test_a_vapid_key_the_subscription_was_not_made_with_is_refused(service: Service) -> None:
    push, stub = service
    other = ec.generate_private_key(ec.SECP256R1())
    [error] = send(raw_key(other), [outbound(subscription(push, stub))])
    assert isinstance(error, PermanentSendError)
    assert not isinstance(error, InvalidRecipientError)
    assert "403" in str(error)
    assert push.delivered == []


@pytest.mark.parametrize("status", [404, 410])
def test_gone_subscription_is_an_invalid_recipient(
    service: Service, vapid_key: ec.EllipticCurvePrivateKey, status: int
) -> None:
    push, stub = service
    push.fault = Reply(status)
    [error] = send(raw_key(vapid_key), [outbound(subscription(push, stub))])
    assert isinstance(error, InvalidRecipientError)


def test_payload_too_large_is_permanent(
    service: Service, vapid_key: ec.EllipticCurvePrivateKey
) -> None:
    push, stub = service
    push.fault = Reply(413)
    [error] = send(raw_key(vapid_key), [outbound(subscription(push, stub))])
    assert isinstance(error, PermanentSendError)
    assert not isinstance(error, InvalidRecipientError)


def test_too_many_requests_is_transient_with_retry_after(
    service: Service, vapid_key: ec.EllipticCurvePrivateKey
) -> None:
    push, stub = service
    push.fault = Reply(429, headers={"Retry-After": "30"})
    [error] = send(raw_key(vapid_key), [outbound(subscription(push, stub))])
    assert isinstance(error, TransientSendError)
    assert error.retry_after == 30


def test_server_error_is_transient(service: Service, vapid_key: ec.EllipticCurvePrivateKey) -> None:
    push, stub = service
    push.fault = Reply(503)
    [error] = send(raw_key(vapid_key), [outbound(subscription(push, stub))])
    assert isinstance(error, TransientSendError)


def test_a_push_service_that_hangs_is_transient(
    service: Service, vapid_key: ec.EllipticCurvePrivateKey
) -> None:
    push, stub = service
    push.fault = Reply(201, hang=1.0)
    [error] = send(raw_key(vapid_key), [outbound(subscription(push, stub))], timeout=0.2)
    assert isinstance(error, TransientSendError)
    assert "timed out" in str(error)


@pytest.mark.parametrize(
    "address",
    [
        "not json",
        json.dumps({"endpoint": "https://push.example.net/x"}),
        json.dumps(
            {"endpoint": "https://push.example.net/x", "keys": {"p256dh": "AAAA", "auth": "AAAA"}}
        ),
        json.dumps({"endpoint": "javascript:alert(1)", "keys": {}}),
        "fcm-device-token-not-a-subscription",
    ],
)
def test_an_unparseable_address_is_an_invalid_recipient_and_sends_nothing(
    service: Service, vapid_key: ec.EllipticCurvePrivateKey, address: str
) -> None:
    _, stub = service
    [error] = send(raw_key(vapid_key), [outbound(address)])
    assert isinstance(error, InvalidRecipientError)
    assert stub.taken() == []
