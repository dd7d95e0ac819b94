"""Per-provider protection: a circuit breaker and a rate limit.

The breaker keeps a worker from hammering a provider that is down, and tells the channel's
failover (``delivery.channels``) when to use the secondary provider:

- closed: sends go through; ``failure_threshold`` transient failures in a row open it.
- open: nothing is sent until ``cooldown`` has passed.
- half-open: one probe is let through; success closes the breaker, failure opens it again
  for another cooldown.

Only transient failures count: a refused address says nothing about the provider's health.
Each worker process keeps its own breakers; they need no coordination to protect a provider.

Sends run concurrently, so a reply can come back after the breaker has moved on: a send let
through while closed may fail once the breaker is already half-open. ``generation`` names
the state a send was let through in; a failure or release from an earlier generation is old
news and neither re-opens the breaker nor frees the probe's slot, which would let a second
probe out while the first is still on its way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# While a probe is out, how soon the messages that found the breaker busy look again.
PROBE_ANSWER_SECONDS = 1.0
CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


@dataclass
class CircuitBreaker:
    failure_threshold: int = 5
    cooldown: float = 30.0
    clock: Callable[[], float] = time.monotonic
    state: str = CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = False
    # Bumped on every state change: what a send's outcome is measured against.
    generation: int = 0
    # How often it opened and closed: the fault tests and the logs read these.
    transitions: list[str] = field(default_factory=list)

    def allow(self) -> bool:
        """May a send go to this provider now? In half-open, only one probe at a time."""
        if self.state == OPEN:
            if self.clock() - self.opened_at < self.cooldown:
                return False
            self._move(HALF_OPEN)
        if self.state == HALF_OPEN:
            if self.probing:
                return False
            self.probing = True
        return True

    def retry_in(self) -> float:
        """Seconds until a send may be let through again: the rest of an open breaker's
        cooldown; while a probe is out, a short while for its answer (at most the
        cooldown); 0 when a send would go now."""
        if self.state == OPEN:
            return max(0.0, self.cooldown - (self.clock() - self.opened_at))
        if self.state == HALF_OPEN and self.probing:
            return min(self.cooldown, PROBE_ANSWER_SECONDS)
        return 0.0

    def success(self) -> None:
        """The provider answered: whenever the send was let through, it works now."""
        self.failures = 0
        self.probing = False
        if self.state != CLOSED:
            self._move(CLOSED)

    def failure(self, generation: int | None = None) -> None:
        """A transient failure of a send let through in ``generation`` (read right after
        ``allow()``; None: the current one)."""
        if not self._current(generation):
            return
        if self.state == HALF_OPEN:
            # Half-open lets exactly one send through: this is the probe's answer.
            self._open()
            return
        self.failures += 1
        if self.state == CLOSED and self.failures >= self.failure_threshold:
            self._open()

    def release(self, generation: int | None = None) -> None:
        """The send ended without saying anything about the provider (a refused address):
        a probe's slot is freed without counting a failure."""
        if self._current(generation) and self.state == HALF_OPEN:
            self.probing = False

    def _current(self, generation: int | None) -> bool:
        return generation is None or generation == self.generation

    def _open(self) -> None:
        self.opened_at = self.clock()
        self.failures = 0
        self.probing = False
        self._move(OPEN)

    def _move(self, state: str) -> None:
        self.state = state
        self.generation += 1
        self.transitions.append(state)


@dataclass
class RateLimit:
    """A token bucket: at most ``per_second`` sends on average, bursts up to ``burst``.
    ``per_second`` of 0 means no limit."""

    per_second: float
    burst: float = 1.0
    clock: Callable[[], float] = time.monotonic
    tokens: float = field(init=False)
    updated: float = field(init=False)

    def __post_init__(self) -> None:
        self.burst = max(self.burst, 1.0)
        self.tokens = self.burst
        self.updated = self.clock()

    def wait_time(self) -> float:
        """Take a token if there is one (0.0), else how long until one is due."""
        if self.per_second <= 0:
            return 0.0
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.per_second)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.per_second

    async def acquire(self) -> None:
        while (wait := self.wait_time()) > 0:
            await asyncio.sleep(wait)
