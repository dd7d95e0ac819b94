"""Retry policies and what follows a decline: pure decisions, checked by example and by
property over random policies, failure times, zones and networks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.billing.errors import BillingError
from tidings.billing.retries import after_decline, transition
from tidings.billing.retry_policy import RetryPolicy

FAILED = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo", "Australia/Lord_Howe"]


def test_attempts_follow_the_intervals_at_the_preferred_local_hour() -> None:
    policy = RetryPolicy(intervals=(86_400, 3 * 86_400), max_attempts=3, preferred_hour=9)
    first = policy.next_attempt(
        first_failed_at=FAILED, last_attempt_at=FAILED, attempts_made=0, time_zone="Europe/Paris"
    )
    # 14:30 UTC + 1 day = 21 Nov 15:30 Paris: past 09:00, so 22 Nov 09:00 Paris (08:00 UTC).
    assert first == datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    assert first is not None
    second = policy.next_attempt(
        first_failed_at=FAILED, last_attempt_at=first, attempts_made=1, time_zone="Europe/Paris"
    )
    # The last interval repeats: 3 days after 22 Nov 09:00 is 25 Nov 09:00 exactly.
    assert second == datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def test_no_attempt_past_the_attempt_limit_or_the_network_cap() -> None:
    policy = RetryPolicy(max_attempts=6, network_caps={"mastercard": 2}, preferred_hour=None)
    kwargs = {"first_failed_at": FAILED, "last_attempt_at": FAILED}
    assert policy.next_attempt(attempts_made=5, network="visa", **kwargs) is not None
    assert policy.next_attempt(attempts_made=6, network="visa", **kwargs) is None
    assert policy.next_attempt(attempts_made=1, network="Mastercard", **kwargs) is not None
    assert policy.next_attempt(attempts_made=2, network="mastercard", **kwargs) is None


def test_no_attempt_later_than_max_days_after_the_first_failure() -> None:
    policy = RetryPolicy(intervals=(6 * 86_400,), max_attempts=10, max_days=14, preferred_hour=None)
    late = FAILED + timedelta(days=9)
    assert (
        policy.next_attempt(first_failed_at=FAILED, last_attempt_at=late, attempts_made=2) is None
    )
    early = FAILED + timedelta(days=7)
    assert policy.next_attempt(
        first_failed_at=FAILED, last_attempt_at=early, attempts_made=1
    ) == early + timedelta(days=6)


def test_a_hard_decline_is_never_retried_and_says_why() -> None:
    decision = after_decline(
        RetryPolicy(),
        category="hard",
        decline_code="stolen_card",
        first_failed_at=FAILED,
        declined_at=FAILED,
        attempts_made=0,
        network="visa",
        time_zone=None,
    )
    assert decision.action == "exhaust"
    assert decision.next_attempt_at is None
    assert "stolen_card" in decision.why


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"intervals": []}, "intervals"),
        ({"intervals": [30]}, "intervals"),
        ({"max_attempts": -1}, "max_attempts"),
        ({"max_days": 0}, "max_days"),
        ({"preferred_hour": 24}, "preferred_hour"),
        ({"time_zone": "Mars/Olympus"}, "time_zone"),
        ({"network_caps": {"visa": -2}}, "network_caps"),
        ({"final_action": "shrug"}, "final_action"),
        ({"retry_every": 3}, "retry_every"),
    ],
)
def test_an_unusable_policy_is_refused_naming_the_field(
    values: dict[str, object], field: str
) -> None:
    with pytest.raises(BillingError) as refused:
        RetryPolicy.from_json(values)
    assert refused.value.code == "invalid_retry_policy"
    assert refused.value.field == field


def test_a_policy_survives_its_json_form() -> None:
    policy = RetryPolicy(intervals=(3600, 7200), network_caps={"amex": 4}, final_action="escalate")
    assert RetryPolicy.from_json(policy.to_json()) == policy


def test_the_state_machine_refuses_moves_from_final_states() -> None:
    assert transition("retry_scheduled", "claim") == "retrying"
    with pytest.raises(BillingError) as refused:
        transition("exhausted", "claim")
    assert refused.value.code == "illegal_transition"


policies = st.builds(
    RetryPolicy,
    intervals=st.lists(st.integers(60, 10 * 86_400), min_size=1, max_size=5).map(tuple),
    max_attempts=st.integers(0, 12),
    max_days=st.integers(1, 60),
    preferred_hour=st.none() | st.integers(0, 23),
    time_zone=st.sampled_from(ZONES),
    network_caps=st.dictionaries(
        st.sampled_from(["visa", "mastercard", "amex"]), st.integers(0, 8)
    ),
)


@settings(max_examples=200, deadline=None)
@given(
    policy=policies,
    failed_at=st.datetimes(
        min_value=datetime(2024, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
    ),
    zone=st.none() | st.sampled_from(ZONES),
    network=st.none() | st.sampled_from(["visa", "mastercard", "amex", "discover"]),
)
def test_a_whole_schedule_keeps_every_limit(
    policy: RetryPolicy, failed_at: datetime, zone: str | None, network: str | None
) -> None:
    """Walking a schedule to its end: times strictly increase, each at least its interval
    after the previous, at the preferred local hour, within max_days, and no more
    attempts than the attempt limit and the network cap allow."""
    schedule: list[datetime] = []
    last = failed_at
    while True:
        at = policy.next_attempt(
            first_failed_at=failed_at,
            last_attempt_at=last,
            attempts_made=len(schedule),
            network=network,
            time_zone=zone,
        )
        if at is None:
            break
        wait = policy.intervals[min(len(schedule), len(policy.intervals) - 1)]
        assert at >= last + timedelta(seconds=wait)
        assert at <= failed_at + timedelta(days=policy.max_days)
        if policy.preferred_hour is not None:
            local = at.astimezone(ZoneInfo(zone or policy.time_zone))
            assert (local.minute, local.second) == (0, 0)
            # A DST gap may push the wall clock one hour on; never earlier.
            assert local.hour in (policy.preferred_hour, (policy.preferred_hour + 1) % 24)
        schedule.append(at)
        last = at
    cap = policy.network_caps.get(network or "")
    assert len(schedule) <= (policy.max_attempts if cap is None else min(cap, policy.max_attempts))
