"""Signed outbound webhooks for staff systems, following the Standard Webhooks specification.

Spec followed: Standard Webhooks 1.0.0 (https://www.standardwebhooks.com,
github.com/standard-webhooks/standard-webhooks, spec/standard-webhooks.md):

- "Webhook headers": ``webhook-id``, ``webhook-timestamp`` (integer unix seconds) and
  ``webhook-signature``, a space-delimited list of ``v1,<base64 HMAC-SHA256>`` signatures.
- "Signature scheme": the signed content is ``{msg_id}.{timestamp}.{payload}``, exactly the
  bytes sent; the symmetric secret is shown as ``whsec_<base64>`` and its decoded bytes are the
  HMAC key (24 to 64 bytes).
- "Delivery success and failure": 2xx is success; ``410 Gone`` means the receiver wants no
  more webhooks; 429 and 5xx are retried, honouring ``Retry-After``.

The ``webhook-id`` is the notification's stable message id, identical on every retry, so a
receiver that keeps seen ids (as the spec recommends) processes a resend once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
from datetime import UTC, datetime
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

SECRET_PREFIX = "whsec_"  # noqa: S105 - the spec's marker for a secret, not a secret
# Spec, "Signature scheme" table: random, at least 24 bytes, 512 bits at most.
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
DEFAULT_TOLERANCE_SECONDS = 300
SIGNATURE_VERSION = "v1"


def decode_secret(secret: str) -> bytes:
    """The HMAC key behind a ``whsec_<base64>`` secret (the prefix is optional, as in the
    reference libraries). Raises ValueError for anything that is not such a secret."""
    encoded = secret.strip()
    if encoded.startswith(SECRET_PREFIX):
        encoded = encoded[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("webhook secret must be 'whsec_' followed by base64") from exc
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(
            f"webhook secret must decode to {MIN_SECRET_BYTES}-{MAX_SECRET_BYTES} bytes, "
            f'got {len(key)}; generate one with: python -c "import base64, os; '
            f"print('whsec_' + base64.b64encode(os.urandom(32)).decode())\""
        )
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature over ``{msg_id}.{timestamp}.{body}``."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def verify_signature(
    secret: str,
    msg_id: str,
    timestamp: str,
    body: bytes,
    signature_header: str,
    *,
    now: datetime,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> bool:
    """Whether a received webhook is authentic and fresh (spec, "Verifying signatures").

    ``timestamp`` and ``signature_header`` are the raw header values; ``body`` the raw bytes.
    Any one matching ``v1`` signature among the space-separated list is enough (secret
    rotation sends several). Other versions (``v1a``) are ignored, not failed.
    """
    try:
        key = decode_secret(secret)
    except ValueError:
        return False
    # Digits only: "1e9", "-5" or " 7" must not parse, and a digit-only timestamp keeps the
    # "{id}.{timestamp}.{body}" split unambiguous although our ids contain one full stop.
    if not timestamp.isascii() or not timestamp.isdigit():
        return False
    if abs(now.timestamp() - int(timestamp)) > tolerance:
        return False
    expected = base64.b64decode(sign(key, msg_id, int(timestamp), body).split(",", 1)[1])
    matched = False
    for candidate in signature_header.split(" "):
        version, _, encoded = candidate.partition(",")
        if version != SIGNATURE_VERSION or not encoded:
            continue
        try:
            given = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        # Constant time per candidate (spec: "use a constant time comparison function").
        matched |= hmac.compare_digest(expected, given)
    return matched


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def redact_url(url: str) -> str:
    """Scheme and host only: a hook URL's path or query is often its secret (Slack's is)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    return f"{parts.scheme}://{parts.hostname or ''}/..."


def target_url_problem(url: str) -> str | None:
    """Why a target URL is refused, or None. HTTPS only (spec, "Enforcing HTTPS"): payloads
    carry customer data; plain HTTP is allowed only to this machine's loopback."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "webhook target is not a URL"
    if parts.scheme == "https" and host:
        return None
    if parts.scheme == "http" and is_loopback_host(host):
        return None
    return f"webhook target {redact_url(url)} must be an https:// URL"


def webhook_body(message: OutboundMessage, *, sent_at: datetime) -> bytes:
    parts = message.rendered.parts
    payload = {
        # Spec, "Payload structure": a full-stop delimited event type.
        "type": message.kind,
        "notification_id": message.notification_id,
        "title": parts.get("title") or parts.get("subject", ""),
        "text": parts.get("txt", ""),
        "locale": message.rendered.locale,
        "sent_at": sent_at.isoformat(timespec="seconds"),
    }
    # Minified, and signed as these exact bytes (spec: "the payload sent is the same as the
    # payload signed").
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class SignedWebhookProvider(WebhookProvider):
    name = "webhook"

    def __init__(self, client: httpx.AsyncClient, *, secret: str) -> None:
        self._client = client
        self._key = decode_secret(secret)

    async def send(self, message: OutboundMessage) -> SendReceipt:
        problem = target_url_problem(message.address)
        if problem is not None:
            raise PermanentSendError(problem)
        now = datetime.now(UTC)
        timestamp = int(now.timestamp())
        body = webhook_body(message, sent_at=now)
        msg_id = message.message_id
        response = await request(
            self._client,
            self.name,
            "POST",
            message.address,
            headers={
                "Content-Type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(self._key, msg_id, timestamp, body),
            },
            content=body,
        )
        if response.is_success:
            # Receivers have no id of their own to give back; ours is the one they store.
            return SendReceipt(provider_message_id=msg_id)
        if response.status_code == httpx.codes.GONE:
            # Spec, "Delivery success and failure": 410 means stop sending to this endpoint.
            raise InvalidRecipientError(
                f"webhook target {redact_url(message.address)} answered 410 Gone"
            )
        raise error_for_status(self.name, response)
