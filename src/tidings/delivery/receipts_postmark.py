"""Postmark webhooks: authenticate the call, and read one receipt out of its JSON.

Docs followed: Postmark webhooks (https://postmarkapp.com/developer/webhooks/webhooks-overview),
"Protecting your webhooks": Postmark signs nothing; a webhook is secured with HTTP Basic auth
credentials set on the webhook (``https://user:pass@host/path`` or the Webhooks API
``HttpAuth``), which Postmark sends as ``Authorization: Basic`` (RFC 7617). The payloads:
Delivery, Bounce, Spam complaint, Open tracking, Click and Subscription change webhook pages
under developer/webhooks/, and the "Bounce types" table of the Bounce API
(https://postmarkapp.com/developer/api/bounce-api#bounce-types).

Decisions, for the fields Postmark leaves to interpretation:

- ``hard`` means "stop emailing this address": the Bounce types HardBounce, BadEmailAddress,
  ManuallyDeactivated, SpamComplaint and Unsubscribe, or any record with ``Inactive: true``,
  because Postmark itself then refuses further sends to the address (API error 406).
  SoftBounce, Transient, DnsError, AutoResponder, SpamNotification (delivered but filtered or
  blocked by content), Blocked and DMARCPolicy (sender reputation and setup, not the address)
  are soft unless Postmark deactivated the address.
- A Bounce of type SpamComplaint or Unsubscribe is a complaint, not a bounce: the person asked
  us to stop. SpamComplaint records are "complained" and hard. SMTPApiError and
  TemplateRenderingFailed are "failed": Postmark never handed the message over.
- SubscriptionChange with ``SuppressSending: true`` is "bounced" when the reason is
  HardBounce and "complained" otherwise (SpamComplaint, or ManualSuppression, which is how an
  unsubscribe through Postmark arrives); hard either way, since the stream now refuses the
  address. ``SuppressSending: false`` (a reactivation) is no delivery outcome: it yields
  None, and the caller acknowledges the call and records nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Outcome = Literal["delivered", "bounced", "complained", "opened", "clicked", "failed"]

HARD_BOUNCE_TYPES = frozenset(
    {"HardBounce", "BadEmailAddress", "ManuallyDeactivated", "SpamComplaint", "Unsubscribe"}
)
COMPLAINT_BOUNCE_TYPES = frozenset({"SpamComplaint", "Unsubscribe"})
# Postmark could not even hand the message over (SMTP API, template rendering): our failure.
FAILED_BOUNCE_TYPES = frozenset({"SMTPApiError", "TemplateRenderingFailed", "InboundError"})
RECORD_TYPES = ("Delivery", "Bounce", "SpamComplaint", "Open", "Click", "SubscriptionChange")


@dataclass(frozen=True, slots=True)
class PostmarkReceipt:
    # Postmark's MessageID, as returned by the send (None for manual suppressions).
    provider_message_id: str | None
    # Our notification id, from the Metadata the send attached (None for mail sent without).
    notification: str | None
    outcome: Outcome
    recipient: str
    hard: bool
    detail: str | None


def check_basic_auth(authorization_header: str | None, *, username: str, password: str) -> bool:
    """Whether an ``Authorization`` header carries exactly these Basic credentials.

    RFC 7617: ``Basic`` (any case) then base64 of ``user-id ":" password`` in UTF-8; the user
    id has no colon, the password may. Both parts are compared in constant time, and both
    always, so timing reveals neither which part nor how much of it was wrong.
    """
    if not authorization_header:
        return False
    scheme, _, encoded = authorization_header.strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    given_user, colon, given_password = decoded.partition(b":")
    user_ok = _same(given_user, username.encode("utf-8"))
    password_ok = _same(given_password, password.encode("utf-8"))
    return bool(colon) and user_ok and password_ok


def _same(given: bytes, expected: bytes) -> bool:
    # Digests first: compare_digest is constant time only for inputs of equal length.
    return hmac.compare_digest(hashlib.sha256(given).digest(), hashlib.sha256(expected).digest())


def parse_postmark_webhook(payload: Mapping[str, Any]) -> PostmarkReceipt | None:
    """The receipt one Postmark webhook call reports, or None for a suppression being lifted.

    Raises ValueError, naming the problem, for a payload that is not a Postmark webhook of a
    known RecordType.
    """
    record_type = payload.get("RecordType")
    if record_type not in RECORD_TYPES:
        raise ValueError(
            f"unknown Postmark RecordType {record_type!r}; "
            f"expected one of {', '.join(RECORD_TYPES)}"
        )
    provider_message_id = _optional_str(payload, "MessageID") or _optional_str(payload, "MessageId")
    notification = _notification(payload)

    def receipt(
        outcome: Outcome, recipient: str, *, hard: bool, detail: str | None
    ) -> PostmarkReceipt:
        return PostmarkReceipt(
            provider_message_id=provider_message_id,
            notification=notification,
            outcome=outcome,
            recipient=recipient,
            hard=hard,
            detail=detail,
        )

    if record_type == "Delivery":
        return receipt(
            "delivered",
            _required_str(payload, "Recipient"),
            hard=False,
            detail=_optional_str(payload, "Details"),
        )
    if record_type in ("Bounce", "SpamComplaint"):
        bounce_type = _optional_str(payload, "Type") or record_type
        inactive = payload.get("Inactive") is True
        complained = record_type == "SpamComplaint" or bounce_type in COMPLAINT_BOUNCE_TYPES
        description = _optional_str(payload, "Description")
        details = _optional_str(payload, "Details")
        outcome: Outcome = "bounced"
        if complained:
            outcome = "complained"
        elif bounce_type in FAILED_BOUNCE_TYPES:
            outcome = "failed"
        return receipt(
            outcome,
            _required_str(payload, "Email"),
            hard=complained or inactive or bounce_type in HARD_BOUNCE_TYPES,
            detail=": ".join(part for part in (bounce_type, details or description) if part),
        )
    if record_type == "Open":
        return receipt("opened", _required_str(payload, "Recipient"), hard=False, detail=None)
    if record_type == "Click":
        return receipt(
            "clicked",
            _required_str(payload, "Recipient"),
            hard=False,
            detail=_optional_str(payload, "OriginalLink"),
        )
    # SubscriptionChange
    suppress = payload.get("SuppressSending")
    if not isinstance(suppress, bool):
        raise ValueError("Postmark SubscriptionChange without a boolean SuppressSending")
    if not suppress:
        return None
    reason = _optional_str(payload, "SuppressionReason")
    origin = _optional_str(payload, "Origin")
    return receipt(
        "bounced" if reason == "HardBounce" else "complained",
        _required_str(payload, "Recipient"),
        hard=True,
        detail=" by ".join(part for part in (reason, origin) if part) or None,
    )


def _notification(payload: Mapping[str, Any]) -> str | None:
    metadata = payload.get("Metadata")
    if not isinstance(metadata, Mapping):
        return None
    value = metadata.get("notification_id")
    return value if isinstance(value, str) and value else None


def _optional_str(payload: Mapping[str, Any], key: str) -> str | None:
    value = payload.get(key)
    return value if isinstance(value, str) and value else None


def _required_str(payload: Mapping[str, Any], key: str) -> str:
    value = _optional_str(payload, key)
    if value is None:
        raise ValueError(f"Postmark {payload.get('RecordType')} webhook without {key!r}")
    return value
