"""The circuit breaker and the rate limit, on a clock the test moves by hand."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tidings.delivery.resilience import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, RateLimit


class Clock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def breaker(clock: Clock, *, threshold: int = 3, cooldown: float = 30.0) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=threshold, cooldown=cooldown, clock=clock)


def fail(b: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert b.allow()
        b.failure(b.generation)


def test_opens_after_threshold_failures_in_a_row() -> None:
    clock = Clock()
    b = breaker(clock, threshold=3)
    fail(b, 2)
    assert b.state == CLOSED
    fail(b, 1)
    assert b.state == OPEN
    assert not b.allow()
    assert b.transitions == [OPEN]


def test_a_success_resets_the_count() -> None:
    clock = Clock()
    b = breaker(clock, threshold=3)
    fail(b, 2)
    assert b.allow()
    b.success()
    fail(b, 2)
    assert b.state == CLOSED
    assert b.allow()
    fail(b, 1)
    assert b.state == OPEN


def test_stays_open_for_the_cooldown_then_lets_exactly_one_probe_through() -> None:
    clock = Clock()
    b = breaker(clock, threshold=1, cooldown=30.0)
    fail(b, 1)
    clock.advance(29.9)
    assert not b.allow()
    assert b.retry_in() == pytest.approx(0.1)
    clock.advance(0.1)
    assert b.allow()
    assert b.state == HALF_OPEN
    assert not b.allow()
    assert not b.allow()


def test_probe_success_closes() -> None:
    clock = Clock()
    b = breaker(clock, threshold=1, cooldown=5.0)
    fail(b, 1)
    clock.advance(5.0)
    assert b.allow()
    b.success()
    assert b.state == CLOSED
    assert all(b.allow() for _ in range(3))
    assert b.transitions == [OPEN, HALF_OPEN, CLOSED]


def test_probe_failure_reopens_for_another_cooldown() -> None:
    clock = Clock()
    b = breaker(clock, threshold=2, cooldown=5.0)
    fail(b, 2)
    clock.advance(6.0)
    assert b.allow()
    probe = b.generation
    b.failure(probe)
    assert b.state == OPEN
    assert b.retry_in() == pytest.approx(5.0)
    clock.advance(4.9)
    assert not b.allow()
    clock.advance(0.1)
    assert b.allow()
    b.success()
    assert b.transitions == [OPEN, HALF_OPEN, OPEN, HALF_OPEN, CLOSED]


def test_release_frees_the_probe_slot_without_counting() -> None:
    clock = Clock()
    b = breaker(clock, threshold=1, cooldown=5.0)
    fail(b, 1)
    clock.advance(5.0)
    assert b.allow()
    assert not b.allow()
    b.release(b.generation)
    assert b.state == HALF_OPEN
    assert b.allow()  # the slot is free again: the refused address said nothing
    assert b.transitions == [OPEN, HALF_OPEN]


def test_late_outcomes_of_sends_let_through_earlier_do_not_touch_the_probe() -> None:
    clock = Clock()
    b = breaker(clock, threshold=1, cooldown=5.0)
    assert b.allow()
    before = b.generation  # a send let through while closed, still out
    fail(b, 1)
    clock.advance(5.0)
    assert b.allow()  # the probe
    b.release(before)  # the early send was refused: says nothing, frees nothing
    assert not b.allow()
    b.failure(before)  # or it failed: old news, the probe decides
    assert b.state == HALF_OPEN
    assert not b.allow()


def test_retry_in_is_zero_unless_open() -> None:
    clock = Clock()
    b = breaker(clock, threshold=1, cooldown=10.0)
    assert b.retry_in() == 0.0
    fail(b, 1)
    clock.advance(3.0)
    assert b.retry_in() == pytest.approx(7.0)


@dataclass
class Grant:
    generation: int
    probe: bool


OPS = st.one_of(
    st.tuples(st.just("allow"), st.just(0)),
    st.tuples(st.sampled_from(["success", "failure", "release"]), st.integers(0, 50)),
    # In quarters of the cooldown: most steps stay inside it, some cross it.
    st.tuples(st.just("advance"), st.integers(0, 5)),
)
# A send let through while closed is refused only after the breaker has half-opened.
LATE_REFUSAL = [("allow", 0), ("allow", 0), ("failure", 1), ("advance", 4), ("allow", 0)]
LATE_REFUSAL += [("release", 0), ("allow", 0)]


@settings(max_examples=500, deadline=None)
@given(
    threshold=st.integers(1, 4),
    cooldown=st.integers(1, 30),
    ops=st.lists(OPS, min_size=5, max_size=80),
)
@example(threshold=1, cooldown=5, ops=LATE_REFUSAL)
def test_never_lets_through_while_open_nor_two_probes_at_once(
    threshold: int, cooldown: int, ops: list[tuple[str, int]]
) -> None:
    """Sends overlap as they do in a worker: each outcome comes back, in any order, for a
    send the breaker let through, tagged with the generation it was let through in."""
    clock = Clock()
    b = breaker(clock, threshold=threshold, cooldown=float(cooldown))
    out: list[Grant] = []
    for op, arg in ops:
        if op == "advance":
            clock.advance(cooldown * arg / 4)
        elif op == "allow":
            was_open = b.state == OPEN and clock() - b.opened_at < cooldown
            was_closed = b.state == CLOSED
            allowed = b.allow()
            if was_open:
                assert not allowed, "let a send through while open within the cooldown"
            if was_closed:
                assert allowed
            if allowed:
                out.append(Grant(b.generation, b.state == HALF_OPEN))
        elif out:
            grant = out.pop(arg % len(out))
            if op == "success":
                b.success()
            elif op == "failure":
                b.failure(grant.generation)
            else:
                b.release(grant.generation)
        if b.state == HALF_OPEN:
            probes = [g for g in out if g.probe and g.generation == b.generation]
            assert len(probes) <= 1, "two probes out in one half-open period"
            assert b.probing == (len(probes) == 1)
        if b.state == OPEN:
            assert b.transitions[-1] == OPEN


def bucket(clock: Clock, *, rate: float, burst: float) -> RateLimit:
    return RateLimit(per_second=rate, burst=burst, clock=clock)


@settings(max_examples=300, deadline=None)
@given(
    rate=st.floats(0.5, 50.0),
    burst=st.integers(1, 5),
    steps=st.lists(st.tuples(st.floats(0.0, 0.5), st.integers(0, 6)), max_size=40),
)
def test_never_grants_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, steps: list[tuple[float, int]]
) -> None:
    clock = Clock()
    limit = bucket(clock, rate=rate, burst=burst)
    start = clock()
    granted = 0
    for advance, tries in steps:
        clock.advance(advance)
        for _ in range(tries):
            wait = limit.wait_time()
            if wait == 0.0:
                granted += 1
            else:
                assert wait <= 1.0 / rate + 1e-9
        assert granted <= burst + rate * (clock() - start) + 1e-6


def test_a_token_is_due_when_wait_time_says() -> None:
    clock = Clock()
    limit = bucket(clock, rate=4.0, burst=2)
    assert limit.wait_time() == 0.0
    assert limit.wait_time() == 0.0
    wait = limit.wait_time()
    assert wait == pytest.approx(0.25)
    clock.advance(wait / 2)
    assert limit.wait_time() == pytest.approx(0.125)
    clock.advance(0.125 + 1e-9)
    assert limit.wait_time() == 0.0


def test_zero_rate_means_no_limit() -> None:
    clock = Clock()
    limit = bucket(clock, rate=0.0, burst=1)
    assert all(limit.wait_time() == 0.0 for _ in range(1000))


def test_acquire_waits_for_its_token() -> None:
    limit = RateLimit(per_second=40.0, burst=1.0)

    async def take(count: int) -> float:
        started = time.monotonic()
        for _ in range(count):
            await limit.acquire()
        return time.monotonic() - started

    elapsed = asyncio.run(take(5))
    # One token at once, then one every 1/40 s.
    assert elapsed >= 4 / 40 - 0.005
