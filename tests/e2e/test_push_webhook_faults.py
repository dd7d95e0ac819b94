"""Push and webhook delivery under provider faults: one worker in process, real servers on
loopback, the same record as ``test_delivery_faults`` (SMS and email).

Four stand-ins, each checking requests with the handler of that provider's own tests:

- FCM HTTP v1 (``providers/test_push_fcm``): the same server is Google's OAuth token
  endpoint, which verifies the service-account JWT, and messages:send, which accepts only
  the tokens it issued and answers ``UNREGISTERED`` (404) for a token it does not know;
- Web Push (``providers/test_push_webpush``): VAPID checked, payload decrypted as the
  browser would, served over TLS because the worker only reaches https:// push resources;
  a subscription the browser dropped answers 410;
- signed webhooks (``providers/test_webhook_http``): the receiver verifies the Standard
  Webhooks signature on its own;
- Slack incoming webhooks (``providers/test_webhook_slack``): at ``hooks.slack.com``, which
  this process resolves to loopback, over TLS, so the worker picks the Slack provider by
  the hook's host exactly as in production.

Each records the stable message id every request carries, read where the provider documents
our reference: FCM ``message.data.notification_id``, Web Push ``notification_id`` inside the
encrypted payload, the ``webhook-id`` header, Slack's ``ref <id>`` context block.

Every provider meets every fault, one row each: a 500 to each message's first request, then
recovery; a 429 with Retry-After; a reply that hangs past the client's timeout; a connection
closed in the middle of the reply. The last two hit every third message, alternately before
and after the provider accepted it: only the sends lost after acceptance may arrive twice.
Breakers are kept out of it (a high threshold): what is counted is the retries.
"""

from __future__ import annotations

import itertools
import json
import socket
import ssl
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr
from sqlalchemy import Engine, func, select

from tests.delivery.providers import test_webhook_http as webhook_docs
from tests.delivery.providers import test_webhook_slack as slack_docs
from tests.delivery.providers.test_push_fcm import Google, fcm_error, service_account
from tests.delivery.providers.test_push_webpush import PushService, raw_key
from tests.delivery.test_push_delivery import TlsStub
from tests.support.events import order_placed, refund_authorized
from tests.support.http_stub import Reply, Request
from tests.support.providers import Fault, FaultPlan, ProviderApi, customer
from tests.support.tls import loopback_tls
from tests.support.work import drain
from tidings.config import Settings
from tidings.db.schema import delivery_attempts, delivery_jobs, devices, notifications
from tidings.db.types import utcnow
from tidings.delivery.devices import register_device
from tidings.delivery.webpush_crypto import b64url_encode, decrypt, public_key_bytes
from tidings.engine.addresses import fcm_token, push_subscription
from tidings.intake.cloudevents_http import BATCH
from tidings.runtime import Runtime, build_runtime

LIVE = 6  # messages to working addresses: every third first try is lost, once each way
DEAD = 2  # push only: devices their service says are gone
TIMEOUT = 0.3  # the worker's HTTP timeout
HANG = TIMEOUT * 3
RETRY_AFTER = 1  # seconds, as the provider's header says
SLACK_HOST = "hooks.slack.com"


# ------------------------------------------------------------------ the stand-ins


class StandIn(ProviderApi):
    """A provider's API with the fault tests' record, plus when each request arrived."""

    channel: str

    def __init__(self) -> None:
        super().__init__()
        self.times: defaultdict[str, list[float]] = defaultdict(list)
        self._times_lock = threading.Lock()

    def __call__(self, request: Request) -> Reply:
        stable = self.stable_id(request)
        if stable:
            with self._times_lock:
                self.times[stable].append(time.monotonic())
        return super().__call__(request)

    def error(self, status: int, **headers: str) -> Reply:
        """The provider's own answer for its trouble (500) or a rate limit (429)."""
        raise NotImplementedError

    def recipient(self, n: int, *, dead: bool) -> tuple[str, str] | str:
        """A push device (kind, address) for customer ``n``, or the webhook's target URL."""
        raise NotImplementedError

    def removed_devices(self) -> int:
        return 0


