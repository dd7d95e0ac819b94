"""Delivery under provider faults: one worker in process, real servers on loopback.

Each scenario queues a few dozen refund messages in waves, runs one worker until every job
is final, and reads three records: the providers' (which stable message ids each accepted
and how often, tests/support/providers.py), the database's (every attempt with its times,
each message's final state and the provider that took it) and the breakers' transitions.

What is shown (DESIGN: delivery is at-least-once; a repeat carries the same stable id):
- a primary that fails hands its traffic to the secondary in the same attempt, its breaker
  keeps traffic away (only probes reach it) and closes again once a probe succeeds;
- a 429's Retry-After is a floor under the next attempt;
- a reply lost to a timeout or a cut connection is retried, and the provider sees a second
  copy exactly when it had accepted the first;
- mail waits while its only server is down and arrives once when it is back;
- waiting behind an open breaker does not use up a message's attempts.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from tests.support.events import refund_authorized
from tests.support.providers import (
    Fault,
    FaultPlan,
    PostmarkApi,
    ProviderApi,
    TwilioApi,
    VonageApi,
    customer,
    stable_id_of,
    twilio_error,
    write_refund_rules,
)
from tests.support.smtp import SmtpServer
from tests.support.work import active_jobs
from tidings.config import Settings
from tidings.db.schema import delivery_attempts, delivery_jobs, notifications
from tidings.delivery.worker import Worker
from tidings.intake.cloudevents_http import BATCH
from tidings.runtime import Runtime, build_runtime

WAVE = 8  # messages per wave: more than the failure threshold, so one wave opens a breaker
THRESHOLD = 5
COOLDOWN = 0.2
# A pause between waves longer than the cooldown: each wave after a failure starts with a probe.
PAUSE = COOLDOWN * 1.5


@pytest.fixture
def twilio() -> Iterator[TwilioApi]:
    api = TwilioApi()
    api.start()
    yield api
    api.server.stop()


@pytest.fixture
def vonage() -> Iterator[VonageApi]:
    api = VonageApi()
    api.start()
    yield api
    api.server.stop()


@pytest.fixture
def postmark() -> Iterator[PostmarkApi]:
    api = PostmarkApi()
    api.start()
    yield api
    api.server.stop()


def runtime_for(settings: Settings, engine: Engine, tmp_path: Path, **update: Any) -> Runtime:
    values = {
        "rules_path": write_refund_rules(tmp_path),
        "provider_failure_threshold": THRESHOLD,
        "provider_cooldown_seconds": COOLDOWN,
        # Enough attempts that no message of these short outages becomes a dead letter: an
        # attempt that finds every breaker open counts too.
        "retry_max_attempts": 30,
        **update,
    }
    return build_runtime(settings.model_copy(update=values), engine=engine)


_orders = itertools.count(1)


def queue_refunds(runtime: Runtime, count: int, *, phone: bool, email: bool) -> list[str]:
    """Refund events for ``count`` new customers through intake, in one CloudEvents batch;
    returns their order ids."""
    numbers = [next(_orders) for _ in range(count)]
    events = [
        refund_authorized(f"F{n}", customer=customer(n, phone=phone, email=email)) for n in numbers
    ]
    outcome = runtime.intake.submit(BATCH, {}, json.dumps(events).encode(), actor="test")
    assert [item.accepted is not None for item in outcome.items] == [True] * count
    return [f"F{n}" for n in numbers]


async def deliver(runtime: Runtime, worker: Worker, *, timeout: float = 8.0) -> None:
    """Run the worker until no job is queued or leased, retries included."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await worker.run_once() == 0:
            if await asyncio.to_thread(active_jobs, runtime) == 0:
                return
            await asyncio.sleep(0.02)
    raise AssertionError(f"{active_jobs(runtime)} jobs still active after {timeout}s")


def stable_ids(
    runtime: Runtime, channel: str, orders: list[str] | None = None
) -> dict[str, str | None]:
    """Stable message id -> the provider that took it, for the messages of these orders
    (of every order without ``orders``)."""
    query = select(notifications.c.id, notifications.c.provider).where(
        notifications.c.channel == channel
    )
    if orders is not None:
        query = query.where(notifications.c.order_id.in_(orders))
    with runtime.engine.connect() as conn:
        rows = conn.execute(query).all()
    assert orders is None or len(rows) == len(orders)
    return {f"{row.id}.{channel}": row.provider for row in rows}


