"""Slack incoming webhooks against a loopback stand-in that answers as hooks.slack.com does."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from typing import Any

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
from tidings.delivery.providers.webhook_slack import SlackWebhookProvider
from tidings.templates.rendering import RenderedMessage

HOOK_PATH = "/services/T0000000/B0000000/XXXXXXXXXXXXXXXXXXXXXXXX"
# An entity is the only place a bare "&" may appear once text is escaped.
ENTITY = re.compile(r"&(amp|lt|gt);")


def message(address: str, *, title: str, text: str) -> OutboundMessage:
    return OutboundMessage(
        notification_id="ntf_01JSLACK",
        channel="webhook",
        kind="payment.failed",
        address=address,
        customer_id=None,
        rendered=RenderedMessage(
            kind="payment.failed",
            channel="webhook",
            locale="en",
            parts={"title": title, "txt": text},
            version="v1",
        ),
    )


def texts(payload: dict[str, Any]) -> list[str]:
    """Every text Slack would render from the payload."""
    found = [payload["text"]]
    for block in payload["blocks"]:
        if "text" in block:
            found.append(block["text"]["text"])
        found.extend(element["text"] for element in block.get("elements", []))
    return found


def block_kit_problem(payload: Any) -> str | None:
    """The checks hooks.slack.com makes before posting (Block Kit reference limits)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("text"), str):
        return "invalid_payload"
    blocks = payload.get("blocks")
    if not isinstance(blocks, list) or not blocks or len(blocks) > 50:
        return "invalid_blocks"
    for block in blocks:
        kind = block.get("type")
        if kind == "header":
            text = block.get("text", {})
            if text.get("type") != "plain_text" or not 0 < len(text.get("text", "")) <= 150:
                return "invalid_blocks"
        elif kind == "section":
            text = block.get("text", {})
            if text.get("type") not in ("mrkdwn", "plain_text"):
                return "invalid_blocks"
            if not 0 < len(text.get("text", "")) <= 3000:
                return "invalid_blocks"
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 0 < len(elements) <= 10:
                return "invalid_blocks"
            if any(e.get("type") not in ("mrkdwn", "plain_text", "image") for e in elements):
                return "invalid_blocks"
        else:
            return "invalid_blocks"
    return None


def slack(outcome: Callable[[Request], Reply] | None = None) -> Callable[[Request], Reply]:
    def handle(request: Request) -> Reply:
        if request.method != "POST":
            return Reply(405, "invalid_request")
        if request.path != HOOK_PATH:
            return Reply(404, "no_service")
        if not request.headers.get("content-type", "").startswith("application/json"):
            return Reply(400, "invalid_payload")
        try:
            payload = request.json()
        except ValueError:
            return Reply(400, "invalid_payload")
        problem = block_kit_problem(payload)
        if problem:
            return Reply(400, problem)
        return outcome(request) if outcome else Reply(200, "ok")

    return handle


@pytest.fixture(scope="module")
def server() -> Iterator[HttpStub]:
    running = HttpStub(slack()).start()
    yield running
    running.stop()


@pytest.fixture
def stub(server: HttpStub) -> HttpStub:
    server.handler = slack()
    server.requests.clear()
    return server


def hook(stub: HttpStub) -> str:
    return stub.url + HOOK_PATH


def send(msg: OutboundMessage) -> SendReceipt:
    async def run() -> SendReceipt:
        async with new_client(timeout=2.0) as client:
            return await SlackWebhookProvider(client).send(msg)

    return asyncio.run(run())


def test_posts_blocks_with_title_text_and_reference(stub: HttpStub) -> None:
    msg = message(hook(stub), title="Payment failed", text="Order 1043: retry on Friday")

    receipt = send(msg)

    payload = stub.taken()[0].json()
    header, section, context = payload["blocks"]
    assert header["type"] == "header"
    assert header["text"]["text"] == "Payment failed"
    assert section["type"] == "section"
    assert section["text"]["text"] == "Order 1043: retry on Friday"
    assert context["type"] == "context"
    assert msg.message_id in context["elements"][0]["text"]
    assert "Payment failed" in payload["text"]
    assert receipt.provider_message_id == msg.message_id


