"""SMS through Twilio Programmable Messaging (the 2010-04-01 REST API).

Followed: Twilio docs, "Messages resource" (Create a Message: ``POST
/2010-04-01/Accounts/{AccountSid}/Messages.json``, form-encoded ``To``, ``From`` or
``MessagingServiceSid``, ``Body``, ``StatusCallback``; HTTP Basic auth AccountSid:AuthToken;
201 with the Message's ``sid``), "Twilio API responses" (an error is JSON ``code``,
``message``, ``more_info``, ``status``) and the Error and Warning Dictionary for the codes.

The stable message id travels in the ``StatusCallback`` URL as ``?notification=<id>``: the
Message Twilio creates keeps that URL, and every status callback for it comes back to it, so a
receipt maps to its notification even when the send's reply was lost.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx

from tidings.delivery.providers.base import (
    InvalidRecipientError,
    OutboundMessage,
    PermanentSendError,
    SendError,
    SendReceipt,
    SmsProvider,
)
from tidings.delivery.providers.http import error_for_status, request

DEFAULT_BASE_URL = "https://api.twilio.com"
CALLBACK_PARAMETER = "notification"

# Error and Warning Dictionary: codes that say the 'To' number itself can never get an SMS.
INVALID_RECIPIENT_CODES = {
    21211: "the 'To' number is not a valid phone number",
    21614: "the 'To' number is not a valid mobile number",
    21635: "the 'To' number is a landline",
}
# 21610: the recipient replied STOP to this sender. Permanent for this message, but the
# number is not dead (START opts back in), so it is not removed from the customer.
OPTED_OUT_CODE = 21610
# Messaging Service SIDs start with "MG" (Messages resource, MessagingServiceSid).
MESSAGING_SERVICE_PREFIX = "MG"


class TwilioSmsProvider(SmsProvider):
    name = "twilio"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        account_sid: str,
        auth_token: str,
        sender: str,
        status_callback: str | None,
        base_url: str = DEFAULT_BASE_URL,
        max_segments: int = 3,
    ) -> None:
        self._client = client
        self._auth = (account_sid, auth_token)
        self._sender = sender
        self._status_callback = status_callback
        self._url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self.max_segments = max_segments

    def form(self, message: OutboundMessage) -> dict[str, str]:
        """The form fields of the Create a Message request."""
        body = self.text(message)
        fields = {"To": message.address, "Body": body}
        if self._sender.startswith(MESSAGING_SERVICE_PREFIX):
            fields["MessagingServiceSid"] = self._sender
        else:
            fields["From"] = self._sender
        if self._status_callback:
            fields["StatusCallback"] = callback_url(self._status_callback, message.message_id)
        return fields

    async def send(self, message: OutboundMessage) -> SendReceipt:
        response = await request(
            self._client, self.name, "POST", self._url, data=self.form(message), auth=self._auth
        )
        if not response.is_success:
            raise twilio_error(response)
        sid = _json(response).get("sid")
        return SendReceipt(provider_message_id=sid if isinstance(sid, str) else None)


def callback_url(base: str, message_id: str) -> str:
    """``base`` with ``notification=<message_id>`` added to its query."""
    parts = urlsplit(base)
    extra = urlencode({CALLBACK_PARAMETER: message_id})
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))


def twilio_error(response: httpx.Response) -> SendError:
    """The SendError for a non-2xx reply, read from its documented error code first."""
    body = _json(response)
    code = body.get("code")
    text = str(body.get("message") or "")
    detail = f"error {code}: {text}" if code is not None else text
    if body.get("more_info"):
        detail += f" ({body['more_info']})"
    if isinstance(code, int) and code in INVALID_RECIPIENT_CODES:
        return InvalidRecipientError(
            f"twilio refused the number ({INVALID_RECIPIENT_CODES[code]}): {detail}"
        )
    if code == OPTED_OUT_CODE:
        return PermanentSendError(
            f"twilio: the recipient opted out of SMS from this sender (replied STOP); "
            f"it takes a START from them to send again: {detail}"
        )
    # Everything else by HTTP status: 429 (20429) and 5xx retry, other 4xx do not.
    return error_for_status("twilio", response, detail)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
