"""Access tokens for Google APIs from a service-account key (server-to-server OAuth 2.0).

Followed: Google Identity "Using OAuth 2.0 for Server to Server Applications", section
"Preparing to make an authorized API call" / HTTP/REST (the JWT header, claim set, RS256
signature, the token request and its response), which is RFC 7523 section 2.1 (JWT bearer
grant) over RFC 6749 section 5 (token response and errors).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tidings.delivery.providers.base import PermanentSendError, TransientSendError
from tidings.delivery.providers.http import error_for_status, request

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Google: "exp ... has a maximum of 1 hour after the issued time".
ASSERTION_LIFETIME = 3600
# Renew this long before the token expires, so a request never leaves with a dying token.
REFRESH_MARGIN = 60.0
_REQUIRED_FIELDS = ("client_email", "private_key", "token_uri", "project_id")


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    client_email: str
    private_key: rsa.RSAPrivateKey
    private_key_id: str | None
    token_uri: str
    project_id: str

    @classmethod
    def from_info(cls, info: Mapping[str, str]) -> ServiceAccount:
        """From the fields of a downloaded service-account JSON key. Raises ValueError."""
        missing = [name for name in _REQUIRED_FIELDS if not info.get(name)]
        if missing:
            raise ValueError(f"service account key is missing {', '.join(missing)}")
        try:
            key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
        except ValueError as exc:
            raise ValueError("service account private_key is not a PEM private key") from exc
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("service account private_key must be an RSA key (RS256)")
        return cls(
            client_email=info["client_email"],
            private_key=key,
            private_key_id=info.get("private_key_id") or None,
            token_uri=info["token_uri"],
            project_id=info["project_id"],
        )


def assertion(account: ServiceAccount, *, scope: str, now: int) -> str:
    """The signed JWT the token endpoint exchanges for an access token."""
    header: dict[str, str] = {"alg": "RS256", "typ": "JWT"}
    if account.private_key_id:
        # Names which of the account's keys signed, so Google need not try each one.
        header["kid"] = account.private_key_id
    claims = {
        "iss": account.client_email,
        "scope": scope,
        # Google: aud is the token endpoint the assertion is sent to.
        "aud": account.token_uri,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME,
    }
    signing_input = (
        _b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    # RS256 = RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 section 3.3).
    signature = account.private_key.sign(
        signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
    )
    return signing_input + "." + _b64url(signature)


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    renew_at: float


class GoogleAccessTokens:
    """One cached access token per service account, fetched by one caller at a time."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        account: ServiceAccount,
        scope: str = FCM_SCOPE,
        provider: str = "google oauth",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._account = account
        self._scope = scope
        self._provider = provider
        self._clock = clock
        self._token: _Token | None = None
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        cached = self._token
        if cached is not None and self._clock() < cached.renew_at:
            return cached.value
        async with self._lock:
            # Another caller may have fetched while this one waited for the lock.
            cached = self._token
            if cached is not None and self._clock() < cached.renew_at:
                return cached.value
            self._token = await self._fetch()
            return self._token.value

    def invalidate(self, value: str) -> None:
        """Forget ``value`` after the API refused it; a newer token is kept."""
        if self._token is not None and self._token.value == value:
            self._token = None

    async def _fetch(self) -> _Token:
        now = self._clock()
        response = await request(
            self._client,
            self._provider,
            "POST",
            self._account.token_uri,
            # Google's token request: form-encoded grant_type and assertion.
            data={
                "grant_type": JWT_BEARER_GRANT,
                "assertion": assertion(self._account, scope=self._scope, now=int(now)),
            },
        )
        if response.status_code in (400, 401):
            # RFC 6749 5.2: invalid_grant / invalid_client mean the key itself is refused
            # (revoked, deleted, wrong account, clock far off); retrying cannot fix it.
            raise PermanentSendError(
                f"{self._provider}: the token endpoint refused the service account "
                f"{self._account.client_email} ({_oauth_error(response)}); check that the "
                "service-account key is current, not revoked, and that the host clock is right"
            )
        if not response.is_success:
            raise error_for_status(self._provider, response, "token endpoint")
        try:
            body = response.json()
            value = body["access_token"]
            expires_in = float(body.get("expires_in", ASSERTION_LIFETIME))
        except (ValueError, KeyError, TypeError) as exc:
            raise TransientSendError(
                f"{self._provider}: unreadable token endpoint reply: {response.text[:200]}"
            ) from exc
        if not isinstance(value, str) or not value:
            raise TransientSendError(f"{self._provider}: token endpoint sent no access_token")
        return _Token(value=value, renew_at=now + expires_in - min(REFRESH_MARGIN, expires_in / 2))


def _b64url(data: bytes) -> str:
    # RFC 7515 section 2: base64url without padding.
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _oauth_error(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if not isinstance(body, dict):
        return f"HTTP {response.status_code}"
    error = body.get("error", f"HTTP {response.status_code}")
    description = body.get("error_description")
    return f"{error}: {description}" if description else str(error)
