"""SMS through the Vonage (formerly Nexmo) SMS API.

Followed: Vonage API reference "SMS API" (Send an SMS: ``POST /sms/json``, form-encoded
``api_key``, ``api_secret``, ``from``, ``to`` as E.164 digits without "+", ``text``, ``type``
``unicode`` for text outside the GSM alphabet, ``client-ref`` up to 40 characters,
``callback``) and the "Troubleshooting SMS" guide for the per-message ``status`` codes.

The API answers HTTP 200 even when it refuses a message: the verdict is the ``status`` of each
entry of ``messages`` (one per segment). The stable message id travels as ``client-ref``,
which Vonage echoes in the reply and in every delivery receipt.
"""

from __future__ import annotations

from typing import Any

import httpx

from tidings.delivery.providers.base import (
    InvalidRecipientError,
    OutboundMessage,
    PermanentSendError,
    SendError,
    SendReceipt,
    SmsProvider,
    TransientSendError,
)
from tidings.delivery.providers.http import error_for_status, request
from tidings.delivery.sms_segments import measure

DEFAULT_BASE_URL = "https://rest.nexmo.com"

# Troubleshooting SMS, "SMS API error codes": the meaning of each non-zero status.
STATUS_MEANINGS = {
    1: "Throttled",
    2: "Missing Parameters",
    3: "Invalid Parameters",
    4: "Invalid Credentials",
    5: "Internal Error",
    6: "Invalid Message (unroutable number)",
    7: "Number Barred",
    8: "Partner Account Barred",
    9: "Partner Quota Violation",
    10: "Too Many Existing Binds",
    11: "Account Not Enabled For HTTP",
    12: "Message Too Long",
    14: "Invalid Signature",
    15: "Invalid Sender Address",
    22: "Invalid Network Code",
    23: "Invalid Callback Url",
    29: "Non-Whitelisted Destination",
    32: "Signature And API Secret Disallowed",
    33: "Number De-activated",
}
# The guide's resolution for these is to retry: sending faster than the account limit (1),
# an error inside the platform (5), no credit left ("Top-up and retry", 9), too many
# connections ("Back-off and retry", 10).
TRANSIENT_STATUSES = frozenset({1, 5, 9, 10})
# A pause worth taking before the next try when the account is over its rate.
BACKOFF_STATUSES = {1: 1.0, 10: 1.0}
# The number itself cannot receive: an unrecognized prefix or a fixed line (6), a number taken
# out of service (33). A barred number (7) is not here: the bar can be an opt-out, which the
# customer can undo, so the number stays on file.
INVALID_RECIPIENT_STATUSES = frozenset({6, 33})


class VonageSmsProvider(SmsProvider):
    name = "vonage"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        api_key: str,
        api_secret: str,
        sender: str,
        callback: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        max_segments: int = 3,
    ) -> None:
        self._client = client
        self._api_key = api_key
        self._api_secret = api_secret
        self._sender = sender
        self._callback = callback
        self._url = f"{base_url.rstrip('/')}/sms/json"
        self.max_segments = max_segments

    def form(self, message: OutboundMessage) -> dict[str, str]:
        """The form fields of the Send an SMS request."""
        text = self.text(message)
        fields = {
            "api_key": self._api_key,
            "api_secret": self._api_secret,
            "from": self._sender,
            # The SMS API wants E.164 digits only: "447700900000", not "+447700900000".
            "to": message.address.strip().lstrip("+"),
            "text": text,
            "client-ref": message.message_id,
        }
        if measure(text).encoding == "UCS-2":
            # Without it the text is sent as GSM-7 and the characters outside it are lost.
            fields["type"] = "unicode"
        if self._callback:
            fields["callback"] = self._callback
        return fields

    async def send(self, message: OutboundMessage) -> SendReceipt:
        response = await request(
            self._client, self.name, "POST", self._url, data=self.form(message)
        )
        if not response.is_success:
            raise error_for_status(self.name, response)
        return read_reply(response)


def read_reply(response: httpx.Response) -> SendReceipt:
    """The receipt for a 200 reply, or the SendError its per-message statuses stand for."""
    entries = _entries(response)
    if not entries:
        # Nothing says whether the message went out; trying again could send it twice.
        raise PermanentSendError(f"vonage sent an unreadable reply: {response.text[:300]!r}")
    failed = [entry for entry in entries if _status(entry) != 0]
    if not failed:
        message_id = entries[0].get("message-id")
        return SendReceipt(provider_message_id=message_id if isinstance(message_id, str) else None)
    if len(failed) < len(entries):
        # Some segments are on their way: a retry would send those twice.
        raise PermanentSendError(
            f"vonage accepted {len(entries) - len(failed)} of {len(entries)} segments: "
            f"{_describe(failed[0])}"
        )
    raise status_error(failed[0])


def status_error(entry: dict[str, Any]) -> SendError:
    status = _status(entry)
    detail = f"vonage refused the message: {_describe(entry)}"
    if status in TRANSIENT_STATUSES:
        return TransientSendError(detail, retry_after=BACKOFF_STATUSES.get(status))
    if status in INVALID_RECIPIENT_STATUSES:
        return InvalidRecipientError(detail)
    return PermanentSendError(detail)


def _describe(entry: dict[str, Any]) -> str:
    status = _status(entry)
    meaning = STATUS_MEANINGS.get(status, "unknown status")
    text = entry.get("error-text")
    return f"status {status} {meaning}" + (f": {text}" if text else "")


def _status(entry: dict[str, Any]) -> int:
    try:
        return int(entry.get("status", -1))
    except (TypeError, ValueError):
        return -1


def _entries(response: httpx.Response) -> list[dict[str, Any]]:
    try:
        body = response.json()
    except ValueError:
        return []
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        return []
    return [entry for entry in messages if isinstance(entry, dict)]