@dataclass
class Figures:
    messages: int
    attempts: int
    retries: int
    failovers: int
    duplicates: int
    transitions: list[str]
    states: dict[str, int]

    def show(self, scenario: str) -> None:
        print(
            f"\n{scenario}: {self.messages} messages, {self.attempts} attempts, "
            f"{self.retries} retries, {self.failovers} failovers, {self.duplicates} duplicates, "
            f"breaker {' > '.join(self.transitions) or 'never opened'}, final {self.states}"
        )


def figures(
    runtime: Runtime,
    channel: str,
    *,
    secondary: str | None,
    providers: list[ProviderApi | SmtpServer],
    transitions: list[str],
) -> Figures:
    with runtime.engine.connect() as conn:
        states: dict[str, int] = dict(
            conn.execute(
                select(delivery_jobs.c.status, func.count())
                .where(delivery_jobs.c.channel == channel)
                .group_by(delivery_jobs.c.status)
            ).all()
        )
        attempts = conn.execute(
            select(func.count())
            .select_from(delivery_attempts.join(delivery_jobs))
            .where(delivery_jobs.c.channel == channel)
        ).scalar_one()
        # The secondary only ever takes a message its primary failed or was paused for.
        failovers = conn.execute(
            select(func.count()).where(
                notifications.c.channel == channel, notifications.c.provider == secondary
            )
        ).scalar_one()
    messages = sum(states.values())
    duplicates = 0
    for provider in providers:
        if isinstance(provider, SmtpServer):
            duplicates += sum(provider.message_ids().values()) - len(provider.message_ids())
        else:
            duplicates += provider.duplicates()
    return Figures(
        messages=messages,
        attempts=int(attempts),
        retries=int(attempts) - messages,
        failovers=int(failovers),
        duplicates=duplicates,
        transitions=transitions,
        states=states,
    )


def attempts_of(runtime: Runtime, notification_id: str) -> list[Any]:
    with runtime.engine.connect() as conn:
        return list(
            conn.execute(
                select(delivery_attempts)
                .where(delivery_attempts.c.notification_id == notification_id)
                .order_by(delivery_attempts.c.attempt)
            ).all()
        )


def smtp_stable_ids(server: SmtpServer) -> Counter[str]:
    return Counter({stable_id_of(mid): n for mid, n in server.message_ids().items()})


# ------------------------------------------------------------- (a) SMS primary fails


def test_sms_fails_over_while_twilio_is_down_and_goes_back_once_a_probe_succeeds(
    settings: Settings, engine: Engine, tmp_path: Path, twilio: TwilioApi, vonage: VonageApi
) -> None:
    runtime = runtime_for(
        settings,
        engine,
        tmp_path,
        sms_providers="twilio,vonage",
        **twilio.settings(),
        **vonage.settings(),
    )
    down_waves, up_waves = 3, 2
    outage = Fault(reply=twilio_error(500, 20500, "Internal Server Error"))
    waves: list[list[str]] = []

    async def run() -> list[str]:
        worker = runtime.new_worker()
        try:
            twilio.faults = lambda _stable, _before: outage
            for wave in range(down_waves + up_waves):
                if wave == down_waves:
                    twilio.faults = None  # Twilio recovers
                waves.append(
                    await asyncio.to_thread(queue_refunds, runtime, WAVE, phone=True, email=False)
                )
                await deliver(runtime, worker)
                await asyncio.sleep(PAUSE)
            return list(worker.channels["sms"].routes[0].breaker.transitions)
        finally:
            await worker.close()

    transitions = asyncio.run(run())

    found = figures(
        runtime, "sms", secondary="vonage", providers=[twilio, vonage], transitions=transitions
    )
    found.show("SMS, Twilio answers 500 then recovers, Vonage secondary")
    messages = (down_waves + up_waves) * WAVE
    assert found.states == {"sent": messages}
    # Failover happens inside the attempt: no message needed a second one.
    assert found.attempts == messages
    taken = [stable_ids(runtime, "sms", orders) for orders in waves]
    # While Twilio was down every message went by Vonage, and Twilio saw only the first wave
    # (before its breaker opened) and then one probe per wave.
    for wave in taken[:down_waves]:
        assert set(wave.values()) == {"vonage"}
    assert len(twilio.faults_before_acceptance()) == WAVE + down_waves - 1
    # The first wave after recovery: one probe reaches Twilio and succeeds; the rest of the
    # wave, sent while the probe was out, goes by Vonage. Then Twilio carries everything.
    assert Counter(taken[down_waves].values()) == {"twilio": 1, "vonage": WAVE - 1}
    assert set(taken[-1].values()) == {"twilio"}
    assert found.failovers == down_waves * WAVE + WAVE - 1
    assert transitions == ["open", *["half_open", "open"] * (down_waves - 1), "half_open", "closed"]
    # Each message was accepted exactly once, by the provider the database says took it.
    for wave in taken:
        for stable, provider in wave.items():
            by = {"twilio": twilio, "vonage": vonage}
            assert {name: api.accepted[stable] for name, api in by.items()} == {
                name: int(name == provider) for name in by
            }
    assert found.duplicates == 0
    assert twilio.accepted_without_id == vonage.accepted_without_id == 0