class FcmApi(StandIn):
    name = "fcm"
    channel = "push"

    def __init__(self, key: rsa.RSAPrivateKey, directory: Path) -> None:
        super().__init__()
        self.google = Google(public_key=key.public_key())
        self.google.token_uri = f"{self.url}/token"
        self.account = directory / "service-account.json"
        self.account.write_text(json.dumps(service_account(key, self.google.token_uri)))

    def stable_id(self, request: Request) -> str | None:
        if not request.path.endswith("/messages:send"):
            return None  # the token endpoint
        try:
            return str(request.json()["message"]["data"]["notification_id"])
        except (ValueError, KeyError, TypeError):
            return None

    def answer(self, request: Request, fault: Reply | None) -> tuple[Reply, bool]:
        if fault is not None and request.json()["message"]["token"] not in self.google.registered:
            fault = None  # no fault is planned for a dead token; this says so if one were
        sent = len(self.google.sent)
        self.google.send_fault = fault
        try:
            reply = self.google.handle(request)
        finally:
            self.google.send_fault = None
        return reply, len(self.google.sent) > sent

    def settings(self) -> dict[str, Any]:
        return {
            "push_providers": "fcm",
            "fcm_service_account_file": self.account,
            "fcm_api_url": self.url,
        }

    def error(self, status: int, **headers: str) -> Reply:
        # FCM error codes: INTERNAL (500), QUOTA_EXCEEDED (429) with Retry-After.
        state, code = {
            500: ("INTERNAL", "INTERNAL"),
            429: ("RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"),
        }[status]
        reply = fcm_error(status, state, "The service is busy.", code)
        return Reply(status, reply.body, headers=headers)

    def recipient(self, n: int, *, dead: bool) -> tuple[str, str]:
        token = fcm_token(f"eXaMpLe{n}:APA91bFakeButWellFormedRegistrationToken_{n:06d}-abc")
        if not dead:
            self.google.registered.add(token)
        return "fcm", token


class WebPushApi(StandIn):
    name = "webpush"
    channel = "push"

    def __init__(self, vapid_key: ec.EllipticCurvePrivateKey, context: ssl.SSLContext) -> None:
        super().__init__()
        self.vapid_key = vapid_key
        self.server = QuietTlsStub(self, context=context)
        self.push = PushService(
            vapid_public=public_key_bytes(vapid_key),
            ua_private=ec.generate_private_key(ec.SECP256R1()),
            auth=b"0123456789abcdef",
        )
        self.push.origin = self.url
        self.gone: set[str] = set()  # push resources the browser dropped

    def stable_id(self, request: Request) -> str | None:
        try:
            body = decrypt(
                request.body, ua_private=self.push.ua_private, auth_secret=self.push.auth
            )
            return str(json.loads(body)["notification_id"])
        except (ValueError, KeyError, TypeError):
            return None

    def answer(self, request: Request, fault: Reply | None) -> tuple[Reply, bool]:
        if request.path in self.gone:
            return Reply(410, "push subscription has unsubscribed or expired"), False
        delivered = len(self.push.delivered)
        self.push.fault = fault
        try:
            reply = self.push.handle(request)
        finally:
            self.push.fault = None
        return reply, len(self.push.delivered) > delivered

    def settings(self) -> dict[str, Any]:
        return {
            "push_providers": "webpush",
            "vapid_private_key": SecretStr(raw_key(self.vapid_key)),
            "vapid_subject": "mailto:ops@shop.example",
        }

    def error(self, status: int, **headers: str) -> Reply:
        return Reply(status, "Internal Server Error" if status == 500 else "", headers=headers)

    def recipient(self, n: int, *, dead: bool) -> tuple[str, str]:
        path = f"/push/browser-{n}"
        if dead:
            self.gone.add(path)
        subscription = {
            "endpoint": f"{self.url}{path}",
            "keys": {
                "p256dh": b64url_encode(public_key_bytes(self.push.ua_private)),
                "auth": b64url_encode(self.push.auth),
            },
        }
        return "webpush", push_subscription(subscription)


class WebhookApi(StandIn):
    name = "webhook"
    channel = "webhook"

    def stable_id(self, request: Request) -> str | None:
        return request.headers.get("webhook-id")

    def answer(self, request: Request, fault: Reply | None) -> tuple[Reply, bool]:
        # A receiver that answers 200 with a body: a 204 has none to cut in the middle.
        reply = webhook_docs.receiver(lambda _: fault or Reply(200, {"received": True}))(request)
        return reply, fault is None and reply.status == 200

    def settings(self) -> dict[str, Any]:
        return {"webhook_signing_secret": SecretStr(webhook_docs.SECRET)}

    def error(self, status: int, **headers: str) -> Reply:
        return Reply(status, "upstream trouble" if status == 500 else "slow down", headers=headers)

    def recipient(self, n: int, *, dead: bool) -> str:
        return f"{self.url}/hooks/tidings"


