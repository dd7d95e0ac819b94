"""Push through Firebase Cloud Messaging, HTTP v1 API.

Followed: Firebase "REST Resource: projects.messages" (method ``send`` and the ``Message``,
``Notification``, ``AndroidConfig`` and ``ApnsConfig`` fields), "Set the priority of a
message" (android ``priority`` normal/high, ``apns-priority`` 5/10), "FCM error codes" and
the ``ErrorCode`` reference (errors carry a ``google.firebase.fcm.v1.FcmError`` detail with
an ``errorCode``, and a ``google.rpc.BadRequest`` detail naming the invalid field).

The stable message id travels in ``message.data.notification_id`` (FCM has no idempotency
key), so the app can drop a repeat delivered after a crash between send and record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from tidings.delivery.google_oauth import FCM_SCOPE, GoogleAccessTokens, ServiceAccount
from tidings.delivery.providers.base import (
    InvalidRecipientError,
    OutboundMessage,
    PermanentSendError,
    PushProvider,
    SendError,
    SendReceipt,
)
from tidings.delivery.providers.http import error_for_status, request

FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
# ErrorCode reference: the token is dead (404) or belongs to another sender (403).
_DEAD_TOKEN_CODES = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})
# A 401 about the APNs certificate or web push key, not our access token: no refresh helps.
_APNS_AUTH = "THIRD_PARTY_AUTH_ERROR"


def fcm_message(message: OutboundMessage) -> dict[str, Any]:
    """The ``Message`` resource for one device token."""
    parts = message.rendered.parts
    high = message.priority == "critical"
    return {
        "message": {
            "token": message.address,
            "notification": {"title": parts.get("title", ""), "body": parts.get("txt", "")},
            # Message.data is map<string, string>: every value must be a string.
            "data": {"notification_id": message.message_id, "kind": message.kind},
            "android": {"priority": "high" if high else "normal"},
            # APNs: 10 delivers at once, 5 lets the device batch for power.
            "apns": {"headers": {"apns-priority": "10" if high else "5"}},
        }
    }


def _error_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _error_code(error: Mapping[str, Any]) -> str | None:
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and detail.get("@type") == FCM_ERROR_TYPE:
            code = detail.get("errorCode")
            return str(code) if code else None
    return None


def _names_the_token(error: Mapping[str, Any]) -> bool:
    """Whether an INVALID_ARGUMENT is about the registration token rather than the payload."""
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and detail.get("@type") == BAD_REQUEST_TYPE:
            for violation in detail.get("fieldViolations") or ():
                if isinstance(violation, dict) and violation.get("field") == "message.token":
                    return True
    # Error codes page, example 2: the token case may come with only a message.
    return "registration token" in str(error.get("message", "")).lower()


def classify_error(response: httpx.Response) -> SendError:
    """The SendError an FCM v1 error reply stands for."""
    error = _error_body(response)
    code = _error_code(error)
    detail = " ".join(
        str(part) for part in (code or error.get("status"), error.get("message")) if part
    )
    if code in _DEAD_TOKEN_CODES:
        return InvalidRecipientError(f"fcm: {detail}")
    if response.status_code == 400 and _names_the_token(error):
        return InvalidRecipientError(f"fcm: invalid registration token: {detail}")
    # QUOTA_EXCEEDED (429), UNAVAILABLE (503), INTERNAL (500): transient with Retry-After;
    # THIRD_PARTY_AUTH_ERROR (401) and other 4xx: the request or project setup is wrong.
    return error_for_status("fcm", response, detail)


class FcmPushProvider(PushProvider):
    name = "fcm"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        service_account: Mapping[str, str],
        base_url: str = "https://fcm.googleapis.com",
    ) -> None:
        self._client = client
        account = ServiceAccount.from_info(service_account)
        self._tokens = GoogleAccessTokens(client, account=account, scope=FCM_SCOPE, provider="fcm")
        self._url = f"{base_url.rstrip('/')}/v1/projects/{account.project_id}/messages:send"

    async def send(self, message: OutboundMessage) -> SendReceipt:
        body = fcm_message(message)
        token = await self._tokens.token()
        response = await self._post(token, body)
        if response.status_code == 401 and _error_code(_error_body(response)) != _APNS_AUTH:
            # The access token was revoked or expired early: fetch a new one, once.
            self._tokens.invalidate(token)
            token = await self._tokens.token()
            response = await self._post(token, body)
            if response.status_code == 401:
                raise PermanentSendError(
                    "fcm: a freshly issued access token was refused too (HTTP 401); check the "
                    f"service account and that the FCM API is enabled: {response.text[:200]}"
                )
        if not response.is_success:
            raise classify_error(response)
        try:
            name = response.json()["name"]
        except (ValueError, KeyError, TypeError):
            name = None
        # Success returns the Message resource; its name is projects/*/messages/{id}.
        return SendReceipt(provider_message_id=str(name) if name else None)

    async def _post(self, token: str, body: dict[str, Any]) -> httpx.Response:
        return await request(
            self._client,
            self.name,
            "POST",
            self._url,
            headers={"Authorization": f"Bearer {token}"},
            json=body,
        )
