"""Quiet hours, sending windows, digests and shipment ordering: pure decisions, checked
over random instants, zones and sequences."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.engine.policy import (
    SHIPMENT_RANK,
    DailyWindow,
    next_digest_at,
    parse_duration,
    send_time,
    shipment_verdict,
)

ZONES = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Asia/Tokyo",
    "Australia/Lord_Howe",
    "America/St_Johns",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "America/Sao_Paulo",
]
instants = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
)
clocks = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))
windows = st.builds(DailyWindow, clocks, clocks)


def test_window_parsing_and_wrapping() -> None:
    night = DailyWindow.parse("22:00-08:00")
    assert night.contains(time(23, 30))
    assert night.contains(time(3, 0))
    assert not night.contains(time(8, 0))
    assert not night.contains(time(12, 0))
    day = DailyWindow.parse("09:00-17:30")
    assert day.contains(time(9, 0))
    assert not day.contains(time(17, 30))
    with pytest.raises(ValueError, match="window like"):
        DailyWindow.parse("22:00")
    with pytest.raises(ValueError, match="time of day"):
        DailyWindow.parse("25:00-08:00")


def test_quiet_hours_defer_sms_to_the_local_end_of_the_window() -> None:
    # 23:30 in Paris on a winter night is 22:30 UTC; quiet hours end at 08:00 Paris (07:00 UTC).
    now = datetime(2026, 1, 10, 22, 30, tzinfo=UTC)
    timing = send_time(
        now=now,
        channel="sms",
        critical=False,
        time_zone="Europe/Paris",
        quiet_hours=DailyWindow.parse("22:00-08:00"),
        defer_email=False,
    )
    assert timing.at == datetime(2026, 1, 11, 7, 0, tzinfo=UTC)
    assert timing.reason is not None
    assert "quiet hours" in timing.reason
    email = send_time(
        now=now,
        channel="email",
        critical=False,
        time_zone="Europe/Paris",
        quiet_hours=DailyWindow.parse("22:00-08:00"),
        defer_email=False,
    )
    assert email.at == now
    critical = send_time(
        now=now,
        channel="sms",
        critical=True,
        time_zone="Europe/Paris",
        quiet_hours=DailyWindow.parse("22:00-08:00"),
        defer_email=True,
    )
    assert critical.at == now


def test_hold_then_window() -> None:
    now = datetime(2026, 6, 1, 6, 55, tzinfo=UTC)  # 08:55 in Paris (summer)
    timing = send_time(
        now=now,
        channel="email",
        critical=False,
        time_zone="Europe/Paris",
        quiet_hours=None,
        defer_email=False,
        hold=timedelta(minutes=10),
        window=DailyWindow.parse("09:00-20:00"),
    )
    assert timing.at == now + timedelta(minutes=10)  # 09:05 local: inside the window


@given(
    now=instants,
    zone=st.sampled_from(ZONES),
    quiet=windows,
    channel=st.sampled_from(["sms", "push", "email", "in_app"]),
    defer_email=st.booleans(),
)
def test_deferred_messages_land_outside_quiet_hours(
    now: datetime, zone: str, quiet: DailyWindow, channel: str, defer_email: bool
) -> None:
    timing = send_time(
        now=now,
        channel=channel,
        critical=False,
        time_zone=zone,
        quiet_hours=quiet,
        defer_email=defer_email,
    )
    deferrable = channel in ("sms", "push") or (channel == "email" and defer_email)
    local = timing.at.astimezone(ZoneInfo(zone)).time()
    assert timing.at >= now
    assert timing.at - now <= timedelta(hours=26)
    if not deferrable or not quiet.contains(now.astimezone(ZoneInfo(zone)).time()):
        assert timing.at == now
    else:
        assert timing.at > now
        # Lands on or just after the end of the window (a DST gap may push it an hour).
        assert not quiet.contains(local) or local == quiet.end


@given(now=instants, zone=st.sampled_from(ZONES), quiet=windows)
def test_critical_messages_are_never_deferred(now: datetime, zone: str, quiet: DailyWindow) -> None:
    for channel in ("sms", "push", "email", "in_app"):
        timing = send_time(
            now=now,
            channel=channel,
            critical=True,
            time_zone=zone,
            quiet_hours=quiet,
            defer_email=True,
            hold=timedelta(minutes=10),
            window=DailyWindow.parse("09:00-10:00"),
        )
        assert timing.at == now


@given(now=instants, zone=st.sampled_from(ZONES), hour=st.integers(0, 23))
def test_digest_time_is_the_next_local_digest_hour(now: datetime, zone: str, hour: int) -> None:
    at = next_digest_at(now, zone, hour)
    local = at.astimezone(ZoneInfo(zone))
    assert now < at <= now + timedelta(hours=26)
    assert (local.hour, local.minute) in ((hour, 0), ((hour + 1) % 24, 0))  # DST gap moves it


def test_unknown_zone_falls_back_to_utc() -> None:
    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert next_digest_at(now, "Mars/Olympus_Mons", 18) == datetime(2026, 3, 1, 18, tzinfo=UTC)


STATUSES = [*SHIPMENT_RANK, "attempt_failed", "exception", "return_to_sender"]


@given(st.lists(st.sampled_from(STATUSES), max_size=20))
def test_a_customer_never_sees_a_step_back_nor_the_same_step_twice(sequence: list[str]) -> None:
    reached_rank: int | None = None
    reached_status: str | None = None
    told: list[str] = []
    for status in sequence:
        verdict = shipment_verdict(
            reached_rank=reached_rank, reached_status=reached_status, status=status
        )
        if verdict.notify:
            told.append(status)
        else:
            assert verdict.reason
        rank = SHIPMENT_RANK.get(status)
        if rank is not None and (reached_rank is None or rank > reached_rank):
            reached_rank, reached_status = rank, status
    ranked = [SHIPMENT_RANK[s] for s in told if s in SHIPMENT_RANK]
    assert ranked == sorted(set(ranked))  # strictly increasing: no repeat, no step back
    if "delivered" in told:  # nothing at all after delivered
        assert told.index("delivered") == len(told) - 1


def test_a_late_in_transit_after_delivered_is_suppressed_with_a_reason() -> None:
    verdict = shipment_verdict(
        reached_rank=SHIPMENT_RANK["delivered"], reached_status="delivered", status="in_transit"
    )
    assert not verdict.notify
    assert verdict.reason == "'in_transit' is older than 'delivered', already reached"


def test_durations() -> None:
    assert parse_duration("10m") == timedelta(minutes=10)
    assert parse_duration("2h") == timedelta(hours=2)
    assert parse_duration(90) == timedelta(seconds=90)
    with pytest.raises(ValueError, match="duration"):
        parse_duration("soon")
