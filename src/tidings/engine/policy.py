"""When and whether a message may go out: pure decisions over values, no I/O.

Quiet hours and sending windows are read in the recipient's own time zone, with the
zone's real offsets on the day (daylight saving included).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_DURATION = re.compile(r"^(\d+)\s*(s|m|h|d)$")

# Rank of each canonical shipment status; side states have none (DESIGN.md).
SHIPMENT_RANK = {
    "pending": 0,
    "info_received": 1,
    "in_transit": 2,
    "out_for_delivery": 3,
    "available_for_pickup": 4,
    "delivered": 5,
}
SHIPMENT_FINAL = "delivered"


def zone(name: str | None) -> tzinfo:
    """The recipient's zone; UTC when unknown, so decisions never fail on bad data."""
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def parse_clock(value: str) -> time:
    match = _CLOCK.match(value.strip())
    if not match:
        raise ValueError(f"'{value}' is not a time of day like 08:30")
    return time(int(match.group(1)), int(match.group(2)))


def parse_duration(value: str | int | float) -> timedelta:
    """``90s``, ``10m``, ``2h``, ``1d``, or a number of seconds."""
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    match = _DURATION.match(value.strip())
    if not match:
        raise ValueError(f"'{value}' is not a duration like 10m, 2h or 1d")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
    return timedelta(**{unit: int(match.group(1))})


@dataclass(frozen=True, slots=True)
class DailyWindow:
    """A span of local clock time, ``start`` inclusive to ``end`` exclusive.

    When ``end`` <= ``start`` the window wraps midnight (22:00-08:00).
    """

    start: time
    end: time

    @classmethod
    def parse(cls, value: str) -> DailyWindow:
        start, sep, end = value.partition("-")
        if not sep:
            raise ValueError(f"'{value}' is not a window like 22:00-08:00")
        return cls(parse_clock(start), parse_clock(end))

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    def contains(self, local: time) -> bool:
        if self.start == self.end:
            return False  # an empty window, not a whole day
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def _next_boundary(self, at: datetime, tz: tzinfo, boundary: time) -> datetime:
        local = at.astimezone(tz)
        day = local.date()
        for offset in range(3):
            candidate = _local(day + timedelta(days=offset), boundary, tz)
            if candidate > at:
                return candidate
        raise AssertionError("a clock time recurs within three days")  # pragma: no cover

    def next_outside(self, at: datetime, tz: tzinfo) -> datetime:
        """``at`` itself if outside the window, else the moment the window ends."""
        if not self.contains(at.astimezone(tz).time()):
            return at
        return self._next_boundary(at, tz, self.end)

    def next_inside(self, at: datetime, tz: tzinfo) -> datetime:
        """``at`` itself if inside the window, else the moment the window next opens."""
        if self.start == self.end or self.contains(at.astimezone(tz).time()):
            return at
        return self._next_boundary(at, tz, self.start)


def _local(day: date, clock: time, tz: tzinfo) -> datetime:
    """A local wall-clock moment as UTC.

    PEP 495 fold=0: a time repeated by a DST fall-back is its first occurrence; a time
    skipped by a spring-forward jump lands just after the jump (02:30 becomes 03:30), so
    a boundary inside the gap still happens that day, a little late rather than never.
    """
    return datetime.combine(day, clock, tzinfo=tz).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Timing:
    """When a planned message may go out, and why it waits if it does."""

    at: datetime
    reason: str | None = None


DEFERRABLE_CHANNELS = frozenset({"sms", "push"})


def send_time(
    *,
    now: datetime,
    channel: str,
    critical: bool,
    time_zone: str | None,
    quiet_hours: DailyWindow | None,
    defer_email: bool,
    window: DailyWindow | None = None,
    hold: timedelta | None = None,
) -> Timing:
    """Critical messages go now. Others: a hold, then the rule's sending window, then the
    recipient's quiet hours (SMS and push always; email only when configured)."""
    if critical:
        return Timing(now)
    tz = zone(time_zone)
    at, reasons = now, []
    if hold:
        at = now + hold
        reasons.append(f"held {int(hold.total_seconds())}s for a newer status")
    if window is not None:
        opened = window.next_inside(at, tz)
        if opened != at:
            reasons.append(f"outside the rule's sending window {window}")
            at = opened
    deferrable = channel in DEFERRABLE_CHANNELS or (channel == "email" and defer_email)
    if quiet_hours is not None and deferrable:
        ended = quiet_hours.next_outside(at, tz)
        if ended != at:
            reasons.append(f"quiet hours {quiet_hours} in {getattr(tz, 'key', 'UTC')}")
            at = ended
    return Timing(at, "; ".join(reasons) or None)


def next_digest_at(now: datetime, time_zone: str | None, hour: int) -> datetime:
    """The next time the recipient's daily digest goes out (strictly after ``now``)."""
    tz = zone(time_zone)
    local_day = now.astimezone(tz).date()
    for offset in range(3):
        candidate = _local(local_day + timedelta(days=offset), time(hour), tz)
        if candidate > now:
            return candidate
    raise AssertionError("an hour recurs within three days")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class ShipmentVerdict:
    notify: bool
    reason: str | None = None


def shipment_verdict(
    *, reached_rank: int | None, reached_status: str | None, status: str
) -> ShipmentVerdict:
    """Never a lower-ranked status after a higher one, nor the same ranked status twice.

    Side states (exception, attempt_failed, ...) have no rank: they are news whenever
    the parcel is not yet delivered.
    """
    rank = SHIPMENT_RANK.get(status)
    if reached_status == SHIPMENT_FINAL and status != SHIPMENT_FINAL and rank is None:
        return ShipmentVerdict(False, f"'{status}' arrived after the parcel was delivered")
    if rank is None or reached_rank is None:
        return ShipmentVerdict(True)
    if rank < reached_rank:
        return ShipmentVerdict(
            False, f"'{status}' is older than '{reached_status}', already reached"
        )
    if rank == reached_rank:
        return ShipmentVerdict(False, f"'{status}' was already reached")
    return ShipmentVerdict(True)


def within_budget(*, sent_today: int, limit: int | None) -> bool:
    """Per-order contact budget for non-critical messages over the last 24 hours."""
    return limit is None or sent_today < limit
