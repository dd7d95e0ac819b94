"""A channel's failover between its providers, behind their breakers (unit level: the
providers here are scripted stand-ins; the real ones are tested against their APIs)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tidings.delivery.channels import Channel, Route, Sent
from tidings.delivery.providers.base import (
    EmailProvider,
    InvalidRecipientError,
    OutboundMessage,
    PermanentSendError,
    SendReceipt,
    TransientSendError,
)
from tidings.delivery.resilience import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from tidings.templates.rendering import RenderedMessage

Outcome = BaseException | Callable[[], Awaitable[None]] | None


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


class Scripted(EmailProvider):
    """Answers each send with the next scripted outcome: None sends, an exception is raised,
    a coroutine function is awaited first (to hold the send open) and then it sends."""

    def __init__(self, name: str, *outcomes: Outcome) -> None:
        self.name = name
        self.outcomes = list(outcomes)
        self.calls: list[str] = []
        self.closed = False

    async def send(self, message: OutboundMessage) -> SendReceipt:
        self.calls.append(message.notification_id)
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome is not None:
            await outcome()
        return SendReceipt(f"{self.name}:{message.message_id}")

    async def close(self) -> None:
        self.closed = True


def message(notification_id: str = "ntf_1") -> OutboundMessage:
    return OutboundMessage(
        notification_id=notification_id,
        channel="email",
        kind="refund_authorized",
        address="camille@example.fr",
        customer_id="cus_1",
        rendered=RenderedMessage(
            kind="refund_authorized",
            channel="email",
            locale="en",
            parts={"subject": "s", "txt": "t", "html": "<p>t</p>"},
            version="v1",
        ),
    )


def route(provider: Scripted, clock: Clock, *, threshold: int = 3, cooldown: float = 30.0) -> Route:
    return Route(provider, CircuitBreaker(threshold, cooldown, clock=clock))


def send(channel: Channel, msg: OutboundMessage | None = None, via: str | None = None) -> Sent:
    return asyncio.run(channel.send(msg or message(), via=via))


def test_primary_transient_failure_fails_over_to_the_secondary() -> None:
    clock = Clock()
    primary = Scripted("postmark", TransientSendError("503"))
    secondary = Scripted("smtp")
    channel = Channel("email", [route(primary, clock), route(secondary, clock)])
    sent = send(channel)
    assert sent.provider == "smtp"
    assert sent.passed_over == ("postmark",)
    assert sent.receipt.provider_message_id == "smtp:ntf_1.email"
    assert primary.calls == secondary.calls == ["ntf_1"]
    assert channel.routes[0].breaker.failures == 1
    assert channel.routes[1].breaker.failures == 0


def test_healthy_primary_takes_it_alone() -> None:
    clock = Clock()
    primary, secondary = Scripted("postmark"), Scripted("smtp")
    channel = Channel("email", [route(primary, clock), route(secondary, clock)])
    sent = send(channel)
    assert (sent.provider, sent.passed_over) == ("postmark", ())
    assert secondary.calls == []


def test_permanent_failure_is_final_and_not_counted() -> None:
    clock = Clock()
    refusals = [PermanentSendError("422 inactive recipient") for _ in range(5)]
    primary = Scripted("postmark", *refusals)
    secondary = Scripted("smtp")
    channel = Channel("email", [route(primary, clock, threshold=3), route(secondary, clock)])
    for n in range(5):
        with pytest.raises(PermanentSendError) as raised:
            send(channel, message(f"ntf_{n}"))
        assert raised.value.provider == "postmark"
    assert secondary.calls == []
    breaker = channel.routes[0].breaker
    assert (breaker.state, breaker.failures, breaker.transitions) == (CLOSED, 0, [])


def test_open_primary_is_passed_over_without_being_called() -> None:
    clock = Clock()
    primary = Scripted("postmark", TransientSendError("503"))
    secondary = Scripted("smtp")
    channel = Channel("email", [route(primary, clock, threshold=1), route(secondary, clock)])
    send(channel, message("ntf_1"))
    assert channel.routes[0].breaker.state == OPEN
    sent = send(channel, message("ntf_2"))
    assert (sent.provider, sent.passed_over) == ("smtp", ("postmark",))
    assert primary.calls == ["ntf_1"]
    assert secondary.calls == ["ntf_1", "ntf_2"]


def test_after_the_cooldown_the_primary_gets_the_probe_and_takes_traffic_back() -> None:
    clock = Clock()
    primary = Scripted("postmark", TransientSendError("503"))
    secondary = Scripted("smtp")
    channel = Channel(
        "email", [route(primary, clock, threshold=1, cooldown=10.0), route(secondary, clock)]
    )
    send(channel, message("ntf_1"))
    clock.now += 10.0
    sent = send(channel, message("ntf_2"))
    assert (sent.provider, sent.passed_over) == ("postmark", ())
    assert channel.routes[0].breaker.transitions == [OPEN, HALF_OPEN, CLOSED]


def test_all_failing_is_transient_and_waits_for_the_first_probe() -> None:
    clock = Clock()
    primary = Scripted("postmark", TransientSendError("503"))
    secondary = Scripted("smtp", TransientSendError("421 try later"))
    routes = [route(primary, clock, threshold=1, cooldown=30.0)]
    routes.append(route(secondary, clock, threshold=1, cooldown=20.0))
    channel = Channel("email", routes)
    with pytest.raises(TransientSendError) as first:
        send(channel, message("ntf_1"))
    assert first.value.provider == "smtp"
    assert first.value.retry_after is not None
    assert first.value.retry_after >= min(r.breaker.retry_in() for r in routes) == 20.0

    clock.now += 5.0
    with pytest.raises(TransientSendError) as second:
        send(channel, message("ntf_2"))
    assert second.value.retry_after == pytest.approx(15.0)
    assert "paused" in str(second.value)
    assert primary.calls == secondary.calls == ["ntf_1"]


def test_a_providers_own_longer_retry_after_is_kept() -> None:
    clock = Clock()
    only = Scripted("postmark", TransientSendError("429", retry_after=120.0))
    channel = Channel("email", [route(only, clock, threshold=1, cooldown=30.0)])
    with pytest.raises(TransientSendError) as raised:
        send(channel)
    assert raised.value.retry_after == 120.0


def test_via_uses_only_the_named_provider() -> None:
    clock = Clock()
    fcm = Scripted("fcm", TransientSendError("503"))
    webpush = Scripted("webpush")
    channel = Channel("push", [route(fcm, clock), route(webpush, clock)])
    sent = send(channel, via="webpush")
    assert (sent.provider, sent.passed_over) == ("webpush", ())
    assert fcm.calls == []
    # A device of one kind is never handed to the other kind's service.
    with pytest.raises(TransientSendError) as raised:
        send(channel, via="fcm")
    assert raised.value.provider == "fcm"
    assert webpush.calls == ["ntf_1"]


def test_unknown_via_is_permanent_and_sends_nothing() -> None:
    clock = Clock()
    smtp = Scripted("smtp")
    channel = Channel("email", [route(smtp, clock)])
    with pytest.raises(PermanentSendError, match="no apns provider"):
        send(channel, via="apns")
    assert smtp.calls == []


def test_a_refusal_during_the_probe_frees_it_without_counting() -> None:
    clock = Clock()
    primary = Scripted("postmark", TransientSendError("503"), InvalidRecipientError("bounced"))
    secondary = Scripted("smtp")
    channel = Channel(
        "email", [route(primary, clock, threshold=1, cooldown=10.0), route(secondary, clock)]
    )
    send(channel, message("ntf_1"))
    clock.now += 10.0
    with pytest.raises(InvalidRecipientError):
        send(channel, message("ntf_2"))
    breaker = channel.routes[0].breaker
    assert breaker.state == HALF_OPEN
    sent = send(channel, message("ntf_3"))  # the next send is the new probe
    assert sent.provider == "postmark"
    assert breaker.state == CLOSED


def test_a_late_refusal_of_an_earlier_send_does_not_let_a_second_probe_out() -> None:
    """Sends of one batch overlap: one let through while the primary was healthy is refused
    only once the primary has half-opened and its probe is on its way."""
    clock = Clock()
    release_early, release_probe = asyncio.Event(), asyncio.Event()

    async def early() -> None:
        await release_early.wait()
        raise InvalidRecipientError("550 no such user")

    primary = Scripted("postmark", early, TransientSendError("503"), release_probe.wait)
    secondary = Scripted("smtp")
    channel = Channel(
        "email", [route(primary, clock, threshold=1, cooldown=10.0), route(secondary, clock)]
    )

    async def scenario() -> tuple[BaseException | Sent, Sent, Sent]:
        early_send = asyncio.create_task(channel.send(message("early")))
        await asyncio.sleep(0)
        await channel.send(message("opens"))  # primary fails: open, smtp takes it
        clock.now += 10.0
        probe = asyncio.create_task(channel.send(message("probe")))
        await asyncio.sleep(0)
        release_early.set()
        refused = await asyncio.gather(early_send, return_exceptions=True)
        during = await channel.send(message("during"))
        release_probe.set()
        return refused[0], during, await probe

    refused, during, probe = asyncio.run(scenario())
    assert isinstance(refused, InvalidRecipientError)
    assert (during.provider, during.passed_over) == ("smtp", ("postmark",))
    assert primary.calls == ["early", "opens", "probe"]
    assert probe.provider == "postmark"
    assert channel.routes[0].breaker.state == CLOSED


@pytest.mark.parametrize("fault", ["crash", "cancel"])
def test_a_probe_that_never_reports_back_does_not_shut_the_provider_for_good(
    fault: str,
) -> None:
    clock = Clock()
    hang = asyncio.Event()
    primary = Scripted(
        "postmark",
        TransientSendError("503"),
        RuntimeError("bug in the provider") if fault == "crash" else hang.wait,
    )
    channel = Channel("email", [route(primary, clock, threshold=1, cooldown=10.0)])

    async def scenario() -> Sent:
        with pytest.raises(TransientSendError):
            await channel.send(message("ntf_1"))
        clock.now += 10.0
        if fault == "crash":
            with pytest.raises(RuntimeError):
                await channel.send(message("ntf_2"))
        else:
            probe = asyncio.create_task(channel.send(message("ntf_2")))
            await asyncio.sleep(0)
            probe.cancel()
            with pytest.raises(asyncio.CancelledError):
                await probe
        return await channel.send(message("ntf_3"))

    sent = asyncio.run(scenario())
    assert sent.provider == "postmark"
    assert primary.calls == ["ntf_1", "ntf_2", "ntf_3"]


def test_close_closes_every_provider() -> None:
    clock = Clock()
    providers = [Scripted("postmark"), Scripted("smtp")]
    channel = Channel("email", [route(p, clock) for p in providers])
    asyncio.run(channel.close())
    assert all(p.closed for p in providers)


def test_a_channel_needs_a_provider() -> None:
    with pytest.raises(ValueError, match="at least one provider"):
        Channel("sms", [])
