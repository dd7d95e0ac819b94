"""Retry decisions: give up when told or when out of attempts, else wait a jittered backoff."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.delivery.retry import GiveUp, RetryAt, RetryPolicy

NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
POLICY = RetryPolicy(max_attempts=5, base_seconds=2.0, max_seconds=60.0)


def decide(
    policy: RetryPolicy = POLICY,
    *,
    attempt: int = 1,
    max_attempts: int | None = None,
    permanent: bool = False,
    error: str = "421 try again later",
    seed: int = 0,
    not_before: float | None = None,
) -> RetryAt | GiveUp:
    return policy.decide(
        attempt=attempt,
        max_attempts=max_attempts,
        permanent=permanent,
        error=error,
        now=NOW,
        rng=random.Random(seed),
        not_before=not_before,
    )


def wait_of(decision: RetryAt | GiveUp) -> float:
    assert isinstance(decision, RetryAt), decision
    return (decision.at - NOW).total_seconds()


def test_a_permanent_failure_gives_up_at_once() -> None:
    decision = decide(attempt=1, permanent=True, error="550 no such user")
    assert isinstance(decision, GiveUp)
    assert "permanent" in decision.reason
    assert "550 no such user" in decision.reason


@pytest.mark.parametrize("attempt", [5, 6, 50])
def test_running_out_of_attempts_gives_up(attempt: int) -> None:
    decision = decide(attempt=attempt, error="timed out")
    assert isinstance(decision, GiveUp)
    assert str(attempt) in decision.reason
    assert "timed out" in decision.reason


def test_the_attempt_before_the_last_still_retries() -> None:
    assert isinstance(decide(attempt=4), RetryAt)


def test_a_job_limit_overrides_the_policy_limit() -> None:
    assert isinstance(decide(attempt=2, max_attempts=2), GiveUp)
    assert isinstance(decide(attempt=7, max_attempts=10), RetryAt)


def test_max_attempts_of_one_never_retries() -> None:
    assert isinstance(decide(attempt=1, max_attempts=1), GiveUp)


def test_permanent_wins_even_with_attempts_left() -> None:
    assert isinstance(decide(attempt=1, max_attempts=100, permanent=True), GiveUp)


@pytest.mark.parametrize("attempt", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", range(20))
def test_a_retry_waits_between_now_and_the_ceiling(attempt: int, seed: int) -> None:
    ceiling = {1: 2.0, 2: 4.0, 3: 8.0, 4: 16.0}[attempt]
    assert 0 <= wait_of(decide(attempt=attempt, seed=seed)) <= ceiling


def test_waits_are_jittered_not_fixed() -> None:
    waits = {wait_of(decide(attempt=3, seed=seed)) for seed in range(20)}
    assert len(waits) > 10


def test_the_ceiling_doubles_then_caps() -> None:
    policy = RetryPolicy(max_attempts=20, base_seconds=1.5, max_seconds=30.0)
    assert [policy.backoff_ceiling(n) for n in range(1, 8)] == [
        1.5,
        3.0,
        6.0,
        12.0,
        24.0,
        30.0,
        30.0,
    ]


def test_the_cap_bounds_late_retries() -> None:
    policy = RetryPolicy(max_attempts=100, base_seconds=2.0, max_seconds=60.0)
    waits = [wait_of(decide(policy, attempt=40, seed=seed)) for seed in range(50)]
    assert all(0 <= wait <= 60.0 for wait in waits)
    assert max(waits) > 30.0  # the whole capped range is used, not a shrunken one


def test_retry_after_is_a_minimum() -> None:
    # The ceiling after attempt 1 is 2s; the server asked for 120s.
    for seed in range(20):
        assert wait_of(decide(attempt=1, seed=seed, not_before=120.0)) == 120.0


def test_a_short_retry_after_does_not_shorten_the_backoff() -> None:
    policy = RetryPolicy(max_attempts=10, base_seconds=100.0, max_seconds=100.0)
    waits = [wait_of(decide(policy, attempt=1, seed=seed, not_before=1.0)) for seed in range(30)]
    assert all(1.0 <= wait <= 100.0 for wait in waits)
    assert any(wait > 1.0 for wait in waits)


def test_retry_after_does_not_revive_a_job_out_of_attempts() -> None:
    assert isinstance(decide(attempt=5, not_before=10.0), GiveUp)


def test_a_very_long_retry_schedule_keeps_retrying_at_the_cap() -> None:
    """An operator may allow thousands of attempts: the exponent must not overflow."""
    policy = RetryPolicy(max_attempts=5000, base_seconds=2.0, max_seconds=900.0)
    assert 0 <= wait_of(decide(policy, attempt=1100)) <= 900.0


@given(
    attempt=st.integers(1, 1000),
    extra=st.integers(1, 50),
    base=st.floats(0.001, 3600, allow_nan=False),
    cap=st.floats(0.001, 86400, allow_nan=False),
    seed=st.integers(0, 2**32 - 1),
    not_before=st.none() | st.floats(-10, 10**6, allow_nan=False),
)
def test_every_wait_is_within_bounds(
    attempt: int, extra: int, base: float, cap: float, seed: int, not_before: float | None
) -> None:
    policy = RetryPolicy(max_attempts=attempt + extra, base_seconds=base, max_seconds=cap)
    wait = wait_of(decide(policy, attempt=attempt, seed=seed, not_before=not_before))
    ceiling = min(cap, base * 2 ** (attempt - 1))
    # timedelta keeps microseconds, so allow one microsecond of rounding.
    assert wait >= 0
    assert wait <= max(ceiling, not_before or 0) + 1e-6
    if not_before is not None:
        assert wait >= not_before - 1e-6