class SlackApi(StandIn):
    name = "slack"
    channel = "webhook"

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__()
        self.server = QuietTlsStub(self, context=context)

    def stable_id(self, request: Request) -> str | None:
        try:
            blocks = request.json()["blocks"]
        except (ValueError, KeyError, TypeError):
            return None
        for block in blocks:
            for element in block.get("elements", ()):
                text = str(element.get("text", ""))
                if block.get("type") == "context" and text.startswith("ref "):
                    return text.removeprefix("ref ")
        return None

    def answer(self, request: Request, fault: Reply | None) -> tuple[Reply, bool]:
        reply = slack_docs.slack(lambda _: fault or Reply(200, "ok"))(request)
        return reply, fault is None and reply.status == 200

    def settings(self) -> dict[str, Any]:
        return {}

    def error(self, status: int, **headers: str) -> Reply:
        return Reply(status, "rollup_error" if status == 500 else "rate_limited", headers=headers)

    def recipient(self, n: int, *, dead: bool) -> str:
        return f"https://{SLACK_HOST}:{self.server.port}{slack_docs.HOOK_PATH}"


# ------------------------------------------------------------------ TLS and Slack's name


class QuietTlsStub(TlsStub):
    """A client that gave up on a hanging reply is gone when it is written; over TLS that
    is an SSL error rather than a ConnectionError, and just as much the fault playing out."""

    def start(self) -> QuietTlsStub:
        super().start()
        server = self._server
        assert server is not None
        report = server.handle_error

        def handle_error(request: Any, client_address: Any) -> None:
            if not isinstance(sys.exc_info()[1], ssl.SSLError):
                report(request, client_address)

        server.handle_error = handle_error  # type: ignore[method-assign]
        return self


