"""Slack incoming webhooks: a staff channel gets a Block Kit message.

Docs followed: Slack, "Sending messages using incoming webhooks"
(https://api.slack.com/messaging/webhooks) and its error list, first published in "Improving
error conditions for Incoming Webhooks" (https://api.slack.com/changelog/
2016-05-17-changes-to-errors-for-incoming-webhooks); "Formatting text for app surfaces",
section "Escaping text" (https://api.slack.com/reference/surfaces/formatting#escaping); Block
Kit reference for the header, section and context blocks (field length limits).

The hook URL is the whole credential and the only address: a POST of JSON to it is answered
200 ``ok``, or 400/403/404/410 with a plain-text error code, or 429 with ``Retry-After``.
Slack messages have no field for a sender's message id, so the stable id travels as text in
a context block, where a reader (or a search) finds it when a resend happens.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx

from tidings.delivery.providers.base import (
    InvalidRecipientError,
    OutboundMessage,
    PermanentSendError,
    SendReceipt,
    WebhookProvider,
)
from tidings.delivery.providers.http import error_for_status, request
from tidings.delivery.providers.webhook_http import is_loopback_host, redact_url

SLACK_HOOK_HOST = "hooks.slack.com"
# Block Kit reference: header text at most 150 characters, section text at most 3000.
HEADER_LIMIT = 150
SECTION_LIMIT = 3000
FALLBACK_LIMIT = 3000

# Error codes that say the hook itself is gone: the app was removed, the hook revoked, the
# workspace disabled, or the channel deleted or archived. Sending again can never work.
DEAD_HOOK_ERRORS = frozenset(
    {
        "no_service",
        "no_service_id",
        "no_team",
        "team_disabled",
        "invalid_token",
        "no_active_hooks",
        "channel_not_found",
        "channel_is_archived",
    }
)


def escape(text: str) -> str:
    """Slack "Escaping text": & < > become entities, so user text cannot form a link, a
    mention (<@U123>, <!channel>) or any other control sequence. Nothing else is escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_within(text: str, limit: int) -> str:
    """Escaped text of at most ``limit`` characters, cut between characters so that no
    entity is broken in half; a cut is marked with an ellipsis."""
    escaped = escape(text)
    if len(escaped) <= limit:
        return escaped
    kept: list[str] = []
    size = 0
    for char in text:
        piece = escape(char)
        if size + len(piece) > limit - 1:
            break
        kept.append(piece)
        size += len(piece)
    return "".join(kept) + "\u2026"


def slack_payload(message: OutboundMessage) -> dict[str, Any]:
    parts = message.rendered.parts
    title = parts.get("title") or parts.get("subject", "")
    text = parts.get("txt", "")
    blocks: list[dict[str, Any]] = []
    if title:
        blocks.append(
            {
                "type": "header",
                "text": {
                    "type": "plain_text",
                    "text": escape_within(title, HEADER_LIMIT),
                    "emoji": False,
                },
            }
        )
    if text:
        blocks.append(
            {
                "type": "section",
                # verbatim: no automatic linking of URLs, channel names or mentions.
                "text": {
                    "type": "mrkdwn",
                    "text": escape_within(text, SECTION_LIMIT),
                    "verbatim": True,
                },
            }
        )
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": escape(f"ref {message.message_id}"),
                    "verbatim": True,
                }
            ],
        }
    )
    fallback = f"{title}\n{text}".strip() or message.message_id
    # With blocks, top-level text is the notification fallback, still read as mrkdwn.
    return {"text": escape_within(fallback, FALLBACK_LIMIT), "blocks": blocks}


def hook_url_problem(url: str) -> str | None:
    """Only Slack's own hook host over HTTPS (or loopback, for a local stand-in)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "Slack hook address is not a URL"
    if parts.scheme == "https" and host == SLACK_HOOK_HOST:
        return None
    if parts.scheme in ("http", "https") and is_loopback_host(host):
        return None
    return f"Slack hook address {redact_url(url)} is not an https://{SLACK_HOOK_HOST}/ URL"


class SlackWebhookProvider(WebhookProvider):
    name = "slack"

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def send(self, message: OutboundMessage) -> SendReceipt:
        problem = hook_url_problem(message.address)
        if problem is not None:
            raise PermanentSendError(problem)
        response = await request(
            self._client,
            self.name,
            "POST",
            message.address,
            headers={"Content-Type": "application/json; charset=utf-8"},
            json=slack_payload(message),
        )
        if response.is_success:
            # Slack returns no id; the one carried in the context block is the reference.
            return SendReceipt(provider_message_id=message.message_id)
        code = response.text.strip() if response.content else ""
        if code in DEAD_HOOK_ERRORS or response.status_code == httpx.codes.GONE:
            raise InvalidRecipientError(
                f"Slack hook {redact_url(message.address)} is gone: "
                f"HTTP {response.status_code} {code or '(no error code)'}"
            )
        raise error_for_status(self.name, response, code)
