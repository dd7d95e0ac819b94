"""Web Push to browsers: RFC 8030 delivery, RFC 8291 payload encryption, RFC 8292 VAPID.

Followed: RFC 8030 "Generic Event Delivery Using HTTP Push" section 5 (POST to the push
resource, 201 Created with Location, TTL 5.2, Urgency 5.3, Topic 5.4) and 7 (413 for an
oversized payload, 404/410 once the subscription is gone, 429 under load); the W3C Push API
``PushSubscription.toJSON()`` shape for the address; ``webpush_crypto`` for the rest.

The stable message id travels inside the encrypted payload as ``notification_id``, and a
digest of it is the ``Topic``: a push service replaces a still-undelivered message with the
same topic, so a repeat sent after a crash replaces the first instead of showing twice.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from dataclasses import dataclass

import httpx

from tidings.delivery import webpush_crypto
from tidings.delivery.providers.base import (
    InvalidRecipientError,
    OutboundMessage,
    PermanentSendError,
    PushProvider,
    SendReceipt,
)
from tidings.delivery.providers.http import error_for_status, request

# RFC 8030 5.4: at most 32 characters from the URL and filename safe base64 alphabet.
_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")
_GONE = frozenset({404, 410})


@dataclass(frozen=True, slots=True)
class Subscription:
    endpoint: str
    p256dh: bytes
    auth: bytes


def parse_subscription(address: str) -> Subscription:
    """A push subscription as ``PushSubscription.toJSON()`` gives it. Raises ValueError."""
    try:
        data = json.loads(address)
        endpoint = data["endpoint"]
        keys = data["keys"]
        p256dh = webpush_crypto.b64url_decode(keys["p256dh"])
        auth = webpush_crypto.b64url_decode(keys["auth"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a push subscription: {exc!r}") from exc
    if not isinstance(endpoint, str):
        raise ValueError("push subscription endpoint is not a string")
    webpush_crypto.endpoint_origin(endpoint)
    webpush_crypto.load_p256_public(p256dh)
    if len(auth) != webpush_crypto.AUTH_SECRET_BYTES:
        raise ValueError("push subscription auth secret is not 16 bytes")
    return Subscription(endpoint=endpoint, p256dh=p256dh, auth=auth)


def push_topic(message_id: str) -> str | None:
    """A short stable Topic for a message, or None when it would break RFC 8030 5.4."""
    digest = hashlib.sha256(message_id.encode()).digest()[:24]
    topic = base64.urlsafe_b64encode(digest).decode("ascii")  # 24 bytes: 32 chars, no "="
    return topic if _TOPIC.fullmatch(topic) else None


def payload(message: OutboundMessage) -> bytes:
    parts = message.rendered.parts
    return json.dumps(
        {
            "title": parts.get("title", ""),
            "body": parts.get("txt", ""),
            "notification_id": message.message_id,
            "kind": message.kind,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()


class WebPushProvider(PushProvider):
    name = "webpush"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        vapid_private_key: str,
        vapid_subject: str,
        ttl: int = 86400,
    ) -> None:
        if ttl < 0:
            raise ValueError("TTL is a number of seconds, zero or more (RFC 8030 5.2)")
        if not vapid_subject.startswith(("mailto:", "https:")):
            raise ValueError("VAPID subject must be a mailto: or https: URI (RFC 8292 2.1)")
        self._client = client
        self._key = webpush_crypto.load_vapid_private_key(vapid_private_key)
        self._subject = vapid_subject
        self._ttl = ttl

    async def send(self, message: OutboundMessage) -> SendReceipt:
        try:
            subscription = parse_subscription(message.address)
        except ValueError as exc:
            raise InvalidRecipientError(f"webpush: {exc}") from exc
        try:
            body = webpush_crypto.encrypt(
                payload(message), ua_public=subscription.p256dh, auth_secret=subscription.auth
            )
        except ValueError as exc:
            raise PermanentSendError(f"webpush: cannot encrypt the payload: {exc}") from exc
        headers = {
            # RFC 8291 section 4: only aes128gcm; RFC 8188 section 2 for the body layout.
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(self._ttl),
            # RFC 8030 5.3: "high" may wake the device; the rest can wait for a good moment.
            "Urgency": "high" if message.priority == "critical" else "normal",
            "Authorization": webpush_crypto.vapid_authorization(
                subscription.endpoint, self._key, self._subject, now=time.time()
            ),
        }
        topic = push_topic(message.message_id)
        if topic is not None:
            headers["Topic"] = topic
        response = await request(
            self._client, self.name, "POST", subscription.endpoint, headers=headers, content=body
        )
        if response.status_code in _GONE:
            # RFC 8030 7.3: the subscription expired or was removed by the user agent.
            raise InvalidRecipientError(
                f"webpush: subscription is gone (HTTP {response.status_code})"
            )
        if response.status_code == 413:
            raise PermanentSendError("webpush: payload too large for the push service (413)")
        if not response.is_success:
            raise error_for_status(self.name, response)
        # RFC 8030 5: 201 Created, Location is the push message resource.
        return SendReceipt(provider_message_id=response.headers.get("Location"))
