"""Email through Postmark's HTTP API.

Docs followed: Postmark "Email API", send a single email (https://postmarkapp.com/developer/
api/email-api#send-email and user-guide/send-email-with-api) and "API overview", sections
"HTTP response codes" and "API error codes" (https://postmarkapp.com/developer/api/overview).

``POST /email`` with the server token in ``X-Postmark-Server-Token``; 200 answers
``{"To", "SubmittedAt", "MessageID", "ErrorCode": 0, "Message": "OK"}``. A message Postmark
refuses is answered 422 with ``{"ErrorCode", "Message"}``; a bad token 401; rate limiting 429;
Postmark's own trouble 500 or 503.

The stable id travels twice: as the RFC 5322 ``Message-ID`` header (the same value the SMTP
provider writes, so switching providers keeps ids stable) and in ``Metadata``, which Postmark
returns in every webhook for the message (see :mod:`tidings.delivery.receipts_postmark`).
"""

from __future__ import annotations

from typing import Any

import httpx

from tidings.delivery.providers.base import (
    EmailProvider,
    InvalidRecipientError,
    OutboundMessage,
    SendError,
    SendReceipt,
    TransientSendError,
)
from tidings.delivery.providers.email_smtp import message_id
from tidings.delivery.providers.http import error_for_status, request, retry_after_seconds

DEFAULT_BASE_URL = "https://api.postmarkapp.com"
DEFAULT_MESSAGE_STREAM = "outbound"

# "API error codes" table, the ones a send can meet.
BAD_TOKEN = 10  # Bad or missing API token
MAINTENANCE = 100  # Postmark is down for maintenance
INVALID_EMAIL_REQUEST = 300  # malformed addresses, no body, more than 50 recipients
INACTIVE_RECIPIENT = 406  # hard bounced, complained, unsubscribed or manually suppressed
RATE_LIMITED = 429
TRANSIENT_ERROR_CODES = frozenset({MAINTENANCE, RATE_LIMITED})


def postmark_body(
    message: OutboundMessage, *, sender: str, domain: str, message_stream: str
) -> dict[str, Any]:
    parts = message.rendered.parts
    body: dict[str, Any] = {
        "From": sender,
        "To": message.address,
        "Subject": parts.get("subject", ""),
        "TextBody": parts.get("txt", ""),
        "MessageStream": message_stream,
        "Headers": [
            {
                "Name": "Message-ID",
                "Value": message_id(message.notification_id, message.channel, domain),
            },
            # RFC 3282 language tag, as the SMTP provider writes it.
            {"Name": "Content-Language", "Value": message.rendered.locale.replace("_", "-")},
        ],
        # Postmark hands Metadata back in its Delivery, Bounce, Open, Click and
        # SubscriptionChange webhooks: how a receipt finds its notification.
        "Metadata": {
            "notification_id": message.notification_id,
            "message_id": message.message_id,
        },
        # Opens and clicks are tracked by our own links; Postmark must not rewrite them.
        "TrackOpens": False,
        "TrackLinks": "None",
    }
    if parts.get("html"):
        body["HtmlBody"] = parts["html"]
    return body


def _error_fields(response: httpx.Response) -> tuple[int | None, str]:
    try:
        data = response.json()
    except ValueError:
        return None, ""
    if not isinstance(data, dict):
        return None, ""
    code = data.get("ErrorCode")
    text = data.get("Message")
    return (code if isinstance(code, int) else None), (text if isinstance(text, str) else "")


def postmark_error(provider: str, response: httpx.Response) -> SendError:
    """The SendError a refused send stands for, read from Postmark's ``ErrorCode``."""
    code, text = _error_fields(response)
    detail = f"ErrorCode {code}: {text}" if code is not None else text
    if code == INACTIVE_RECIPIENT:
        # The address is on the stream's suppression list: no resend can reach it.
        return InvalidRecipientError(f"{provider} refused an inactive recipient: {detail}")
    if code in TRANSIENT_ERROR_CODES:
        return TransientSendError(
            f"{provider} answered HTTP {response.status_code}: {detail}",
            retry_after=retry_after_seconds(response.headers.get("Retry-After")),
        )
    if code == BAD_TOKEN:
        detail += " (check the Postmark server token in the settings)"
    # 401 bad token, 422 with any other code (300 invalid request, 400/401 sender signature,
    # 405 out of credits, 412/413 account pending or barred): permanent. 429/5xx: transient.
    return error_for_status(provider, response, detail)


class PostmarkEmailProvider(EmailProvider):
    name = "postmark"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        server_token: str,
        sender: str,
        domain: str,
        message_stream: str = DEFAULT_MESSAGE_STREAM,
        base_url: str = DEFAULT_BASE_URL,
    ) -> None:
        self._client = client
        self._token = server_token
        self._sender = sender
        self._domain = domain
        self._stream = message_stream
        self._url = base_url.rstrip("/") + "/email"

    async def send(self, message: OutboundMessage) -> SendReceipt:
        response = await request(
            self._client,
            self.name,
            "POST",
            self._url,
            headers={
                "Accept": "application/json",
                "Content-Type": "application/json",
                "X-Postmark-Server-Token": self._token,
            },
            json=postmark_body(
                message, sender=self._sender, domain=self._domain, message_stream=self._stream
            ),
        )
        if not response.is_success:
            raise postmark_error(self.name, response)
        code, _ = _error_fields(response)
        if code:
            raise postmark_error(self.name, response)
        try:
            data = response.json()
        except ValueError:
            data = None
        # Accepted even if the reply is odd: raising here would make a retry send it twice.
        provider_id = data.get("MessageID") if isinstance(data, dict) else None
        return SendReceipt(
            provider_message_id=provider_id if isinstance(provider_id, str) else None
        )
