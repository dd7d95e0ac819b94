"""Postmark provider against a loopback stand-in that checks requests as Postmark's API does."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.support.http_stub import HttpStub, Reply, Request
from tidings.delivery.providers.base import (
    InvalidRecipientError,
    OutboundMessage,
    PermanentSendError,
    SendReceipt,
    TransientSendError,
)
from tidings.delivery.providers.email_postmark import PostmarkEmailProvider
from tidings.delivery.providers.email_smtp import message_id
from tidings.delivery.providers.http import new_client
from tidings.templates.rendering import RenderedMessage

TOKEN = "5f1b3c2e-0000-4000-8000-postmarktest"
SENDER = "Lumen Shop <orders@lumen.example>"
DOMAIN = "lumen.example"


def message(*, html: bool = True, locale: str = "fr_CA") -> OutboundMessage:
    parts = {"subject": "Votre commande #1042", "txt": "Bonjour Camille"}
    if html:
        parts["html"] = "<p>Bonjour Camille</p>"
    return OutboundMessage(
        notification_id="ntf_01JABCDEF",
        channel="email",
        kind="order.placed",
        address="camille@example.fr",
        customer_id="cus_1",
        rendered=RenderedMessage(
            kind="order.placed", channel="email", locale=locale, parts=parts, version="v1"
        ),
    )


def postmark_error(status: int, code: int, text: str) -> Reply:
    return Reply(status, {"ErrorCode": code, "Message": text})


def postmark_api(outcome: Callable[[Request], Reply] | None = None) -> Callable[[Request], Reply]:
    """Checks a request as Postmark's /email endpoint does, then answers with ``outcome``
    (a success by default)."""

    def handle(request: Request) -> Reply:
        if request.method != "POST" or request.path != "/email":
            return Reply(404, {"ErrorCode": 404, "Message": "Not found"})
        if request.headers.get("x-postmark-server-token") != TOKEN:
            return postmark_error(401, 10, "Request does not contain a valid Server token.")
        if request.headers.get("accept") != "application/json":
            return postmark_error(422, 409, "JSON required: Accept application/json.")
        if not request.headers.get("content-type", "").startswith("application/json"):
            return postmark_error(422, 409, "JSON required: Content-Type application/json.")
        try:
            body = request.json()
        except ValueError:
            return postmark_error(422, 402, "Invalid JSON")
        for field in ("From", "To", "Subject"):
            if not isinstance(body.get(field), str) or not body[field]:
                return postmark_error(422, 300, f"Invalid email request: no {field}.")
        if not (body.get("TextBody") or body.get("HtmlBody")):
            return postmark_error(422, 300, "Provide either email TextBody or HtmlBody or both.")
        headers = body.get("Headers", [])
        if not all(isinstance(h, dict) and set(h) == {"Name", "Value"} for h in headers):
            return postmark_error(422, 403, "Incompatible JSON: Headers are {Name, Value}.")
        metadata = body.get("Metadata", {})
        if not all(isinstance(v, str) and len(k) <= 20 for k, v in metadata.items()):
            return postmark_error(422, 300, "Invalid metadata.")
        if outcome is not None:
            return outcome(request)
        return Reply(
            200,
            {
                "To": body["To"],
                "SubmittedAt": "2026-11-21T10:00:00.0000000-05:00",
                "MessageID": str(uuid.uuid4()),
                "ErrorCode": 0,
                "Message": "OK",
            },
        )

    return handle


@pytest.fixture(scope="module")
def server() -> Iterator[HttpStub]:
    running = HttpStub(postmark_api()).start()
    yield running
    running.stop()


@pytest.fixture
def stub(server: HttpStub) -> HttpStub:
    # One server for the module (stopping one takes half a second); each test starts clean.
    server.handler = postmark_api()
    server.requests.clear()
    return server


def send(
    stub: HttpStub,
    msg: OutboundMessage,
    *,
    token: str = TOKEN,
    timeout: float = 2.0,
    **options: str,
) -> SendReceipt:
    async def run() -> SendReceipt:
        async with new_client(timeout=timeout) as client:
            provider = PostmarkEmailProvider(
                client,
                server_token=token,
                sender=SENDER,
                domain=DOMAIN,
                base_url=stub.url,
                **options,
            )
            return await provider.send(msg)

    return asyncio.run(run())


def header(body: dict[str, object], name: str) -> str:
    headers = body["Headers"]
    assert isinstance(headers, list)
    values = [h["Value"] for h in headers if h["Name"].lower() == name.lower()]
    assert len(values) == 1, f"{name} appears {len(values)} times"
    return str(values[0])


def test_send_returns_postmark_message_id(stub: HttpStub) -> None:
    issued = str(uuid.uuid4())
    stub.handler = postmark_api(
        lambda request: Reply(
            200,
            {
                "To": request.json()["To"],
                "SubmittedAt": "2026-11-21T10:00:00.0000000-05:00",
                "MessageID": issued,
                "ErrorCode": 0,
                "Message": "OK",
            },
        )
    )

    receipt = send(stub, message())

    assert receipt.provider_message_id == issued
    assert len(stub.taken()) == 1


def test_request_carries_documented_fields(stub: HttpStub) -> None:
    msg = message()
    send(stub, msg)

    body = stub.taken()[0].json()
    assert body["From"] == SENDER
    assert body["To"] == msg.address
    assert body["Subject"] == msg.rendered.parts["subject"]
    assert body["TextBody"] == msg.rendered.parts["txt"]
    assert body["HtmlBody"] == msg.rendered.parts["html"]
    assert body["MessageStream"] == "outbound"
    assert body["TrackOpens"] is False
    assert body["TrackLinks"] == "None"
    assert body["Metadata"]["notification_id"] == msg.notification_id
    assert body["Metadata"]["message_id"] == msg.message_id
    assert header(body, "Content-Language") == "fr-CA"


def test_message_id_matches_the_smtp_provider(stub: HttpStub) -> None:
    msg = message()
    send(stub, msg)
    send(stub, msg)

    first, second = (request.json() for request in stub.taken())
    smtp_id = message_id(msg.notification_id, msg.channel, DOMAIN)
    assert header(first, "Message-ID") == smtp_id
    assert header(second, "Message-ID") == smtp_id
    assert msg.notification_id in smtp_id


def test_text_only_message_omits_html(stub: HttpStub) -> None:
    send(stub, message(html=False))

    body = stub.taken()[0].json()
    assert "HtmlBody" not in body
    assert body["TextBody"]


def test_message_stream_is_configurable(stub: HttpStub) -> None:
    send(stub, message(), message_stream="transactional-fr")

    assert stub.taken()[0].json()["MessageStream"] == "transactional-fr"


def test_wrong_token_is_permanent(stub: HttpStub) -> None:
    with pytest.raises(PermanentSendError, match="401") as caught:
        send(stub, message(), token="not-the-token")

    assert not isinstance(caught.value, InvalidRecipientError)


def test_inactive_recipient_is_invalid_recipient(stub: HttpStub) -> None:
    stub.handler = postmark_api(
        lambda _: postmark_error(
            422,
            406,
            "You tried to send to recipient(s) that have been marked as inactive.",
        )
    )

    with pytest.raises(InvalidRecipientError, match="406"):
        send(stub, message())


def test_invalid_email_request_is_permanent_not_recipient(stub: HttpStub) -> None:
    stub.handler = postmark_api(
        lambda _: postmark_error(422, 300, "Invalid 'From' address: 'orders@'.")
    )

    with pytest.raises(PermanentSendError, match="300") as caught:
        send(stub, message())

    assert not isinstance(caught.value, InvalidRecipientError)


def test_rate_limit_is_transient_with_retry_after(stub: HttpStub) -> None:
    stub.handler = postmark_api(
        lambda _: Reply(
            429,
            {"ErrorCode": 429, "Message": "Rate limit exceeded"},
            headers={"Retry-After": "30"},
        )
    )

    with pytest.raises(TransientSendError) as caught:
        send(stub, message())

    assert caught.value.retry_after == 30.0


def test_maintenance_error_code_is_transient(stub: HttpStub) -> None:
    stub.handler = postmark_api(lambda _: postmark_error(422, 100, "Maintenance"))

    with pytest.raises(TransientSendError):
        send(stub, message())


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_transient(stub: HttpStub, status: int) -> None:
    stub.handler = postmark_api(lambda _: Reply(status, {"ErrorCode": 0, "Message": "oops"}))

    with pytest.raises(TransientSendError, match=str(status)):
        send(stub, message())


def test_hang_past_timeout_is_transient(stub: HttpStub) -> None:
    stub.handler = postmark_api(lambda _: Reply(200, {"MessageID": "late"}, hang=1.5))

    with pytest.raises(TransientSendError, match="timed out"):
        send(stub, message(), timeout=0.3)


def test_reply_cut_mid_body_is_transient(stub: HttpStub) -> None:
    stub.handler = postmark_api(
        lambda _: Reply(200, {"MessageID": "cut-" + "x" * 200, "ErrorCode": 0}, cut=True)
    )

    with pytest.raises(TransientSendError):
        send(stub, message())


def test_server_down_is_transient(stub: HttpStub) -> None:
    stub.down()
    try:
        with pytest.raises(TransientSendError, match="unreachable"):
            send(stub, message())
    finally:
        stub.up()