# ------------------------------------------------------------- (b) 429 Retry-After


def test_a_429_retry_after_is_waited_out_before_the_next_attempt(
    settings: Settings, engine: Engine, tmp_path: Path, twilio: TwilioApi
) -> None:
    runtime = runtime_for(
        settings,
        engine,
        tmp_path,
        sms_providers="twilio",
        # The breaker stays out of this one: the wait under test is the one Twilio asks for.
        provider_failure_threshold=1000,
        **twilio.settings(),
    )
    asked: dict[str, int] = {}

    def too_many_requests(stable: str, before: int) -> Fault | None:
        if before:
            return None
        asked[stable] = 1 + len(asked) % 2  # 1 or 2 seconds: the header, not a constant
        return Fault(
            reply=twilio_error(
                429, 20429, "Too Many Requests", **{"Retry-After": str(asked[stable])}
            )
        )

    twilio.faults = too_many_requests
    count = 3 * WAVE

    async def run() -> None:
        worker = runtime.new_worker()
        try:
            await asyncio.to_thread(queue_refunds, runtime, count, phone=True, email=False)
            await deliver(runtime, worker)
        finally:
            await worker.close()

    asyncio.run(run())

    found = figures(runtime, "sms", secondary=None, providers=[twilio], transitions=[])
    found.show("SMS, Twilio answers 429 with Retry-After once per message")
    assert found.states == {"sent": count}
    assert len(asked) == count
    waits: list[float] = []
    for stable, seconds in asked.items():
        first, second = attempts_of(runtime, stable.removesuffix(".sms"))
        assert first.outcome == "transient"
        assert "429" in first.error
        assert second.outcome == "sent"
        waited = (second.started_at - first.finished_at).total_seconds()
        assert waited >= seconds, f"{stable} was tried {waited:.3f}s after a {seconds}s 429"
        waits.append(waited - seconds)
    print(f"  waited beyond Retry-After: max {max(waits):.3f}s")
    assert found.retries == count
    assert twilio.snapshot() == Counter(dict.fromkeys(asked, 1))


# ------------------------------------------------------------- (c) lost replies


def every_third_first_try(fault: Callable[[bool], Fault]) -> FaultPlan:
    """The first request of every third message goes wrong; alternately before and after
    the provider accepted it."""
    firsts = itertools.count(1)

    def plan(stable: str, before: int) -> Fault | None:
        if before:
            return None
        n = next(firsts)
        return fault(n % 6 == 0) if n % 3 == 0 else None

    return plan


