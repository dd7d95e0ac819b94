"""Delivery metrics per channel and provider over a time window.

Which messages count: notifications whose ``sent_at`` falls in the window ``[since,
until)``; for failed and dead ones, which were never sent, their ``updated_at`` (when they
gave up) is used instead. Rows are grouped by channel and provider; a message no provider
took (no provider configured for its channel) is grouped under provider ``"none"``.

Counters:

- ``sent``: messages that left, whatever happened next (status sent, delivered,
  acknowledged, bounced or complained).
- ``delivered``: status delivered or acknowledged (a message read, opened or clicked was
  delivered). In-app messages are delivered when they are written to the inbox, so for
  channel ``in_app`` every sent message is delivered.
- ``failed``: status failed or dead.
- ``bounced``, ``complained``, ``acknowledged``: messages in that status.
- ``attempts``: delivery attempts that finished in the window, of every outcome (a
  message that only waited behind open breakers made no attempt);
  ``transient_failures``: those among them that failed in a way worth retrying.

Rates (``null`` means unknown, not zero):

- ``delivery_rate`` = delivered / sent, only where delivery is known: channel ``in_app``
  (always 1 when anything was sent), or a provider that reported at least one delivery
  receipt for the messages counted. A provider that never reported one in the window
  (email over SMTP has no delivery receipts) gets ``null`` rather than 0, since its
  messages may well have arrived. ``null`` also when nothing was sent.
- ``acknowledgment_rate`` = acknowledged / delivered; ``null`` when delivered is 0, and
  when delivery is unknown: over SMTP only the acknowledged messages are known to be
  delivered, so the ratio would always be 1.
- In ``totals`` the counters are sums over all rows; the rates are computed over the rows
  whose delivery is known only, so ``null`` when no row's delivery is known.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Connection, and_, case, func, or_, select

from tidings.db.schema import delivery_attempts, delivery_jobs, notifications

# Notification statuses (DESIGN.md, "State machines").
LEFT = ("sent", "delivered", "acknowledged", "bounced", "complained")
DELIVERED = ("delivered", "acknowledged")
FAILED = ("failed", "dead")
# Channels whose messages are delivered by the act of sending them.
DELIVERED_ON_SEND = frozenset({"in_app"})
NO_PROVIDER = "none"

DEFAULT_WINDOW = timedelta(hours=24)
MAX_WINDOW = timedelta(days=31)

# RFC 3339 section 5.6 date-time; the offset is required. Python's fromisoformat alone
# also takes forms RFC 3339 does not have (basic format, a bare date, no offset).
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)


class WindowError(ValueError):
    """A window the endpoint refuses; ``code`` and ``field`` are stable for clients."""

    def __init__(self, code: str, detail: str, *, field: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.field = field


def parse_window(
    *, since: str | None, until: str | None, now: datetime
) -> tuple[datetime, datetime]:
    """The window asked for: defaults to the 24 hours before ``now``."""
    end = _parse_time(until, "until") if until is not None else now
    start = _parse_time(since, "since") if since is not None else end - DEFAULT_WINDOW
    if start >= end:
        raise WindowError(
            "invalid_window", "since must be earlier than until; swap them.", field="until"
        )
    if end - start > MAX_WINDOW:
        raise WindowError(
            "window_too_long",
            f"Ask for at most {MAX_WINDOW.days} days at a time; move since closer to until.",
            field="since",
        )
    return start, end


def _parse_time(value: str, name: str) -> datetime:
    parsed = None
    if _RFC3339.fullmatch(value):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise WindowError(
            "invalid_time",
            f"{name} must be an RFC 3339 timestamp with an offset, such as "
            "2026-11-21T10:00:00Z (in a query string, write '+' as %2B).",
            field=name,
        )
    return parsed


@dataclass(frozen=True, slots=True)
class Tally:
    """What the database counted for one channel and provider."""

    channel: str
    provider: str
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    bounced: int = 0
    complained: int = 0
    acknowledged: int = 0
    # Messages the provider confirmed delivered (status delivered, or a delivered_at).
    delivery_receipts: int = 0
    attempts: int = 0
    transient_failures: int = 0


@dataclass(frozen=True, slots=True)
class Rates:
    delivery_rate: float | None
    acknowledgment_rate: float | None


@dataclass(frozen=True, slots=True)
class Counters:
    sent: int
    delivered: int
    failed: int
    bounced: int
    complained: int
    acknowledged: int
    delivery_rate: float | None
    acknowledgment_rate: float | None
    attempts: int
    transient_failures: int


@dataclass(frozen=True, slots=True)
class ChannelMetrics:
    channel: str
    provider: str
    counters: Counters


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    since: datetime
    until: datetime
    channels: list[ChannelMetrics]
    totals: Counters


def rates(*, sent: int, delivered: int, acknowledged: int, delivery_known: bool) -> Rates:
    """The two rates; ``None`` where the ratio is unknown or has nothing to divide by."""
    if not delivery_known:
        return Rates(delivery_rate=None, acknowledgment_rate=None)
    return Rates(
        delivery_rate=delivered / sent if sent else None,
        acknowledgment_rate=acknowledged / delivered if delivered else None,
    )


def summarize(tallies: Iterable[Tally]) -> tuple[list[ChannelMetrics], Counters]:
    """Rows with their rates, and the totals, from the database's counts."""
    rows: list[ChannelMetrics] = []
    known_rows = known_sent = known_delivered = known_acknowledged = 0
    for tally in sorted(tallies, key=lambda t: (t.channel, t.provider)):
        delivered_on_send = tally.channel in DELIVERED_ON_SEND
        delivered = tally.sent if delivered_on_send else tally.delivered
        delivery_known = delivered_on_send or tally.delivery_receipts > 0
        row_rates = rates(
            sent=tally.sent,
            delivered=delivered,
            acknowledged=tally.acknowledged,
            delivery_known=delivery_known,
        )
        rows.append(
            ChannelMetrics(tally.channel, tally.provider, _counters(tally, delivered, row_rates))
        )
        if delivery_known:
            known_rows += 1
            known_sent += tally.sent
            known_delivered += delivered
            known_acknowledged += tally.acknowledged
    # Total rates only over the rows whose delivery is known: an SMTP row, whose delivered
    # count holds only the acknowledged messages, would drag the delivery rate down.
    total_rates = rates(
        sent=known_sent,
        delivered=known_delivered,
        acknowledged=known_acknowledged,
        delivery_known=known_rows > 0,
    )
    totals = Counters(
        sent=sum(r.counters.sent for r in rows),
        delivered=sum(r.counters.delivered for r in rows),
        failed=sum(r.counters.failed for r in rows),
        bounced=sum(r.counters.bounced for r in rows),
        complained=sum(r.counters.complained for r in rows),
        acknowledged=sum(r.counters.acknowledged for r in rows),
        attempts=sum(r.counters.attempts for r in rows),
        transient_failures=sum(r.counters.transient_failures for r in rows),
        **_rate_fields(total_rates),
    )
    return rows, totals