def test_user_text_cannot_inject_links_or_mentions(stub: HttpStub) -> None:
    hostile = "<script>alert(1)</script> <@U123> <!channel> <https://evil.example|bank> R&D"
    send(message(hook(stub), title=f"Refund {hostile}", text=f"Note: {hostile}"))

    payload = stub.taken()[0].json()
    rendered = texts(payload)
    for text in rendered:
        assert "<" not in text
        assert ">" not in text
        assert "&" not in ENTITY.sub("", text)
    section = payload["blocks"][1]["text"]["text"]
    assert "&lt;@U123&gt;" in section
    assert "&lt;!channel&gt;" in section
    assert "&lt;script&gt;" in section
    assert "R&amp;D" in section


def test_long_text_is_cut_within_limits_without_breaking_entities(stub: HttpStub) -> None:
    send(message(hook(stub), title="<" * 200, text="a&b " * 1000))

    payload = stub.taken()[0].json()
    header = payload["blocks"][0]["text"]["text"]
    section = payload["blocks"][1]["text"]["text"]
    assert len(header) <= 150
    assert len(section) <= 3000
    for text in (header, section):
        assert "&" not in ENTITY.sub("", text)
        assert text.endswith("\u2026")


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (404, "no_service"),
        (404, "channel_not_found"),
        (410, "channel_is_archived"),
        (403, "invalid_token"),
        (404, "team_disabled"),
        (410, "no_active_hooks"),
    ],
)
def test_dead_hooks_are_invalid_recipients(stub: HttpStub, status: int, code: str) -> None:
    stub.handler = slack(lambda _: Reply(status, code))

    with pytest.raises(InvalidRecipientError, match=code):
        send(message(hook(stub), title="t", text="x"))


def test_unknown_hook_path_is_invalid_recipient(stub: HttpStub) -> None:
    with pytest.raises(InvalidRecipientError, match="no_service"):
        send(message(stub.url + "/services/T0/B0/revoked", title="t", text="x"))


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "invalid_payload"), (403, "action_prohibited"), (400, "too_many_attachments")],
)
def test_refused_payloads_are_permanent(stub: HttpStub, status: int, code: str) -> None:
    stub.handler = slack(lambda _: Reply(status, code))

    with pytest.raises(PermanentSendError, match=code) as caught:
        send(message(hook(stub), title="t", text="x"))

    assert not isinstance(caught.value, InvalidRecipientError)


def test_rate_limit_is_transient_with_retry_after(stub: HttpStub) -> None:
    stub.handler = slack(lambda _: Reply(429, "rate_limited", headers={"Retry-After": "1"}))

    with pytest.raises(TransientSendError) as caught:
        send(message(hook(stub), title="t", text="x"))

    assert caught.value.retry_after == 1.0


def test_server_error_is_transient(stub: HttpStub) -> None:
    stub.handler = slack(lambda _: Reply(500, "rollup_error"))

    with pytest.raises(TransientSendError, match="rollup_error"):
        send(message(hook(stub), title="t", text="x"))


@pytest.mark.parametrize(
    "address",
    [
        "https://hooks.evil.example/services/T0/B0/secret",
        "http://hooks.slack.com/services/T0/B0/secret",
        "https://slack.com.evil.example/services/T0/B0/secret",
        "hooks.slack.com/services/T0/B0/secret",
    ],
)
def test_refuses_addresses_other_than_slack_hooks(address: str) -> None:
    with pytest.raises(PermanentSendError, match=r"hooks\.slack\.com") as caught:
        send(message(address, title="t", text="x"))

    assert "secret" not in str(caught.value)