@pytest.mark.parametrize("lost", ["hang", "cut"])
def test_a_lost_reply_is_retried_and_repeats_only_what_the_provider_had_accepted(
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    twilio: TwilioApi,
    vonage: VonageApi,
    lost: str,
) -> None:
    timeout = 0.3
    # Twilio hangs past the client's timeout; Vonage closes the connection mid-reply.
    provider: ProviderApi = twilio if lost == "hang" else vonage
    runtime = runtime_for(
        settings,
        engine,
        tmp_path,
        sms_providers=provider.name,
        http_timeout=timeout,
        **provider.settings(),
    )
    if lost == "hang":
        provider.faults = every_third_first_try(
            lambda accepted: Fault(hang=timeout * 3, after_acceptance=accepted)
        )
    else:
        provider.faults = every_third_first_try(
            lambda accepted: Fault(cut=True, after_acceptance=accepted)
        )
    count = 4 * WAVE

    async def run() -> list[str]:
        worker = runtime.new_worker()
        try:
            await asyncio.to_thread(queue_refunds, runtime, count, phone=True, email=False)
            await deliver(runtime, worker)
            return list(worker.channels["sms"].routes[0].breaker.transitions)
        finally:
            await worker.close()

    transitions = asyncio.run(run())

    found = figures(runtime, "sms", secondary=None, providers=[provider], transitions=transitions)
    found.show(f"SMS, {provider.name} replies lost ({lost}) for every third message")
    before, after = provider.faults_before_acceptance(), provider.faults_after_acceptance()
    print(f"  lost before acceptance: {len(before)}, after acceptance: {len(after)}")
    assert found.states == {"sent": count}
    assert before
    assert after
    accepted = provider.snapshot()
    ids = stable_ids(runtime, "sms")
    assert set(accepted) == set(ids)
    # The provider holds a second copy of exactly the messages whose reply it lost after
    # accepting them; a reply lost before acceptance cost a retry and nothing else.
    assert {stable for stable, n in accepted.items() if n > 1} == set(after)
    assert found.duplicates == len(after)
    assert max(accepted.values()) <= 2
    assert found.retries >= len(before) + len(after)
    for stable in before + after:
        first = attempts_of(runtime, stable.removesuffix(".sms"))[0]
        assert first.outcome == "transient"
        assert ("timed out" if lost == "hang" else "unreachable") in first.error


# ------------------------------------------------------------- (d) Postmark down, SMTP up


def test_mail_goes_by_smtp_while_postmark_is_down_and_back_to_postmark_after(
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    postmark: PostmarkApi,
    smtp_server: SmtpServer,
) -> None:
    runtime = runtime_for(
        settings, engine, tmp_path, email_providers="postmark,smtp", **postmark.settings()
    )
    down_waves, up_waves = 2, 2
    waves: list[list[str]] = []
    postmark.down()

    async def run() -> list[str]:
        worker = runtime.new_worker()
        try:
            for wave in range(down_waves + up_waves):
                if wave == down_waves:
                    await asyncio.to_thread(postmark.up)
                    await asyncio.sleep(PAUSE)
                waves.append(
                    await asyncio.to_thread(queue_refunds, runtime, WAVE, phone=False, email=True)
                )
                await deliver(runtime, worker)
                await asyncio.sleep(PAUSE)
            return list(worker.channels["email"].routes[0].breaker.transitions)
        finally:
            await worker.close()

    transitions = asyncio.run(run())

    found = figures(
        runtime,
        "email",
        secondary="smtp",
        providers=[postmark, smtp_server],
        transitions=transitions,
    )
    found.show("Email, Postmark down then up, SMTP secondary")
    messages = (down_waves + up_waves) * WAVE
    assert found.states == {"sent": messages}
    assert found.attempts == messages
    taken = [stable_ids(runtime, "email", orders) for orders in waves]
    received = smtp_stable_ids(smtp_server)
    for wave in taken[:down_waves]:
        assert set(wave.values()) == {"smtp"}
        assert {stable: received[stable] for stable in wave} == dict.fromkeys(wave, 1)
    assert Counter(taken[down_waves].values()) == {"postmark": 1, "smtp": WAVE - 1}
    assert set(taken[-1].values()) == {"postmark"}
    assert transitions == ["open", *["half_open", "open"] * (down_waves - 1), "half_open", "closed"]
    # Every message once, across both ways out, and the same Message-ID either way.
    everywhere = received + postmark.snapshot()
    assert everywhere == Counter({stable: 1 for wave in taken for stable in wave})
    assert postmark.mismatched_message_ids == []
    assert found.duplicates == 0


# ------------------------------------------------------------- (e) SMTP down, no secondary


