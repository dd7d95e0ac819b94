"""A channel's providers in order of preference, each behind its breaker and rate limit.

``send`` tries the primary first. A transient failure, or a primary whose breaker is
open, passes the message to the next provider of the same channel (failover); the
breaker then keeps traffic on the secondary until the primary answers a probe again.
A permanent failure (the address is refused) is final: another provider would refuse it
too. When no provider could take the message, the failure is transient and says when the
first breaker will let a probe through, so the retry comes no earlier than that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tidings.delivery.providers.base import (
    OutboundMessage,
    PermanentSendError,
    Provider,
    SendError,
    SendReceipt,
    TransientSendError,
)
from tidings.delivery.resilience import CircuitBreaker, RateLimit


class ProvidersPaused(TransientSendError):
    """No provider was tried: every one is open or has its probe out. The message waits
    for the breaker without using up an attempt, since nothing was attempted."""


@dataclass
class Route:
    provider: Provider
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    limit: RateLimit = field(default_factory=lambda: RateLimit(per_second=0))

    @property
    def name(self) -> str:
        return self.provider.name


@dataclass(frozen=True, slots=True)
class Sent:
    receipt: SendReceipt
    provider: str
    # Providers that failed (or were skipped while open) before this one took it.
    passed_over: tuple[str, ...] = ()


class Channel:
    def __init__(self, name: str, routes: Sequence[Route]) -> None:
        if not routes:
            raise ValueError(f"channel {name} needs at least one provider")
        self.name = name
        self.routes = list(routes)

    @property
    def providers(self) -> list[Provider]:
        return [route.provider for route in self.routes]

    async def send(self, message: OutboundMessage, *, via: str | None = None) -> Sent:
        """``via`` names the one provider that can serve this address (a push device's
        kind, a Slack hook); without it the providers are tried in order."""
        routes = [r for r in self.routes if r.name == via] if via else self.routes
        if not routes:
            raise PermanentSendError(f"no {via} provider is configured for {self.name}")
        passed_over: list[str] = []
        last: SendError | None = None
        for route in routes:
            if not route.breaker.allow():
                passed_over.append(route.name)
                continue
            # Other sends may change the breaker while this one is out; its outcome is
            # weighed against the state it was let through in (``resilience``).
            granted = route.breaker.generation
            try:
                await route.limit.acquire()
                receipt = await route.provider.send(message)
            except SendError as exc:
                exc.provider = route.name
                if exc.permanent:
                    route.breaker.release(granted)
                    raise
                route.breaker.failure(granted)
                passed_over.append(route.name)
                last = exc
                continue
            except BaseException:
                # Cancelled, or a fault in the provider's own code: this says nothing about
                # the service, but a probe that never reports back would keep the breaker
                # half-open and shut for good.
                route.breaker.release(granted)
                raise
            route.breaker.success()
            return Sent(receipt, route.name, tuple(passed_over))
        probe_in = min(route.breaker.retry_in() for route in routes)
        if last is not None:
            if probe_in > (last.retry_after or 0):
                last.retry_after = probe_in
            raise last
        raise ProvidersPaused(
            f"every {self.name} provider is paused after repeated failures "
            f"({', '.join(passed_over)}); next probe in {probe_in:.0f} s",
            retry_after=probe_in,
            provider=routes[0].name,
        )

    async def close(self) -> None:
        for route in self.routes:
            await route.provider.close()


def single(provider: Provider) -> Channel:
    return Channel(provider.channel, [Route(provider)])


def by_name(channels: Mapping[str, Channel]) -> dict[str, Provider]:
    """Every provider of every channel, by provider name."""
    return {p.name: p for channel in channels.values() for p in channel.providers}
