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
- waiting behind an open breaker does not use up a message's attempts;
- an SMTP server that answers 4yz, stalls past the client's timeout or drops the connection
  during DATA is tried again, once, and holds a second copy only of a message it had taken
  before the reply was lost; one that answers 5yz makes the message a dead letter with the
  server's reply as its reason.

Every line of figures starts with the database backend it was measured on.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from tests.support.events import refund_authorized
from tests.support.http_stub import Reply
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
from tests.support.smtp import SmtpFault, SmtpServer
from tests.support.work import active_jobs
from tidings.config import Settings
from tidings.db.schema import delivery_attempts, delivery_jobs, notifications
from tidings.delivery import queue
from tidings.delivery.worker import Worker
from tidings.intake.cloudevents_http import BATCH
from tidings.runtime import Runtime, build_runtime

WAVE = 8  # messages per wave: more than the failure threshold, so one wave opens a breaker
THRESHOLD = 5
COOLDOWN = 0.2
# A pause between waves longer than the cooldown: each wave after a failure starts with a probe.
PAUSE = COOLDOWN * 1.5
# The SMTP client's timeout where a server stalls: short, and still far above what a
# working server on loopback takes to answer.
SMTP_TIMEOUT = 0.2


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


def provider_named(request: pytest.FixtureRequest, name: str) -> ProviderApi | SmtpServer:
    """The stand-in for a provider, by the name the settings give it."""
    api = request.getfixturevalue("smtp_server" if name == "smtp" else name)
    assert isinstance(api, ProviderApi | SmtpServer)
    return api


def accepted_by(provider: ProviderApi | SmtpServer) -> Counter[str]:
    """How often the provider accepted each stable message id."""
    if isinstance(provider, SmtpServer):
        return smtp_stable_ids(provider)
    return provider.snapshot()


def settings_of(provider: ProviderApi | SmtpServer) -> dict[str, Any]:
    # The SMTP server is the one the ``settings`` fixture already points at.
    return {} if isinstance(provider, SmtpServer) else provider.settings()


def backend(runtime: Runtime) -> str:
    return runtime.engine.dialect.name


def note(runtime: Runtime, text: str) -> None:
    """A line of figures, labelled with the backend that produced it."""
    print(f"[{backend(runtime)}]   {text}")