def _counters(tally: Tally, delivered: int, row_rates: Rates) -> Counters:
    return Counters(
        sent=tally.sent,
        delivered=delivered,
        failed=tally.failed,
        bounced=tally.bounced,
        complained=tally.complained,
        acknowledged=tally.acknowledged,
        attempts=tally.attempts,
        transient_failures=tally.transient_failures,
        **_rate_fields(row_rates),
    )


def _rate_fields(value: Rates) -> dict[str, float | None]:
    return {
        "delivery_rate": value.delivery_rate,
        "acknowledgment_rate": value.acknowledgment_rate,
    }


def _count(condition: ColumnElement[bool]) -> ColumnElement[int]:
    # SUM(CASE ...) rather than COUNT(*) FILTER: the same SQL on SQLite and PostgreSQL.
    return func.sum(case((condition, 1), else_=0))


def _within(
    column: ColumnElement[datetime], since: datetime, until: datetime
) -> ColumnElement[bool]:
    return and_(column >= since, column < until)


def delivery_report(conn: Connection, *, since: datetime, until: datetime) -> DeliveryReport:
    n = notifications.c
    status = n.status
    counted = or_(
        and_(status.in_(LEFT), _within(n.sent_at, since, until)),
        and_(status.in_(FAILED), _within(n.updated_at, since, until)),
    )
    messages = conn.execute(
        select(
            n.channel,
            n.provider,
            _count(status.in_(LEFT)).label("sent"),
            _count(status.in_(DELIVERED)).label("delivered"),
            _count(status.in_(FAILED)).label("failed"),
            _count(status == "bounced").label("bounced"),
            _count(status == "complained").label("complained"),
            _count(status == "acknowledged").label("acknowledged"),
            _count(or_(status == "delivered", n.delivered_at.is_not(None))).label("receipts"),
        )
        .where(counted)
        .group_by(n.channel, n.provider)
    ).all()
    a = delivery_attempts.c
    attempts = conn.execute(
        select(
            delivery_jobs.c.channel,
            a.provider,
            func.count().label("attempts"),
            _count(a.outcome == "transient").label("transient"),
        )
        .select_from(delivery_attempts.join(delivery_jobs, delivery_jobs.c.id == a.job_id))
        .where(_within(a.finished_at, since, until))
        .group_by(delivery_jobs.c.channel, a.provider)
    ).all()

    # Grouped on the raw column (not COALESCE(provider, 'none')): PostgreSQL would see the
    # selected and grouped expressions as different when each carries its own parameter.
    tallies: dict[tuple[str, str], Tally] = {}
    for row in messages:
        key = (row.channel, row.provider or NO_PROVIDER)
        tallies[key] = Tally(
            channel=key[0],
            provider=key[1],
            sent=int(row.sent),
            delivered=int(row.delivered),
            failed=int(row.failed),
            bounced=int(row.bounced),
            complained=int(row.complained),
            acknowledged=int(row.acknowledged),
            delivery_receipts=int(row.receipts),
        )
    for row in attempts:
        key = (row.channel, row.provider or NO_PROVIDER)
        tallies[key] = replace(
            tallies.get(key, Tally(channel=key[0], provider=key[1])),
            attempts=int(row.attempts),
            transient_failures=int(row.transient),
        )
    channels, totals = summarize(tallies.values())
    return DeliveryReport(since=since, until=until, channels=channels, totals=totals)
