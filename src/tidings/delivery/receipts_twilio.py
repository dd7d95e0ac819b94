"""What Twilio sends back: signed status callbacks and inbound messages (no I/O here).

Followed: Twilio docs "Webhooks security" (``X-Twilio-Signature``: the full URL Twilio
requested, then each POST parameter sorted by name with its value appended, HMAC-SHA1 keyed
with the Auth Token, Base64), "Track the message status of outbound messages" (the
``MessageSid``, ``MessageStatus`` and ``ErrorCode`` of a status callback), "Messages resource"
(the status values), and "Twilio support for opt-out keywords" with the Advanced Opt-Out
tutorial (the default opt-out, opt-in and help keywords).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, urlsplit, urlunsplit

Params = Mapping[str, str | Sequence[str]]
Outcome = Literal["sent", "delivered", "failed", "bounced"]
Keyword = Literal["stop", "start", "help"]

# Messages resource, "Message Status values" -> the outcome a receipt records.
# - sent: Twilio handed the message to the carrier; nothing is known past that.
# - delivered, read: the carrier (or the channel, for read) confirmed the handset got it.
# - partially_delivered: only part of it is confirmed, so no more than "sent" is known.
# - undelivered (the carrier reported it was not delivered), failed (Twilio could not send
#   it) and canceled (a scheduled message that never went out): "failed", unless the error
#   code says the number itself cannot receive SMS, which is a bounce (see BOUNCE_ERROR_CODES).
# - queued, accepted, scheduled, sending (still on Twilio's side) and receiving, received
#   (inbound): no outcome yet, None.
STATUS_OUTCOMES: Mapping[str, Outcome] = {
    "sent": "sent",
    "partially_delivered": "sent",
    "delivered": "delivered",
    "read": "delivered",
    "undelivered": "failed",
    "failed": "failed",
    "canceled": "failed",
}
# Error and Warning Dictionary: 30005 "Unknown destination handset" (the number may no longer
# exist) and 30006 "Landline or unreachable carrier" (do not retry SMS to a landline). Other
# codes, such as 30003 (handset switched off) or 30007 (carrier filtering), are failures of
# this one message, not of the number.
BOUNCE_ERROR_CODES = frozenset({"30005", "30006"})

# Advanced Opt-Out tutorial: STOP, UNSUBSCRIBE, END, QUIT, STOPALL, REVOKE, OPTOUT, CANCEL opt
# out; START, YES, UNSTOP opt back in; HELP, INFO ask for help. Only a message that is exactly
# one keyword counts ("STOP PLEASE" does not).
KEYWORDS: Mapping[str, Keyword] = {
    **dict.fromkeys(
        ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"), "stop"
    ),
    **dict.fromkeys(("START", "YES", "UNSTOP"), "start"),
    **dict.fromkeys(("HELP", "INFO"), "help"),
}
NOTIFICATION_PARAMETER = "notification"


@dataclass(frozen=True, slots=True)
class TwilioStatus:
    message_sid: str
    # The outcome in Tidings' terms, or None while the message is still on Twilio's side.
    status: Outcome | None
    error_code: str | None
    # The stable message id ("<notification_id>.sms") the StatusCallback URL carried.
    notification: str | None
    message_status: str  # Twilio's own value, as received


@dataclass(frozen=True, slots=True)
class TwilioInbound:
    from_number: str
    to_number: str
    body: str
    keyword: Keyword | None


def twilio_signature(auth_token: str, url: str, params: Params) -> str:
    """The X-Twilio-Signature Twilio computes for a request to ``url`` with POST ``params``."""
    signed = url
    for name in sorted(params):
        # A name sent more than once is signed once per distinct value, values sorted, as
        # Twilio's helper libraries do.
        for value in sorted(set(_values(params[name]))):
            signed += name + value
    digest = hmac.new(auth_token.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_twilio_signature(auth_token: str, url: str, params: Params, signature: str) -> bool:
    """Whether ``signature`` (the X-Twilio-Signature header) is Twilio's for this request.

    Twilio may sign a URL with or without its port, so, as its helper libraries do, a URL with
    a port is also tried without it, and one without a port with the scheme's default."""
    given = signature.strip().encode()
    matched = False
    for candidate in _url_variants(url):
        expected = twilio_signature(auth_token, candidate, params).encode()
        # Every variant is compared, so the time taken does not tell which one matched.
        matched |= hmac.compare_digest(expected, given)
    return matched


def parse_status_callback(params: Params, *, url: str | None = None) -> TwilioStatus:
    """A status callback's fields. The notification id is read from the callback ``url``'s
    query when given (the POST parameters do not carry it), else from ``params``."""
    message_status = _first(params, "MessageStatus") or _first(params, "SmsStatus") or ""
    message_status = message_status.strip().lower()
    error_code = (_first(params, "ErrorCode") or "").strip() or None
    outcome = STATUS_OUTCOMES.get(message_status)
    if outcome == "failed" and error_code in BOUNCE_ERROR_CODES:
        outcome = "bounced"
    notification = None
    if url is not None:
        found = parse_qs(urlsplit(url).query).get(NOTIFICATION_PARAMETER)
        notification = found[0] if found else None
    if notification is None:
        notification = _first(params, NOTIFICATION_PARAMETER)
    return TwilioStatus(
        message_sid=_first(params, "MessageSid") or _first(params, "SmsSid") or "",
        status=outcome,
        error_code=error_code,
        notification=notification,
        message_status=message_status,
    )


def parse_inbound(params: Params) -> TwilioInbound:
    body = _first(params, "Body") or ""
    return TwilioInbound(
        from_number=_first(params, "From") or "",
        to_number=_first(params, "To") or "",
        body=body,
        keyword=keyword_of(body),
    )


def keyword_of(body: str) -> Keyword | None:
    """The keyword a whole message is, case-insensitively and ignoring surrounding spaces."""
    return KEYWORDS.get(body.strip().upper())


def _values(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _first(params: Params, name: str) -> str | None:
    if name not in params:
        return None
    values = _values(params[name])
    return values[0] if values else None


def _url_variants(url: str) -> list[str]:
    parts = urlsplit(url)
    variants = [url]
    default_port = {"https": 443, "http": 80}.get(parts.scheme)
    if parts.hostname is None or default_port is None:
        return variants
    host = parts.netloc.rsplit("@", 1)[-1]
    userinfo = parts.netloc[: len(parts.netloc) - len(host)]
    if parts.port is not None:
        netloc = userinfo + host.rsplit(":", 1)[0]
    else:
        netloc = f"{userinfo}{host}:{default_port}"
    variants.append(urlunsplit(parts._replace(netloc=netloc)))
    return variants
