"""Payment, recovery and refund figures over a window `[from, to)`, from stored facts.

Every figure counts facts created in the window: a payment by its `created_at`, a retry
workflow by when it was opened, a refund by when it was requested. What happened to them
since (recovered, approved, succeeded) is read as it stands now.

**payments**

- `first_time_successes`: captured payments that were not collected by a retry
  workflow (a recovered workflow records its payment under the workflow's `payment_id`).
- `failed`: retry workflows opened, one per failed payment.
- `success_rate` = first_time_successes / (first_time_successes + failed).

**recovery** (the workflows opened in the window)

- `recovered`, `exhausted`, `canceled`, and `open` (still failed, scheduled or retrying).
- `recovery_rate` = recovered / (recovered + exhausted). Canceled workflows are left
  out: they were stopped (order canceled, refund or dispute opened, a person's call),
  not lost to declines, and open ones have no outcome yet.
- `recovered_revenue`: the sum of `recovered_amount` per currency.
- `attempts_per_recovery`: the mean number of retries a recovered workflow made.

**refunds**

- `requested`: refunds that were neither rejected nor canceled, their count and volume
  per currency; `succeeded`: those among them that succeeded.
- `approval_time`: seconds from request to approval, over the refunds that needed at
  least one approver and got it; `time_to_refund`: seconds from request to success.
  Both count a refund that reached the milestone whatever happened after.

Money is never summed across currencies: volumes are `{currency: minor units}`. Rates,
means and medians are `null` when there is nothing to divide by.

**group_by**

- `gateway`: the payment's, the workflow's, the refunded payment's gateway.
- `day`: the UTC day (`YYYY-MM-DD`) of each fact's timestamp above.
- `decline_code`: the first decline of the workflow (attempt 0, the failure the source
  reported; `null` when unknown). Only recovery figures are grouped: successful payments
  and refunds have no decline code, so `payments` and `refunds` are `null` in these
  groups and given only overall.

Groups appear only for keys with at least one fact, in key order.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal, TypeVar

from sqlalchemy import ColumnElement, Connection, and_, func, literal_column, select

from tidings.billing.errors import BillingError
from tidings.db.schema import payment_retry_attempts as attempts
from tidings.db.schema import payment_retry_workflows as workflows
from tidings.db.schema import payments, refunds

GroupBy = Literal["gateway", "decline_code", "day"]
GROUPINGS: tuple[GroupBy, ...] = ("gateway", "decline_code", "day")
DEFAULT_WINDOW = timedelta(days=30)

# Refunds that were refused or withdrawn never moved money and are not counted as asked.
_NOT_REQUESTED = frozenset({"rejected", "canceled"})


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime


def window(start: datetime | None, end: datetime | None, *, now: datetime) -> Window:
    """The window asked for; without bounds, the 30 days before ``now``."""
    end = end if end is not None else now
    start = start if start is not None else end - DEFAULT_WINDOW
    if end <= start:
        raise BillingError(
            "invalid_window",
            "to (default: now) must be later than from; swap them, or move from earlier.",
            "to",
        )
    return Window(start, end)


# --- facts, as the database holds them ------------------------------------------------


@dataclass(frozen=True, slots=True)
class PaymentTally:
    """First-time successful payments of one gateway on one UTC day."""

    gateway: str
    day: date
    count: int


@dataclass(frozen=True, slots=True)
class WorkflowFact:
    gateway: str
    first_decline_code: str | None
    status: str
    attempts: int
    currency: str
    recovered_amount: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RefundFact:
    gateway: str
    status: str
    amount: int
    currency: str
    approvals_needed: int
    created_at: datetime
    approved_at: datetime | None
    succeeded_at: datetime | None


def _utc_day(conn: Connection, column: ColumnElement[datetime]) -> ColumnElement[str]:
    # Constants are inlined so the SELECT and GROUP BY expressions are the same text,
    # which PostgreSQL requires; it must also not depend on the session's time zone.
    if conn.dialect.name == "sqlite":
        # Stored as naive UTC text, 'YYYY-MM-DD HH:MM:SS.ffffff' (tidings.db.types).
        return func.substr(column, literal_column("1"), literal_column("10"))
    return func.to_char(
        func.timezone(literal_column("'UTC'"), column), literal_column("'YYYY-MM-DD'")
    )


def payment_tallies(conn: Connection, window: Window) -> list[PaymentTally]:
    """Counted in the database: successful payments far outnumber the other facts."""
    collected_by_retry = (
        select(workflows.c.id)
        .where(workflows.c.payment_id == payments.c.id, workflows.c.status == "recovered")
        .exists()
    )
    day = _utc_day(conn, payments.c.created_at)
    rows = conn.execute(
        select(payments.c.gateway, day.label("day"), func.count().label("n"))
        .where(
            payments.c.created_at >= window.start,
            payments.c.created_at < window.end,
            ~collected_by_retry,
        )
        .group_by(payments.c.gateway, day)
    )
    return [PaymentTally(row.gateway, date.fromisoformat(row.day), int(row.n)) for row in rows]


def workflow_facts(conn: Connection, window: Window) -> list[WorkflowFact]:
    first = and_(attempts.c.workflow_id == workflows.c.id, attempts.c.number == 0)
    rows = conn.execute(
        select(
            workflows.c.gateway,
            attempts.c.decline_code.label("first_decline_code"),
            workflows.c.status,
            workflows.c.attempts,
            workflows.c.currency,
            workflows.c.recovered_amount,
            workflows.c.created_at,
        )
        .select_from(workflows.outerjoin(attempts, first))
        .where(workflows.c.created_at >= window.start, workflows.c.created_at < window.end)
    )
    return [
        WorkflowFact(
            gateway=row.gateway,
            first_decline_code=row.first_decline_code,
            status=row.status,
            attempts=row.attempts,
            currency=row.currency,
            recovered_amount=row.recovered_amount,
            created_at=row.created_at,
        )
        for row in rows
    ]


def refund_facts(conn: Connection, window: Window) -> list[RefundFact]:
    rows = conn.execute(
        select(
            payments.c.gateway,
            refunds.c.status,
            refunds.c.amount,
            refunds.c.currency,
            refunds.c.approvals_needed,
            refunds.c.created_at,
            refunds.c.approved_at,
            refunds.c.succeeded_at,
        )
        .select_from(refunds.join(payments, payments.c.id == refunds.c.payment_id))
        .where(refunds.c.created_at >= window.start, refunds.c.created_at < window.end)
    )
    return [
        RefundFact(
            gateway=row.gateway,
            status=row.status,
            amount=row.amount,
            currency=row.currency,
            approvals_needed=row.approvals_needed,
            created_at=row.created_at,
            approved_at=row.approved_at,
            succeeded_at=row.succeeded_at,
        )
        for row in rows
    ]


# --- figures: values in, values out ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class PaymentFigures:
    first_time_successes: int
    failed: int
    success_rate: float | None


@dataclass(frozen=True, slots=True)
class RecoveryFigures:
    opened: int
    recovered: int
    exhausted: int
    canceled: int
    open: int
    recovery_rate: float | None
    recovered_revenue: dict[str, int]
    attempts_per_recovery: float | None


@dataclass(frozen=True, slots=True)
class Volume:
    count: int
    volume: dict[str, int]


@dataclass(frozen=True, slots=True)
class Duration:
    count: int
    median_seconds: float | None
    mean_seconds: float | None


@dataclass(frozen=True, slots=True)
class RefundFigures:
    requested: Volume
    succeeded: Volume
    approval_time: Duration
    time_to_refund: Duration


@dataclass(frozen=True, slots=True)
class Figures:
    payments: PaymentFigures
    recovery: RecoveryFigures
    refunds: RefundFigures


@dataclass(frozen=True, slots=True)
class Group:
    """One group's figures; a section not grouped by this key is ``None``."""

    key: str | None
    payments: PaymentFigures | None
    recovery: RecoveryFigures
    refunds: RefundFigures | None


