"""FCM HTTP v1 against a loopback stand-in for both Google endpoints: the OAuth token
endpoint (which verifies the service-account JWT as Google does) and messages:send (which
accepts only the tokens it issued and the documented Message shape)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.support.http_stub import HttpStub, Reply, Request
from tidings.delivery.google_oauth import GoogleAccessTokens, ServiceAccount
from tidings.delivery.providers.base import (
    InvalidRecipientError,
    OutboundMessage,
    PermanentSendError,
    SendError,
    SendReceipt,
    TransientSendError,
)
from tidings.delivery.providers.http import new_client
from tidings.delivery.providers.push_fcm import FcmPushProvider
from tidings.templates.rendering import RenderedMessage

PROJECT = "shop-prod-1234"
CLIENT_EMAIL = "tidings@shop-prod-1234.iam.gserviceaccount.com"
KEY_ID = "4f1c2a9e0b7d"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def fcm_error(status: int, state: str, message: str, code: str | None = None) -> Reply:
    """The documented google.rpc.Status error body, with an FcmError detail when given."""
    error: dict[str, object] = {"code": status, "message": message, "status": state}
    if code:
        error["details"] = [{"@type": FCM_ERROR, "errorCode": code}]
    return Reply(status, {"error": error})


def invalid_argument(message: str) -> Reply:
    return fcm_error(400, "INVALID_ARGUMENT", message, "INVALID_ARGUMENT")


@dataclass
class Google:
    """Google's token endpoint and FCM for one project, one service-account key."""

    public_key: rsa.RSAPublicKey
    token_uri: str = ""
    registered: set[str] = field(default_factory=set)
    issued: set[str] = field(default_factory=set)
    token_requests: int = 0
    send_requests: int = 0
    expires_in: int = 3599
    token_fault: Reply | None = None
    send_fault: Reply | None = None
    revoke_after_issue: int = 0  # revoke this many freshly issued tokens right away
    refuse_all_bearers: bool = False
    sent: list[dict[str, object]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def handle(self, request: Request) -> Reply:
        if request.path == "/token":
            return self.token(request)
        if request.path.startswith("/v1/projects/"):
            return self.send(request)
        return Reply(404)

    def token(self, request: Request) -> Reply:
        with self._lock:
            self.token_requests += 1
        if self.token_fault is not None:
            return self.token_fault
        if request.method != "POST" or not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return Reply(400, {"error": "invalid_request"})
        form = request.form()
        if form.get("grant_type") != [GRANT]:
            return Reply(400, {"error": "unsupported_grant_type"})
        problem = self.check_assertion(form.get("assertion", [""])[0])
        if problem:
            return Reply(400, {"error": "invalid_grant", "error_description": problem})
        with self._lock:
            token = f"ya29.test-{next(self._ids)}"
            if self.revoke_after_issue > 0:
                self.revoke_after_issue -= 1
            else:
                self.issued.add(token)
        return Reply(
            200, {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}
        )

    def check_assertion(self, jwt: str) -> str | None:
        try:
            head_b64, claims_b64, signature = jwt.split(".")
            self.public_key.verify(
                b64url_decode(signature),
                f"{head_b64}.{claims_b64}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
            header = json.loads(b64url_decode(head_b64))
            claims = json.loads(b64url_decode(claims_b64))
        except InvalidSignature:
            return "Invalid JWT Signature."
        except ValueError:
            return "Invalid JWT."
        now = time.time()
        if header != {"alg": "RS256", "typ": "JWT", "kid": KEY_ID}:
            return "Invalid JWT header."
        if claims.get("iss") != CLIENT_EMAIL or claims.get("scope") != SCOPE:
            return "Invalid issuer or scope."
        if claims.get("aud") != self.token_uri:
            return "Invalid JWT: audience."
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int):
            return "Invalid JWT: iat/exp."
        if not iat - 60 <= now <= exp or exp - iat > 3600:
            return "Invalid JWT: Token must be a short-lived token (60 minutes)."
        return None

    def send(self, request: Request) -> Reply:
        with self._lock:
            self.send_requests += 1
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if self.refuse_all_bearers or bearer not in self.issued:
            return fcm_error(
                401, "UNAUTHENTICATED", "Request had invalid authentication credentials."
            )
        if request.method != "POST" or request.path != f"/v1/projects/{PROJECT}/messages:send":
            return fcm_error(404, "NOT_FOUND", "Requested entity was not found.")
        if request.headers.get("content-type") != "application/json":
            return invalid_argument("Invalid JSON payload received.")
        problem = check_message(request.json())
        if problem:
            return invalid_argument(problem)
        if self.send_fault is not None:
            return self.send_fault
        message = request.json()["message"]
        if message["token"] not in self.registered:
            return fcm_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
        self.sent.append(message)
        return Reply(200, {"name": f"projects/{PROJECT}/messages/0:{len(self.sent)}%abc"})


def check_message(body: object) -> str | None:
    """The Message fields this provider uses, as the v1 reference types them."""
    if not isinstance(body, dict) or set(body) != {"message"}:
        return "Invalid JSON payload received. Unknown name."
    message = body["message"]
    if not isinstance(message.get("token"), str) or not message["token"]:
        return "Recipient of the message is not set."
    notification = message.get("notification", {})
    if set(notification) - {"title", "body"} or not all(
        isinstance(value, str) for value in notification.values()
    ):
        return "Invalid value at 'message.notification'"
    data = message.get("data", {})
    if not all(isinstance(value, str) for value in data.values()):
        return "Invalid value at 'message.data[0].value' (TYPE_STRING)"
    if message.get("android", {}).get("priority") not in ("normal", "high"):
        return "Invalid value at 'message.android.priority'"
    if message.get("apns", {}).get("headers", {}).get("apns-priority") not in ("5", "10"):
        return "Invalid apns-priority"
    return None


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def env(rsa_key: rsa.RSAPrivateKey) -> Iterator[tuple[Google, HttpStub]]:
    state = Google(public_key=rsa_key.public_key(), registered={"device-token-1"})
    stub = HttpStub(state.handle).start()
    state.token_uri = f"{stub.url}/token"
    yield state, stub
    stub.stop()


Env = tuple[Google, HttpStub]


def service_account(key: rsa.RSAPrivateKey, token_uri: str) -> dict[str, str]:
    """The fields of a downloaded service-account JSON key."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": KEY_ID,
        "private_key": pem,
        "client_email": CLIENT_EMAIL,
        "token_uri": token_uri,
    }


def outbound(
    address: str = "device-token-1",
    *,
    notification_id: str = "ntf_1",
    priority: str = "transactional",
) -> OutboundMessage:
    return OutboundMessage(
        notification_id=notification_id,
        channel="push",
        kind="shipment.out_for_delivery",
        address=address,
        customer_id="cus_1",
        rendered=RenderedMessage(
            kind="shipment.out_for_delivery",
            channel="push",
            locale="en",
            parts={"title": "Out for delivery", "txt": "Order #1042 arrives today."},
            version="v1",
        ),
        priority=priority,
    )


def send_all(
    env: Env,
    key: rsa.RSAPrivateKey,
    messages: list[OutboundMessage],
    *,
    concurrently: bool = False,
) -> list[SendReceipt | BaseException]:
    google, stub = env

    async def run() -> list[SendReceipt | BaseException]:
        client = new_client(timeout=5.0)
        provider = FcmPushProvider(
            client, service_account=service_account(key, google.token_uri), base_url=stub.url
        )
        try:
            if concurrently:
                return list(
                    await asyncio.gather(
                        *(provider.send(m) for m in messages), return_exceptions=True
                    )
                )
            results: list[SendReceipt | BaseException] = []
            for message in messages:
                try:
                    results.append(await provider.send(message))
                except SendError as exc:
                    results.append(exc)
            return results
        finally:
            await provider.close()
            await client.aclose()

    return asyncio.run(run())


def test_send_delivers_the_documented_message(env: Env, rsa_key: rsa.RSAPrivateKey) -> None:
    google, _ = env
    message = outbound(priority="critical")
    [receipt] = send_all(env, rsa_key, [message])
    assert isinstance(receipt, SendReceipt)
    assert receipt.provider_message_id == f"projects/{PROJECT}/messages/0:1%abc"
    [sent] = google.sent
    assert sent["token"] == "device-token-1"
    assert sent["notification"] == {
        "title": "Out for delivery",
        "body": "Order #1042 arrives today.",
    }
    assert sent["data"] == {
        "notification_id": message.message_id,
        "kind": "shipment.out_for_delivery",
    }
    assert sent["android"] == {"priority": "high"}
    assert sent["apns"] == {"headers": {"apns-priority": "10"}}


def test_non_critical_uses_normal_priority(env: Env, rsa_key: rsa.RSAPrivateKey) -> None:
    google, _ = env
    [receipt] = send_all(env, rsa_key, [outbound(priority="bulk")])
    assert isinstance(receipt, SendReceipt)
    [sent] = google.sent
    assert sent["android"] == {"priority": "normal"}
    assert sent["apns"] == {"headers": {"apns-priority": "5"}}


def test_one_token_fetch_serves_many_concurrent_sends(env: Env, rsa_key: rsa.RSAPrivateKey) -> None:
    google, _ = env
    messages = [outbound(notification_id=f"ntf_{i}") for i in range(8)]
    results = send_all(env, rsa_key, messages, concurrently=True)
    assert all(isinstance(result, SendReceipt) for result in results)
    assert google.token_requests == 1
    assert len(google.sent) == 8


def test_unregistered_token_is_an_invalid_recipient(env: Env, rsa_key: rsa.RSAPrivateKey) -> None:
    [error] = send_all(env, rsa_key, [outbound("uninstalled-app-token")])
    assert isinstance(error, InvalidRecipientError)
    assert "UNREGISTERED" in str(error)


def test_sender_id_mismatch_is_an_invalid_recipient(env: Env, rsa_key: rsa.RSAPrivateKey) -> None:
    google, _ = env
    google.send_fault = fcm_error(
        403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH"
    )
    [error] = send_all(env, rsa_key, [outbound()])
    assert isinstance(error, InvalidRecipientError)


def test_malformed_token_is_an_invalid_recipient_but_a_bad_payload_is_not(
    env: Env, rsa_key: rsa.RSAPrivateKey
) -> None:
    google, _ = env
    google.send_fault = invalid_argument(
        "The registration token is not a valid FCM registration token"
    )
    [token_error] = send_all(env, rsa_key, [outbound()])
    assert isinstance(token_error, InvalidRecipientError)
    google.send_fault = invalid_argument("Message is too big")
    [payload_error] = send_all(env, rsa_key, [outbound()])
    assert isinstance(payload_error, PermanentSendError)
    assert not isinstance(payload_error, InvalidRecipientError)


def test_quota_exceeded_is_transient_and_keeps_retry_after(
    env: Env, rsa_key: rsa.RSAPrivateKey
) -> None:
    google, _ = env
    quota = fcm_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.", "QUOTA_EXCEEDED")
    google.send_fault = Reply(quota.status, quota.body, headers={"Retry-After": "17"})
    [error] = send_all(env, rsa_key, [outbound()])
    assert isinstance(error, TransientSendError)
    assert error.retry_after == 17


@pytest.mark.parametrize(("status", "state"), [(503, "UNAVAILABLE"), (500, "INTERNAL")])
def test_unavailable_and_internal_are_transient(
    env: Env, rsa_key: rsa.RSAPrivateKey, status: int, state: str
) -> None:
    google, _ = env
    google.send_fault = fcm_error(status, state, "The service is currently unavailable.", state)
    [error] = send_all(env, rsa_key, [outbound()])
    assert isinstance(error, TransientSendError)


def test_a_refused_access_token_is_refreshed_once(env: Env, rsa_key: rsa.RSAPrivateKey) -> None:
    google, _ = env
    google.revoke_after_issue = 1  # the first token dies as soon as it is issued
    [receipt] = send_all(env, rsa_key, [outbound()])
    assert isinstance(receipt, SendReceipt)
    assert google.token_requests == 2
    assert google.send_requests == 2
    assert len(google.sent) == 1


def test_a_second_refusal_is_permanent(env: Env, rsa_key: rsa.RSAPrivateKey) -> None:
    google, _ = env
    google.refuse_all_bearers = True
    [error] = send_all(env, rsa_key, [outbound()])
    assert isinstance(error, PermanentSendError)
    assert google.token_requests == 2
    assert google.send_requests == 2


def test_apns_credential_error_is_permanent_without_a_token_refresh(
    env: Env, rsa_key: rsa.RSAPrivateKey
) -> None:
    google, _ = env
    google.send_fault = fcm_error(
        401, "UNAUTHENTICATED", "Auth error from APNS", "THIRD_PARTY_AUTH_ERROR"
    )
    [error] = send_all(env, rsa_key, [outbound()])
    assert isinstance(error, PermanentSendError)
    assert google.token_requests == 1


def test_a_key_google_does_not_know_fails_permanently_with_a_clear_reason(env: Env) -> None:
    google, _ = env
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    [error] = send_all(env, stranger, [outbound()])
    assert isinstance(error, PermanentSendError)
    assert "invalid_grant" in str(error)
    assert "Invalid JWT Signature" in str(error)
    assert google.send_requests == 0


def test_token_endpoint_outage_is_transient(env: Env, rsa_key: rsa.RSAPrivateKey) -> None:
    google, _ = env
    google.token_fault = Reply(503, "backend unavailable", headers={"Retry-After": "5"})
    [error] = send_all(env, rsa_key, [outbound()])
    assert isinstance(error, TransientSendError)
    assert error.retry_after == 5
    assert google.send_requests == 0


def test_token_is_renewed_before_it_expires(env: Env, rsa_key: rsa.RSAPrivateKey) -> None:
    google, _ = env
    google.expires_in = 600
    # Behind real time, as Google refuses assertions issued in the future.
    start = time.time() - 700
    clock = [start]
    account = ServiceAccount.from_info(service_account(rsa_key, google.token_uri))

    async def run() -> list[str]:
        async with new_client(timeout=5.0) as client:
            tokens = GoogleAccessTokens(client, account=account, clock=lambda: clock[0])
            first = await tokens.token()
            clock[0] = start + 500
            cached = await tokens.token()
            clock[0] = start + 600 - 30  # inside the renewal margin
            renewed = await tokens.token()
            return [first, cached, renewed]

    first, cached, renewed = asyncio.run(run())
    assert cached == first
    assert renewed != first
    assert google.token_requests == 2