class OutcomeLog:
    """Every outcome the worker reports for each message, read on its way to
    ``queue.record``. A wait behind an open breaker leaves nothing in the database (the
    attempt is given back and no attempt row is written), so this is where it shows."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.by_message: defaultdict[str, Counter[str]] = defaultdict(Counter)
        record = queue.record

        def recording(conn: Any, outcomes: Any, **kwargs: Any) -> int:
            for outcome in outcomes:
                self.by_message[outcome.job.notification_id][outcome.outcome] += 1
            return record(conn, outcomes, **kwargs)

        monkeypatch.setattr(queue, "record", recording)

    def claims(self, notification_id: str) -> int:
        return sum(self.by_message[notification_id].values())

    def waits(self, notification_id: str) -> int:
        return self.by_message[notification_id]["paused"]


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
    backend: str
    messages: int
    attempts: int
    retries: int
    failovers: int
    duplicates: int
    transitions: list[str]
    states: dict[str, int]

    def show(self, scenario: str) -> None:
        print(
            f"\n[{self.backend}] {scenario}: {self.messages} messages, {self.attempts} attempts, "
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
        backend=backend(runtime),
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


# ------------------------------------------------------------- (a) a primary fails

FAILING_PRIMARIES = [
    pytest.param(
        "sms",
        "twilio",
        "vonage",
        twilio_error(500, 20500, "Internal Server Error"),
        id="twilio-500",
    ),
    pytest.param("sms", "vonage", "twilio", Reply(500, "Internal Server Error"), id="vonage-500"),
    pytest.param(
        "email", "postmark", "smtp", Reply(500, "Internal Server Error"), id="postmark-500"
    ),
]


@pytest.mark.parametrize(("channel", "primary_name", "secondary_name", "outage"), FAILING_PRIMARIES)
def test_a_failing_primary_hands_over_to_the_secondary_and_gets_it_back_once_a_probe_succeeds(
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    channel: str,
    primary_name: str,
    secondary_name: str,
    outage: Reply,
) -> None:
    primary = provider_named(request, primary_name)
    secondary = provider_named(request, secondary_name)
    assert isinstance(primary, ProviderApi)
    runtime = runtime_for(
        settings,
        engine,
        tmp_path,
        **{f"{channel}_providers": f"{primary_name},{secondary_name}"},
        **settings_of(primary),
        **settings_of(secondary),
    )
    down_waves, up_waves = 2, 2
    fault = Fault(reply=outage)
    waves: list[list[str]] = []

    async def run() -> list[str]:
        worker = runtime.new_worker()
        try:
            primary.faults = lambda _stable, _before: fault
            for wave in range(down_waves + up_waves):
                if wave == down_waves:
                    primary.faults = None  # the primary recovers
                waves.append(
                    await asyncio.to_thread(
                        queue_refunds,
                        runtime,
                        WAVE,
                        phone=channel == "sms",
                        email=channel == "email",
                    )
                )
                await deliver(runtime, worker)
                if wave < down_waves + up_waves - 1:
                    await asyncio.sleep(PAUSE)
            return list(worker.channels[channel].routes[0].breaker.transitions)
        finally:
            await worker.close()

    transitions = asyncio.run(run())

    found = figures(
        runtime,
        channel,
        secondary=secondary_name,
        providers=[primary, secondary],
        transitions=transitions,
    )
    found.show(
        f"{channel}, {primary_name} answers {outage.status} then recovers, "
        f"{secondary_name} secondary"
    )
    messages = (down_waves + up_waves) * WAVE
    assert found.states == {"sent": messages}
    # Failover happens inside the attempt: no message needed a second one.
    assert found.attempts == messages
    taken = [stable_ids(runtime, channel, orders) for orders in waves]
    # While the primary was down every message went by the secondary, and the primary saw
    # only the first wave (before its breaker opened) and then one probe per wave.
    for wave in taken[:down_waves]:
        assert set(wave.values()) == {secondary_name}
    assert len(primary.faults_before_acceptance()) == WAVE + down_waves - 1
    # The first wave after recovery: one probe reaches the primary and succeeds; the rest
    # of the wave, sent while the probe was out, goes by the secondary. Then the primary
    # carries everything.
    assert Counter(taken[down_waves].values()) == {primary_name: 1, secondary_name: WAVE - 1}
    assert set(taken[-1].values()) == {primary_name}
    assert found.failovers == down_waves * WAVE + WAVE - 1
    assert transitions == ["open", *["half_open", "open"] * (down_waves - 1), "half_open", "closed"]
    # Each message was accepted exactly once, by the provider the database says took it.
    by = {primary_name: accepted_by(primary), secondary_name: accepted_by(secondary)}
    for wave in taken:
        for stable, provider in wave.items():
            assert {name: accepted[stable] for name, accepted in by.items()} == {
                name: int(name == provider) for name in by
            }
    assert found.duplicates == 0
    for api in (primary, secondary):
        if isinstance(api, ProviderApi):
            assert api.accepted_without_id == 0
        if isinstance(api, PostmarkApi):
            assert api.mismatched_message_ids == []


# ------------------------------------------------------------- (b) 429 Retry-After


def twilio_429(seconds: str) -> Reply:
    return twilio_error(429, 20429, "Too Many Requests", **{"Retry-After": seconds})


def vonage_429(seconds: str) -> Reply:
    return Reply(429, "", headers={"Retry-After": seconds})


def postmark_429(seconds: str) -> Reply:
    return Reply(
        429, {"ErrorCode": 429, "Message": "Rate limit exceeded"}, headers={"Retry-After": seconds}
    )


# The seconds each API asks for, message after message. Twilio's differ: the wait is the
# header's, not a constant. The others ask for one second (the retry policy alone would
# wait at most a fifth of that), which keeps them short.
RATE_LIMITED = [
    pytest.param("sms", "twilio", twilio_429, (1, 2), id="twilio"),
    pytest.param("sms", "vonage", vonage_429, (1,), id="vonage"),
    pytest.param("email", "postmark", postmark_429, (1,), id="postmark"),
]


@pytest.mark.parametrize(("channel", "name", "too_many", "seconds"), RATE_LIMITED)
def test_a_429_retry_after_is_waited_out_before_the_next_attempt(
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    channel: str,
    name: str,
    too_many: Callable[[str], Reply],
    seconds: tuple[int, ...],
) -> None:
    api = provider_named(request, name)
    assert isinstance(api, ProviderApi)
    runtime = runtime_for(
        settings,
        engine,
        tmp_path,
        **{f"{channel}_providers": name},
        # The breaker stays out of this one: the wait under test is the one the API asks for.
        provider_failure_threshold=1000,
        **api.settings(),
    )
    asked: dict[str, int] = {}

    def too_many_requests(stable: str, before: int) -> Fault | None:
        if before:
            return None
        asked[stable] = seconds[len(asked) % len(seconds)]
        return Fault(reply=too_many(str(asked[stable])))

    api.faults = too_many_requests
    count = 3 * WAVE

    async def run() -> None:
        worker = runtime.new_worker()
        try:
            await asyncio.to_thread(
                queue_refunds, runtime, count, phone=channel == "sms", email=channel == "email"
            )
            await deliver(runtime, worker)
        finally:
            await worker.close()

    asyncio.run(run())

    found = figures(runtime, channel, secondary=None, providers=[api], transitions=[])
    found.show(f"{channel}, {name} answers 429 with Retry-After once per message")
    assert found.states == {"sent": count}
    assert len(asked) == count
    waits: list[float] = []
    for stable, wait in asked.items():
        first, second = attempts_of(runtime, stable.removesuffix(f".{channel}"))
        assert first.outcome == "transient"
        assert "429" in first.error
        assert second.outcome == "sent"
        waited = (second.started_at - first.finished_at).total_seconds()
        assert waited >= wait, f"{stable} was tried {waited:.3f}s after a {wait}s 429"
        waits.append(waited - wait)
    note(runtime, f"waited beyond Retry-After: max {max(waits):.3f}s")
    assert found.retries == count
    assert api.snapshot() == Counter(dict.fromkeys(asked, 1))


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


LOST_REPLIES = [
    # Twilio and Postmark hang past the client's timeout; Vonage closes the connection
    # mid-reply.
    pytest.param("sms", "twilio", "hang", id="twilio-hang"),
    pytest.param("sms", "vonage", "cut", id="vonage-cut"),
    pytest.param("email", "postmark", "hang", id="postmark-hang"),
]


@pytest.mark.parametrize(("channel", "name", "lost"), LOST_REPLIES)
def test_a_lost_reply_is_retried_and_repeats_only_what_the_provider_had_accepted(
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    channel: str,
    name: str,
    lost: str,
) -> None:
    timeout = 0.3
    provider = provider_named(request, name)
    assert isinstance(provider, ProviderApi)
    runtime = runtime_for(
        settings,
        engine,
        tmp_path,
        **{f"{channel}_providers": provider.name},
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
            await asyncio.to_thread(
                queue_refunds, runtime, count, phone=channel == "sms", email=channel == "email"
            )
            await deliver(runtime, worker)
            return list(worker.channels[channel].routes[0].breaker.transitions)
        finally:
            await worker.close()

    transitions = asyncio.run(run())

    found = figures(runtime, channel, secondary=None, providers=[provider], transitions=transitions)
    found.show(f"{channel}, {provider.name} replies lost ({lost}) for every third message")
    before, after = provider.faults_before_acceptance(), provider.faults_after_acceptance()
    note(runtime, f"lost before acceptance: {len(before)}, after acceptance: {len(after)}")
    assert found.states == {"sent": count}
    assert before
    assert after
    accepted = provider.snapshot()
    ids = stable_ids(runtime, channel)
    assert set(accepted) == set(ids)
    # The provider holds a second copy of exactly the messages whose reply it lost after
    # accepting them; a reply lost before acceptance cost a retry and nothing else.
    assert {stable for stable, n in accepted.items() if n > 1} == set(after)
    assert found.duplicates == len(after)
    assert max(accepted.values()) <= 2
    assert found.retries >= len(before) + len(after)
    for stable in before + after:
        first = attempts_of(runtime, stable.removesuffix(f".{channel}"))[0]
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
                if wave < down_waves + up_waves - 1:
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
    note(runtime, f"during the outage: {during}")
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


# ------------------------------------------------------------- (f) SMTP server faults

SMTP_FAULTS = [
    pytest.param(SmtpFault(reply="451 4.3.0 Temporary local problem, try again"), id="451"),
    pytest.param(SmtpFault(reply="421 4.3.2 Service shutting down, try again"), id="421"),
    pytest.param(SmtpFault(hang=SMTP_TIMEOUT * 5), id="hang"),
    pytest.param(SmtpFault(cut=True), id="cut-in-data"),
    pytest.param(SmtpFault(cut=True, after_acceptance=True), id="cut-accepted"),
    pytest.param(SmtpFault(reply="554 5.7.1 Message refused by policy"), id="554"),
]
# What the client makes of each: the error its attempt records.
SMTP_ERRORS = {
    "reply": "SMTP {code}: ",
    "hang": "SMTP server unavailable: SMTPReadTimeoutError",
    "cut": "SMTP server unavailable: SMTPServerDisconnected",
}


@pytest.mark.parametrize("fault", SMTP_FAULTS)
def test_an_smtp_fault_ends_in_one_copy_later_or_a_dead_letter_with_the_reason(
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
    fault: SmtpFault,
) -> None:
    """The next few transactions go wrong, as many as could open the breaker; the rest of
    the first batch and every retry find the server working."""
    runtime = runtime_for(
        settings, engine, tmp_path, email_providers="smtp", smtp_timeout=SMTP_TIMEOUT
    )
    count, faulty = WAVE, THRESHOLD
    permanent = (fault.reply or "").startswith("5")
    smtp_server.fail_next(faulty, fault)
    outcomes = OutcomeLog(monkeypatch)

    async def run() -> list[str]:
        worker = runtime.new_worker()
        try:
            await asyncio.to_thread(queue_refunds, runtime, count, phone=False, email=True)
            await deliver(runtime, worker)
            return list(worker.channels["email"].routes[0].breaker.transitions)
        finally:
            await worker.close()

    transitions = asyncio.run(run())

    found = figures(
        runtime, "email", secondary=None, providers=[smtp_server], transitions=transitions
    )
    what = (
        f"answers {fault.reply}"
        if fault.reply
        else "stalls past the timeout"
        if fault.hang
        else "cuts the connection in DATA"
    )
    if fault.after_acceptance:
        what += " after taking the message"
    found.show(f"Email, the SMTP server {what} for the next {faulty} messages")
    before = [stable_id_of(mid) for mid in smtp_server.faults_before_acceptance()]
    after = [stable_id_of(mid) for mid in smtp_server.faults_after_acceptance()]
    waits = sum(outcomes.waits(ntf) for ntf in outcomes.by_message)
    note(
        runtime,
        f"faulted before acceptance: {len(before)}, after acceptance: {len(after)} "
        f"(the duplicates no client can avoid), waits behind the breaker: {waits}",
    )
    # Each planned fault met a different message's first try: all first tries are one batch.
    faulted = before + after
    assert smtp_server.planned() == 0
    assert len(set(faulted)) == len(faulted) == faulty
    ids = stable_ids(runtime, "email")
    assert set(faulted) <= set(ids)
    error = SMTP_ERRORS["reply" if fault.reply else "hang" if fault.hang else "cut"]
    error = error.format(code=(fault.reply or "")[:3])
    with runtime.engine.connect() as conn:
        dead = dict(
            conn.execute(
                select(notifications.c.id, notifications.c.reason)
                .select_from(notifications.join(delivery_jobs))
                .where(delivery_jobs.c.status == "dead")
            ).all()
        )
    if permanent:
        # A 5yz reply is final: a dead letter at once, with the server's reply as its reason.
        assert found.states == {"sent": count - faulty, "dead": faulty}
        assert {f"{ntf}.email" for ntf in dead} == set(faulted)
        for reason in dead.values():
            assert reason == f"permanent failure: {error}{fault.reply[4:]}"
        assert found.attempts == count
        assert found.retries == 0
        assert transitions == []
    else:
        # Every message went out: a faulted one on its second attempt, which came later
        # (the breaker the faults opened kept it waiting) and was its last.
        assert found.states == {"sent": count}
        assert dead == {}
        assert found.attempts == count + faulty
        assert found.retries == faulty
        for stable in faulted:
            first, second = attempts_of(runtime, stable.removesuffix(".email"))
            assert first.outcome == "transient"
            assert first.error.startswith(error)
            assert second.outcome == "sent"
            assert second.started_at >= first.finished_at
        # Whether the faults opened the breaker depends on how the successes in between
        # fell (one resets its count); if it opened, it closed again.
        assert transitions[-1:] in ([], ["closed"])
    # The server holds one copy of each message it was meant to get, two of those whose
    # reply was lost after it had taken them, none of a dead letter.
    expected = Counter({stable: 1 for stable in ids if stable[: -len(".email")] not in dead})
    expected.update(after)
    assert smtp_stable_ids(smtp_server) == expected
    assert found.duplicates == len(after) == (faulty if fault.after_acceptance else 0)


# ------------------------------------------------------------- the retry budget

ATTEMPTS = 4


def test_waiting_behind_an_open_breaker_does_not_use_up_the_retry_budget(
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The only SMTP server stalls past the client's timeout for every message's first try
    and for the breaker's first probes. Each stall keeps the worker's batch (and the probe)
    out for the whole timeout, so the messages behind the breaker are looked at again and
    again, more often than they may be tried; none of those looks may count."""
    timeout = SMTP_TIMEOUT
    count = WAVE
    # Failed probes. The most tries one message can fail is its first and every probe, which
    # is one short of the budget: none may become a dead letter, however the probes fall.
    probes = ATTEMPTS - 2
    runtime = runtime_for(
        settings,
        engine,
        tmp_path,
        email_providers="smtp",
        retry_max_attempts=ATTEMPTS,
        smtp_timeout=timeout,
        # Shorter than a stall: the messages behind a probe are looked at while it is out.
        provider_cooldown_seconds=timeout / 2,
        # Every first try stalls at once, not a pool's worth after another.
        smtp_connections=count,
    )
    smtp_server.fail_next(count + probes, SmtpFault(hang=timeout * 4))
    outcomes = OutcomeLog(monkeypatch)

    async def run() -> list[str]:
        worker = runtime.new_worker()
        try:
            await asyncio.to_thread(queue_refunds, runtime, count, phone=False, email=True)
            await deliver(runtime, worker)
            return list(worker.channels["email"].routes[0].breaker.transitions)
        finally:
            await worker.close()

    transitions = asyncio.run(run())

    found = figures(
        runtime, "email", secondary=None, providers=[smtp_server], transitions=transitions
    )
    found.show(
        f"Email, the only SMTP server stalls {count + probes} times, {ATTEMPTS} attempts a message"
    )
    with runtime.engine.connect() as conn:
        jobs = {
            row.notification_id: row
            for row in conn.execute(
                select(
                    delivery_jobs.c.notification_id,
                    delivery_jobs.c.status,
                    delivery_jobs.c.attempts,
                ).where(delivery_jobs.c.channel == "email")
            )
        }
    # What the server saw, by notification: every try that reached DATA.
    tries = {stable_id_of(mid).removesuffix(".email"): n for mid, n in smtp_server.tries.items()}
    looked = {ntf: outcomes.claims(ntf) for ntf in jobs}
    waited = {ntf: outcomes.waits(ntf) for ntf in jobs}
    note(
        runtime,
        f"per message: claimed {sorted(looked.values())}, waited behind the breaker "
        f"{sorted(waited.values())}, tried at the server {sorted(tries.values())}",
    )
    assert smtp_server.planned() == 0
    assert transitions == ["open", *["half_open", "open"] * probes, "half_open", "closed"]
    # Every message went out, none became a dead letter.
    assert found.states == {"sent": count}
    assert set(tries) == set(jobs)
    assert sum(tries.values()) == count + probes + count
    for ntf, job in jobs.items():
        attempts = attempts_of(runtime, ntf)
        # An attempt is a try at the server, nothing else: the job's count, its attempt
        # rows and the server's record agree, and every other look was a wait.
        assert job.attempts == len(attempts) == tries[ntf] <= ATTEMPTS
        assert [a.outcome for a in attempts] == ["transient"] * (tries[ntf] - 1) + ["sent"]
        assert looked[ntf] == tries[ntf] + waited[ntf]
    # The messages waited behind the open breaker (all but those that carried a probe each
    # time they were looked at), and some were looked at more often than the budget allows
    # tries: had the waits counted, those would be dead letters.
    assert sum(1 for n in waited.values() if n == 0) <= probes + 1
    assert max(looked.values()) > ATTEMPTS
    assert smtp_stable_ids(smtp_server) == Counter({f"{ntf}.email": 1 for ntf in jobs})
    assert found.duplicates == 0