@dataclass(frozen=True, slots=True)
class Report:
    window: Window
    group_by: GroupBy | None
    overall: Figures
    groups: list[Group]


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _per_currency(amounts: Iterable[tuple[str, int]]) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for currency, amount in amounts:
        totals[currency] += amount
    return dict(sorted(totals.items()))


def payment_figures(
    tallies: Iterable[PaymentTally], workflows: Sequence[WorkflowFact]
) -> PaymentFigures:
    successes = sum(tally.count for tally in tallies)
    failed = len(workflows)
    return PaymentFigures(successes, failed, _ratio(successes, successes + failed))


def recovery_figures(workflows: Sequence[WorkflowFact]) -> RecoveryFigures:
    recovered = [w for w in workflows if w.status == "recovered"]
    exhausted = sum(1 for w in workflows if w.status == "exhausted")
    canceled = sum(1 for w in workflows if w.status == "canceled")
    return RecoveryFigures(
        opened=len(workflows),
        recovered=len(recovered),
        exhausted=exhausted,
        canceled=canceled,
        open=len(workflows) - len(recovered) - exhausted - canceled,
        recovery_rate=_ratio(len(recovered), len(recovered) + exhausted),
        recovered_revenue=_per_currency((w.currency, w.recovered_amount or 0) for w in recovered),
        attempts_per_recovery=statistics.fmean(w.attempts for w in recovered)
        if recovered
        else None,
    )