def resolve_slack_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """hooks.slack.com is 127.0.0.1 for this process (as a hosts-file entry would make it)."""
    resolve = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, bytes):
            host = host.decode()
        return resolve("127.0.0.1" if host == SLACK_HOST else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


PROVIDERS = ("fcm", "webpush", "webhook", "slack")
FAULTS = ("500", "429", "hang", "cut")


@pytest.fixture
def api(
    request: pytest.FixtureRequest,
    rsa_key: rsa.RSAPrivateKey,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[StandIn]:
    provider = request.param
    stand_in: StandIn
    if provider == "fcm":
        stand_in = FcmApi(rsa_key, tmp_path)
    elif provider == "webhook":
        stand_in = WebhookApi()
    else:
        ca_file, context = loopback_tls(tmp_path, [SLACK_HOST])
        # httpx reads it when the worker's client is made (trust_env).
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
        if provider == "webpush":
            stand_in = WebPushApi(ec.generate_private_key(ec.SECP256R1()), context)
        else:
            resolve_slack_to_loopback(monkeypatch)
            stand_in = SlackApi(context)
    stand_in.start()
    yield stand_in
    stand_in.server.stop()


# ------------------------------------------------------------------ the faults


def first_try_answered(reply: Reply) -> FaultPlan:
    """Every message's first request gets ``reply`` (the API takes nothing); the rest go
    through: the provider has recovered."""
    return lambda _stable, before: None if before else Fault(reply=reply)


def every_third_first_try(fault: Callable[[bool], Fault]) -> FaultPlan:
    """The first request of every third message goes wrong; alternately before and after
    the provider accepted it."""
    firsts = itertools.count(1)

    def plan(_stable: str, before: int) -> Fault | None:
        if before:
            return None
        n = next(firsts)
        return fault(n % 6 == 0) if n % 3 == 0 else None

    return plan


def plan_for(api: StandIn, fault: str) -> FaultPlan:
    if fault == "500":
        return first_try_answered(api.error(500))
    if fault == "429":
        return first_try_answered(api.error(429, **{"Retry-After": str(RETRY_AFTER)}))
    if fault == "hang":
        return every_third_first_try(lambda accepted: Fault(hang=HANG, after_acceptance=accepted))
    return every_third_first_try(lambda accepted: Fault(cut=True, after_acceptance=accepted))


def only_for(ids: set[str], plan: FaultPlan) -> FaultPlan:
    """The plan for these stable ids; other requests are answered as the API would."""
    return lambda stable, before: plan(stable, before) if stable in ids else None


# ------------------------------------------------------------------ the scenario


def rules(api: StandIn) -> str:
    if api.channel == "push":
        return """\
categories:
  refund: {critical: true}
policy:
  quiet_hours: null
rules:
  - {id: refund-push, event: refund.authorized, kind: refund_authorized,
     category: refund, priority: critical, channels: [push]}
"""
    return f"""\
categories:
  refund: {{critical: true}}
policy:
  quiet_hours: null
stakeholders:
  ops: {{webhook: "{api.recipient(0, dead=False)}", locale: en}}
rules:
  - {{id: refund-to-ops, event: refund.authorized, kind: refund_authorized,
     category: refund, priority: critical, channels: [webhook], to: [ops]}}
"""


_orders = itertools.count(1)


def submit(runtime: Runtime, events: list[dict[str, Any]]) -> None:
    """Events through intake, in one CloudEvents batch."""
    outcome = runtime.intake.submit(BATCH, {}, json.dumps(events).encode(), actor="test")
    assert [item.accepted is not None for item in outcome.items] == [True] * len(events)


def queue_refunds(runtime: Runtime, api: StandIn, *, dead: int) -> tuple[set[str], set[str]]:
    """A refund for each of LIVE customers whose push device works (or, for a webhook, one
    refund each, all told to the ops hook) and ``dead`` whose only device is gone; returns
    the stable message ids of both groups."""
    numbers = [next(_orders) for _ in range(LIVE + dead)]
    is_dead = {n: i >= LIVE for i, n in enumerate(numbers)}
    people = {n: customer(n, phone=False, email=False) for n in numbers}
    if api.channel == "push":
        # The customers are known from their orders, then their devices are registered.
        submit(runtime, [order_placed(f"W{n}", people[n]) for n in numbers])
        with runtime.engine.begin() as conn:
            for n in numbers:
                device = api.recipient(n, dead=is_dead[n])
                assert isinstance(device, tuple)
                kind, address = device
                register_device(
                    conn,
                    customer_id=people[n]["id"],
                    kind=kind,  # type: ignore[arg-type]
                    address=address,
                    actor="test",
                    now=utcnow(),
                )
    submit(runtime, [refund_authorized(f"W{n}", customer=people[n]) for n in numbers])
    with runtime.engine.connect() as conn:
        rows = conn.execute(
            select(notifications.c.id, notifications.c.order_id).where(
                notifications.c.channel == api.channel
            )
        ).all()
    assert len(rows) == len(numbers)
    stable = {row.order_id: f"{row.id}.{api.channel}" for row in rows}
    return (
        {stable[f"W{n}"] for n in numbers if not is_dead[n]},
        {stable[f"W{n}"] for n in numbers if is_dead[n]},
    )


@dataclass
class Figures:
    messages: int
    attempts: int
    retries: int
    duplicates: int
    removed: int
    states: dict[str, int]

    def show(self, scenario: str) -> None:
        print(
            f"\n{scenario}: {self.messages} messages, {self.attempts} attempts, "
            f"{self.retries} retries, {self.duplicates} duplicates, "
            f"{self.removed} removed devices, final {self.states}"
        )


def figures(runtime: Runtime, api: StandIn) -> Figures:
    with runtime.engine.connect() as conn:
        states: dict[str, int] = dict(
            conn.execute(
                select(delivery_jobs.c.status, func.count())
                .where(delivery_jobs.c.channel == api.channel)
                .group_by(delivery_jobs.c.status)
            ).all()
        )
        attempts = conn.execute(
            select(func.count())
            .select_from(delivery_attempts.join(delivery_jobs))
            .where(delivery_jobs.c.channel == api.channel)
        ).scalar_one()
        removed = conn.execute(
            select(func.count()).where(devices.c.removed_at.is_not(None))
        ).scalar_one()
    messages = sum(states.values())
    return Figures(
        messages=messages,
        attempts=int(attempts),
        retries=int(attempts) - messages,
        duplicates=api.duplicates(),
        removed=int(removed),
        states=states,
    )


def attempts_of(runtime: Runtime, stable: str) -> list[Any]:
    with runtime.engine.connect() as conn:
        return list(
            conn.execute(
                select(delivery_attempts)
                .where(delivery_attempts.c.notification_id == stable.rpartition(".")[0])
                .order_by(delivery_attempts.c.attempt)
            ).all()
        )


@pytest.mark.parametrize(
    ("api", "fault"),
    [pytest.param(p, f, id=f"{p}-{f}") for p in PROVIDERS for f in FAULTS],
    indirect=["api"],
)
def test_every_message_ends_once_through_provider_faults(
    settings: Settings, engine: Engine, tmp_path: Path, api: StandIn, fault: str
) -> None:
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(rules(api), encoding="utf-8")
    runtime = build_runtime(
        settings.model_copy(
            update={
                "rules_path": rules_path,
                "http_timeout": TIMEOUT,
                # The breaker stays out: each fault is answered by a retry of its message.
                "provider_failure_threshold": 1000,
                "retry_max_attempts": 5,
                **api.settings(),
            }
        ),
        engine=engine,
    )
    dead_devices = DEAD if api.channel == "push" else 0
    live, dead = queue_refunds(runtime, api, dead=dead_devices)
    api.faults = only_for(live, plan_for(api, fault))

    drain(runtime, timeout=15.0)

    found = figures(runtime, api)
    found.show(f"{engine.dialect.name}: {api.name}, {fault}")
    before, after = api.faults_before_acceptance(), api.faults_after_acceptance()
    accepted = api.snapshot()
    messages = LIVE + dead_devices

    # Every message reached a final state: sent, or dead with its only device gone.
    assert found.states == {"sent": LIVE, **({"dead": DEAD} if dead_devices else {})}
    with runtime.engine.connect() as conn:
        final = dict(
            conn.execute(
                select(notifications.c.id, notifications.c.status).where(
                    notifications.c.channel == api.channel
                )
            ).all()
        )
    assert {f"{id_}.{api.channel}": status for id_, status in final.items()} == {
        **dict.fromkeys(live, "sent"),
        **dict.fromkeys(dead, "dead"),
    }
    # Each working address took each message once; a second copy only of what a lost reply
    # had already been accepted for.
    assert set(accepted) == live
    assert {stable for stable, n in accepted.items() if n > 1} == set(after)
    assert max(accepted.values()) <= 2
    assert found.duplicates == len(after)
    assert api.accepted_without_id == 0

    if fault in ("500", "429"):
        # One refused first try per message, one retry that went through.
        assert sorted(before) == sorted(live)
        assert after == []
        assert found.attempts == 2 * LIVE + dead_devices
        assert found.retries == LIVE
    else:
        # Every third of LIVE first tries was lost, alternately before and after acceptance.
        assert len(before) == len(after) == LIVE // 6
        assert found.retries == len(before) + len(after)
        lost = "timed out" if fault == "hang" else "unreachable"
        for stable in before + after:
            first, second = attempts_of(runtime, stable)
            assert (first.outcome, second.outcome) == ("transient", "sent")
            assert lost in first.error, first.error
    assert found.attempts == messages + found.retries

    if fault == "429":
        # The retry came no sooner than the provider asked, by the provider's own clock.
        waits = []
        for stable in live:
            first, second = api.times[stable]
            assert second - first >= RETRY_AFTER, f"{stable} came back after {second - first}s"
            waits.append(second - first - RETRY_AFTER)
        print(f"  waited beyond Retry-After: max {max(waits):.3f}s")
        for stable in live:
            assert "429" in attempts_of(runtime, stable)[0].error

    # A device its service says is gone is removed at once and never tried again.
    assert found.removed == len(dead)
    for stable in dead:
        assert api.requests[stable] == 1
        [attempt] = attempts_of(runtime, stable)
        assert attempt.outcome == "failed"
        assert ("UNREGISTERED" if api.name == "fcm" else "410") in attempt.error
    if dead:
        with runtime.engine.connect() as conn:
            reasons = conn.execute(
                select(devices.c.removed_reason).where(devices.c.removed_at.is_not(None))
            ).scalars()
            assert all(("UNREGISTERED" if api.name == "fcm" else "410") in str(r) for r in reasons)
    # Nothing else reached the stand-in: a request per attempt.
    assert sum(api.requests[stable] for stable in live) == LIVE + found.retries
