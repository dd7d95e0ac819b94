"""What HTTP providers share: one client with explicit timeouts, and one reading of replies.

A reply is classified the same way for every provider API: 2xx is sent; 408, 425, 429 and
5xx are transient (429 and 503 may say when to come back, RFC 9110 10.2.3 Retry-After);
any other 4xx cannot succeed by trying again and is permanent. Timeouts, refused and reset
connections, and a reply cut off mid-body are transient.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from tidings.delivery.providers.base import PermanentSendError, SendError, TransientSendError

TRANSIENT_STATUS = frozenset({408, 425, 429})
DEFAULT_CONNECT_TIMEOUT = 5.0
ERROR_BODY_CHARS = 300


def new_client(*, timeout: float, connections: int = 20) -> httpx.AsyncClient:
    """The one client a worker's HTTP providers share (connection pooling across them)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=min(timeout, DEFAULT_CONNECT_TIMEOUT)),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        follow_redirects=False,
    )


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """RFC 9110 10.2.3: either delay-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        at = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return max(0.0, (at - (now or datetime.now(UTC))).total_seconds())


def error_for_status(provider: str, response: httpx.Response, detail: str = "") -> SendError:
    """The SendError a non-2xx reply stands for."""
    body = response.text[:ERROR_BODY_CHARS] if response.content else ""
    message = f"{provider} answered HTTP {response.status_code}"
    if detail or body:
        message += f": {detail or body}"
    if response.status_code in TRANSIENT_STATUS or response.status_code >= 500:
        return TransientSendError(
            message, retry_after=retry_after_seconds(response.headers.get("Retry-After"))
        )
    return PermanentSendError(message)


async def request(
    client: httpx.AsyncClient,
    provider: str,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    json: Any = None,
    data: Mapping[str, str] | None = None,
    content: bytes | None = None,
    auth: httpx.Auth | tuple[str, str] | None = None,
) -> httpx.Response:
    """Send one request; network failures become TransientSendError. The caller reads the
    reply (``response.is_success``) or turns it into an error with ``error_for_status``."""
    try:
        return await client.request(
            method,
            url,
            headers=headers,
            json=json,
            data=data,
            content=content,
            auth=auth,
        )
    except httpx.TimeoutException as exc:
        raise TransientSendError(f"{provider} timed out: {exc!r}") from exc
    except httpx.TransportError as exc:
        # Refused, reset, closed mid-reply (RemoteProtocolError): nothing says it was sent.
        raise TransientSendError(f"{provider} unreachable: {exc!r}") from exc