def test_mail_waits_while_the_only_smtp_server_is_down_and_arrives_once(
    settings: Settings, engine: Engine, tmp_path: Path, smtp_server: SmtpServer
) -> None:
    runtime = runtime_for(
        settings,
        engine,
        tmp_path,
        email_providers="smtp",
        retry_base_seconds=0.1,
        retry_max_seconds=0.4,
    )
    count = 4 * WAVE
    outage = 1.5
    during: dict[str, int] = {}
    smtp_server.stop()

    async def run() -> list[str]:
        worker = runtime.new_worker()
        loop = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(queue_refunds, runtime, count, phone=False, email=True)
            back = loop.time() + outage
            while loop.time() < back:
                if await worker.run_once() == 0:
                    await asyncio.sleep(0.02)
            with runtime.engine.connect() as conn:
                during.update(
                    conn.execute(
                        select(delivery_jobs.c.status, func.count()).group_by(
                            delivery_jobs.c.status
                        )
                    ).all()
                )
                during["attempts"] = conn.execute(
                    select(func.count()).select_from(delivery_attempts)
                ).scalar_one()
            await asyncio.to_thread(smtp_server.start)
            await deliver(runtime, worker)
            return list(worker.channels["email"].routes[0].breaker.transitions)
        finally:
            await worker.close()

    transitions = asyncio.run(run())

    found = figures(
        runtime, "email", secondary=None, providers=[smtp_server], transitions=transitions
    )
    found.show(f"Email, the only SMTP server down for {outage}s")
    print(f"  during the outage: {during}")
    # While the server was down: tried, nothing lost, nothing given up.
    assert during.get("sent", 0) == during.get("dead", 0) == 0
    assert during.get("queued", 0) + during.get("leased", 0) == count
    assert during["attempts"] >= count
    assert transitions[0] == "open"
    assert transitions[-1] == "closed"
    assert found.states == {"sent": count}
    assert found.retries >= count
    ids = stable_ids(runtime, "email")
    assert smtp_stable_ids(smtp_server) == Counter(dict.fromkeys(ids, 1))
    assert found.duplicates == 0


# ------------------------------------------------------------- the retry budget

ATTEMPTS = 4


def test_waiting_behind_an_open_breaker_does_not_use_up_the_retry_budget(
    settings: Settings, engine: Engine, tmp_path: Path, smtp_server: SmtpServer
) -> None:
    runtime = runtime_for(
        settings, engine, tmp_path, email_providers="smtp", retry_max_attempts=ATTEMPTS
    )
    count = 2 * WAVE
    outage = 1.0
    smtp_server.stop()

    async def run() -> list[str]:
        worker = runtime.new_worker()
        loop = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(queue_refunds, runtime, count, phone=False, email=True)
            back = loop.time() + outage
            while loop.time() < back:
                if await worker.run_once() == 0:
                    await asyncio.sleep(0.02)
            await asyncio.to_thread(smtp_server.start)
            await deliver(runtime, worker)
            return list(worker.channels["email"].routes[0].breaker.transitions)
        finally:
            await worker.close()

    transitions = asyncio.run(run())

    found = figures(
        runtime, "email", secondary=None, providers=[smtp_server], transitions=transitions
    )
    found.show(f"Email, the only SMTP server down for {outage}s, {ATTEMPTS} attempts a message")
    with runtime.engine.connect() as conn:
        # Attempts that reached the server (refused), per message that became a dead letter.
        tried: dict[str, int] = dict(
            conn.execute(
                select(delivery_jobs.c.notification_id, func.count(delivery_attempts.c.id))
                .select_from(delivery_jobs)
                .outerjoin(
                    delivery_attempts,
                    (delivery_attempts.c.job_id == delivery_jobs.c.id)
                    & delivery_attempts.c.error.like("%SMTP server unavailable%"),
                )
                .where(delivery_jobs.c.status == "dead")
                .group_by(delivery_jobs.c.notification_id)
            ).all()
        )
    print(f"  dead letters and the tries each had at the server: {sorted(tried.values())}")
    # A dead letter is a message the server was tried for max_attempts times, not one that
    # spent its attempts finding the breaker open.
    assert all(n == ATTEMPTS for n in tried.values())
    assert smtp_stable_ids(smtp_server) == Counter(dict.fromkeys(smtp_stable_ids(smtp_server), 1))
