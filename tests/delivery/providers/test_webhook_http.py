"""Standard Webhooks sender against a loopback receiver that verifies signatures on its own."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.http_stub import HttpStub, Reply, Request
from tidings.delivery.providers.base import (
    InvalidRecipientError,
    OutboundMessage,
    PermanentSendError,
    SendReceipt,
    TransientSendError,
)
from tidings.delivery.providers.http import new_client
from tidings.delivery.providers.webhook_http import SignedWebhookProvider, verify_signature
from tidings.templates.rendering import RenderedMessage

KEY = bytes(range(32))
SECRET = "whsec_" + base64.b64encode(KEY).decode()

# Published vector from the Standard Webhooks reference test suite
# (libraries/python/tests/test_webhooks.py, test_sign_function).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def message(address: str, *, parts: dict[str, str] | None = None) -> OutboundMessage:
    return OutboundMessage(
        notification_id="ntf_01JWEBHOOK",
        channel="webhook",
        kind="refund.authorized",
        address=address,
        customer_id=None,
        rendered=RenderedMessage(
            kind="refund.authorized",
            channel="webhook",
            locale="en",
            parts=parts or {"title": "Refund authorized", "txt": "Order #1042: 12.50 EUR"},
            version="v1",
        ),
    )


def receiver(outcome: Callable[[Request], Reply] | None = None) -> Callable[[Request], Reply]:
    """A consumer following the spec's "Verifying signatures", written independently of the
    code under test: 401 unless the signature over id.timestamp.body checks out."""

    def handle(request: Request) -> Reply:
        if request.method != "POST" or request.path != "/hooks/tidings":
            return Reply(404, "not found")
        if not request.headers.get("content-type", "").startswith("application/json"):
            return Reply(415, "json only")
        msg_id = request.headers.get("webhook-id", "")
        stamp = request.headers.get("webhook-timestamp", "")
        signatures = request.headers.get("webhook-signature", "")
        if not msg_id or not stamp.isdigit() or abs(time.time() - int(stamp)) > 300:
            return Reply(401, "bad id or timestamp")
        mac = hmac.new(KEY, msg_id.encode() + b"." + stamp.encode() + b"." + request.body, "sha256")
        expected = "v1," + base64.b64encode(mac.digest()).decode()
        if not any(hmac.compare_digest(expected, s) for s in signatures.split(" ")):
            return Reply(401, "bad signature")
        return outcome(request) if outcome else Reply(204)

    return handle


@pytest.fixture(scope="module")
def server() -> Iterator[HttpStub]:
    running = HttpStub(receiver()).start()
    yield running
    running.stop()


@pytest.fixture
def stub(server: HttpStub) -> HttpStub:
    server.handler = receiver()
    server.requests.clear()
    return server


def target(stub: HttpStub) -> str:
    return f"{stub.url}/hooks/tidings"


def send(msg: OutboundMessage, *, secret: str = SECRET) -> SendReceipt:
    async def run() -> SendReceipt:
        async with new_client(timeout=2.0) as client:
            return await SignedWebhookProvider(client, secret=secret).send(msg)

    return asyncio.run(run())


def test_signed_post_is_accepted_by_an_independent_verifier(stub: HttpStub) -> None:
    msg = message(target(stub))

    receipt = send(msg)

    (request,) = stub.taken()
    assert request.headers["webhook-id"] == msg.message_id
    assert receipt.provider_message_id == msg.message_id
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 5


def test_body_carries_the_rendered_message(stub: HttpStub) -> None:
    msg = message(target(stub))

    send(msg)

    body = stub.taken()[0].json()
    assert body["type"] == "refund.authorized"
    assert body["notification_id"] == msg.notification_id
    assert body["title"] == "Refund authorized"
    assert body["text"] == "Order #1042: 12.50 EUR"
    assert body["locale"] == "en"
    sent_at = datetime.fromisoformat(body["sent_at"])
    assert abs(sent_at - datetime.now(UTC)) < timedelta(seconds=5)


def test_title_falls_back_to_subject(stub: HttpStub) -> None:
    send(message(target(stub), parts={"subject": "Payment failed", "txt": "Retry scheduled"}))

    assert stub.taken()[0].json()["title"] == "Payment failed"


def test_repeated_send_keeps_the_webhook_id(stub: HttpStub) -> None:
    msg = message(target(stub))

    send(msg)
    send(msg)

    first, second = stub.taken()
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == msg.message_id


def test_wrong_secret_is_refused_by_the_receiver(stub: HttpStub) -> None:
    other = "whsec_" + base64.b64encode(bytes(32)).decode()

    with pytest.raises(PermanentSendError, match="401"):
        send(message(target(stub)), secret=other)


def test_gone_is_invalid_recipient(stub: HttpStub) -> None:
    stub.handler = receiver(lambda _: Reply(410, "unsubscribed"))

    with pytest.raises(InvalidRecipientError, match="410"):
        send(message(target(stub)))


@pytest.mark.parametrize("status", [400, 404, 301])
def test_other_client_errors_are_permanent(stub: HttpStub, status: int) -> None:
    stub.handler = receiver(lambda _: Reply(status, "no", headers={"Location": "/elsewhere"}))

    with pytest.raises(PermanentSendError) as caught:
        send(message(target(stub)))

    assert not isinstance(caught.value, InvalidRecipientError)


def test_rate_limit_is_transient_with_retry_after(stub: HttpStub) -> None:
    stub.handler = receiver(lambda _: Reply(429, "slow down", headers={"Retry-After": "12"}))

    with pytest.raises(TransientSendError) as caught:
        send(message(target(stub)))

    assert caught.value.retry_after == 12.0


def test_server_error_is_transient(stub: HttpStub) -> None:
    stub.handler = receiver(lambda _: Reply(502, "bad gateway"))

    with pytest.raises(TransientSendError):
        send(message(target(stub)))


@pytest.mark.parametrize(
    "address",
    [
        "http://hooks.example.com/tidings",
        "http://10.0.0.5/hooks",
        "ftp://127.0.0.1/hooks",
        "https:///no-host",
        "not a url",
    ],
)
def test_refuses_targets_that_are_not_https(address: str) -> None:
    with pytest.raises(PermanentSendError, match="https"):
        send(message(address))


def test_refusal_does_not_leak_the_url_path() -> None:
    with pytest.raises(PermanentSendError) as caught:
        send(message("http://hooks.example.com/T0/secret-token"))

    assert "secret-token" not in str(caught.value)


@pytest.mark.parametrize("secret", ["", "whsec_", "whsec_!!!notbase64", "whsec_c2hvcnQ="])
def test_rejects_unusable_secrets(secret: str) -> None:
    async def build() -> None:
        async with new_client(timeout=1.0) as client:
            SignedWebhookProvider(client, secret=secret)

    with pytest.raises(ValueError, match="secret"):
        asyncio.run(build())


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def test_verify_accepts_the_published_vector() -> None:
    assert verify_signature(
        VECTOR_SECRET,
        VECTOR_ID,
        str(VECTOR_TIMESTAMP),
        VECTOR_BODY,
        VECTOR_SIGNATURE,
        now=at(VECTOR_TIMESTAMP),
    )


def test_verify_rejects_a_changed_body_id_or_timestamp() -> None:
    def check(msg_id: str, stamp: int, body: bytes) -> bool:
        return verify_signature(
            VECTOR_SECRET, msg_id, str(stamp), body, VECTOR_SIGNATURE, now=at(VECTOR_TIMESTAMP)
        )

    assert not check(VECTOR_ID, VECTOR_TIMESTAMP, b'{"test": 2432232315}')
    assert not check(VECTOR_ID + "x", VECTOR_TIMESTAMP, VECTOR_BODY)
    assert not check(VECTOR_ID, VECTOR_TIMESTAMP + 1, VECTOR_BODY)


def test_verify_enforces_the_tolerance() -> None:
    def check(now: int, tolerance: int = 300) -> bool:
        return verify_signature(
            VECTOR_SECRET,
            VECTOR_ID,
            str(VECTOR_TIMESTAMP),
            VECTOR_BODY,
            VECTOR_SIGNATURE,
            now=at(now),
            tolerance=tolerance,
        )

    assert check(VECTOR_TIMESTAMP + 300)
    assert check(VECTOR_TIMESTAMP - 300)
    assert not check(VECTOR_TIMESTAMP + 301)
    assert not check(VECTOR_TIMESTAMP - 301)
    assert not check(VECTOR_TIMESTAMP + 60, tolerance=30)


def test_verify_accepts_any_of_several_signatures() -> None:
    wrong = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
    other_version = "v1a," + VECTOR_SIGNATURE.split(",", 1)[1]
    header = f"{wrong} v1,%%%notbase64 {other_version} {VECTOR_SIGNATURE}"

    assert verify_signature(
        VECTOR_SECRET,
        VECTOR_ID,
        str(VECTOR_TIMESTAMP),
        VECTOR_BODY,
        header,
        now=at(VECTOR_TIMESTAMP),
    )
    # The same signature under another version tag is not a v1 signature.
    assert not verify_signature(
        VECTOR_SECRET,
        VECTOR_ID,
        str(VECTOR_TIMESTAMP),
        VECTOR_BODY,
        f"{wrong} {other_version}",
        now=at(VECTOR_TIMESTAMP),
    )


@pytest.mark.parametrize("stamp", ["1614265330.0", "+1614265330", " 1614265330", "1e9", ""])
def test_verify_rejects_timestamps_that_are_not_plain_digits(stamp: str) -> None:
    assert not verify_signature(
        VECTOR_SECRET,
        VECTOR_ID,
        stamp,
        VECTOR_BODY,
        VECTOR_SIGNATURE,
        now=at(VECTOR_TIMESTAMP),
    )


def test_provider_signature_verifies_with_verify_signature(stub: HttpStub) -> None:
    send(message(target(stub)))

    (request,) = stub.taken()
    assert verify_signature(
        SECRET,
        request.headers["webhook-id"],
        request.headers["webhook-timestamp"],
        request.body,
        request.headers["webhook-signature"],
        now=datetime.now(UTC),
    )
    tampered = request.body.replace(b"12.50", b"99.50")
    assert tampered != request.body
    assert not verify_signature(
        SECRET,
        request.headers["webhook-id"],
        request.headers["webhook-timestamp"],
        tampered,
        request.headers["webhook-signature"],
        now=datetime.now(UTC),
    )


def test_signature_uses_sha256_hmac_of_the_exact_body(stub: HttpStub) -> None:
    send(message(target(stub)))

    (request,) = stub.taken()
    signed = b".".join(
        [
            request.headers["webhook-id"].encode(),
            request.headers["webhook-timestamp"].encode(),
            request.body,
        ]
    )
    digest = hmac.new(KEY, signed, hashlib.sha256).digest()
    assert request.headers["webhook-signature"] == "v1," + base64.b64encode(digest).decode()