def _duration(seconds: Sequence[float]) -> Duration:
    if not seconds:
        return Duration(0, None, None)
    return Duration(len(seconds), float(statistics.median(seconds)), statistics.fmean(seconds))


def refund_figures(refunds: Sequence[RefundFact]) -> RefundFigures:
    requested = [r for r in refunds if r.status not in _NOT_REQUESTED]
    succeeded = [r for r in requested if r.status == "succeeded"]
    approval = [
        (r.approved_at - r.created_at).total_seconds()
        for r in refunds
        if r.approvals_needed > 0 and r.approved_at is not None
    ]
    to_refund = [
        (r.succeeded_at - r.created_at).total_seconds()
        for r in refunds
        if r.succeeded_at is not None
    ]
    return RefundFigures(
        requested=Volume(len(requested), _per_currency((r.currency, r.amount) for r in requested)),
        succeeded=Volume(len(succeeded), _per_currency((r.currency, r.amount) for r in succeeded)),
        approval_time=_duration(approval),
        time_to_refund=_duration(to_refund),
    )


def _day(at: datetime) -> str:
    return at.astimezone(UTC).date().isoformat()


K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


def _bucket(items: Iterable[T], key: Callable[[T], K]) -> Mapping[K, list[T]]:
    buckets: dict[K, list[T]] = defaultdict(list)
    for item in items:
        buckets[key(item)].append(item)
    return buckets


def report(
    window: Window,
    group_by: GroupBy | None,
    tallies: Sequence[PaymentTally],
    workflows: Sequence[WorkflowFact],
    refunds: Sequence[RefundFact],
) -> Report:
    overall = Figures(
        payments=payment_figures(tallies, workflows),
        recovery=recovery_figures(workflows),
        refunds=refund_figures(refunds),
    )
    if group_by is None:
        return Report(window, None, overall, [])
    if group_by == "decline_code":
        by_code = _bucket(workflows, lambda w: w.first_decline_code)
        groups = [
            Group(code, None, recovery_figures(by_code[code]), None)
            for code in sorted(by_code, key=lambda code: (code is None, code or ""))
        ]
        return Report(window, group_by, overall, groups)

    tally_key: Callable[[PaymentTally], str]
    workflow_key: Callable[[WorkflowFact], str]
    refund_key: Callable[[RefundFact], str]
    if group_by == "gateway":
        tally_key, workflow_key, refund_key = (
            lambda t: t.gateway,
            lambda w: w.gateway,
            lambda r: r.gateway,
        )
    else:
        tally_key, workflow_key, refund_key = (
            lambda t: t.day.isoformat(),
            lambda w: _day(w.created_at),
            lambda r: _day(r.created_at),
        )
    by_tally = _bucket(tallies, tally_key)
    by_workflow = _bucket(workflows, workflow_key)
    by_refund = _bucket(refunds, refund_key)
    keys = sorted(set(by_tally) | set(by_workflow) | set(by_refund))
    groups = [
        Group(
            key,
            payment_figures(by_tally.get(key, []), by_workflow.get(key, [])),
            recovery_figures(by_workflow.get(key, [])),
            refund_figures(by_refund.get(key, [])),
        )
        for key in keys
    ]
    return Report(window, group_by, overall, groups)


def billing_report(conn: Connection, window: Window, group_by: GroupBy | None) -> Report:
    """Read the window's facts and compute its figures; one read transaction is enough."""
    return report(
        window,
        group_by,
        payment_tallies(conn, window),
        workflow_facts(conn, window),
        refund_facts(conn, window),
    )
