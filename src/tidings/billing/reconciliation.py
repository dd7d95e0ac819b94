"""What the ledger says a gateway did on one day, against what the gateway reports.

The ledger side: every journal transaction of that UTC day that moved money through
the gateway's clearing account for a payment of that gateway — captures and collected
retries (money in), refunds that succeeded (money out) and refunds reversed after a
late failure (money back). The gateway side: ``Gateway.activity(day)``.

They are matched on what both know: the gateway's payment id for money in, our refund id
(the refund's idempotency key at the gateway) for refunds. A difference is one of:

- ``missing_at_gateway``: booked here, not reported there (a capture recorded from a
  webhook that the gateway later dropped, a refund booked as succeeded that never left);
- ``missing_in_ledger``: reported there, not booked here (a webhook that never arrived);
- ``amount_differs`` / ``currency_differs``: both know it, with other values;
- ``failed_at_gateway``: a refund booked as succeeded that the gateway reports failed,
  not yet reversed here (the reconciler reverses it on its next pass).

``compare`` is pure: values in, a report out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from sqlalchemy import Connection, Select, and_, select

from tidings.billing.gateways.base import Direction, Movement
from tidings.db.schema import (
    ledger_lines,
    ledger_transactions,
    payment_retry_workflows,
    payments,
    refunds,
)

Issue = Literal[
    "missing_at_gateway",
    "missing_in_ledger",
    "amount_differs",
    "currency_differs",
    "failed_at_gateway",
]


@dataclass(frozen=True, slots=True)
class Booked:
    """One movement through the clearing account, as the ledger has it."""

    direction: Direction
    reference: str
    amount: int
    currency: str
    transaction_id: str


# What the gateway reports: a refund the gateway failed has ``failed`` set.
Reported = Movement


@dataclass(frozen=True, slots=True)
class Difference:
    issue: Issue
    direction: Direction
    reference: str
    ledger_amount: int | None
    gateway_amount: int | None
    currency: str
    transaction_id: str | None


@dataclass(frozen=True, slots=True)
class Report:
    matched: int
    differences: list[Difference] = field(default_factory=list)

    @property
    def reconciled(self) -> bool:
        return not self.differences


def compare(booked: Iterable[Booked], reported: Iterable[Reported]) -> Report:
    """Match both sides on (direction, reference); amounts add up per reference, since a
    reversal and its refund, or two partial captures, can share one."""
    ours: dict[tuple[Direction, str], list[Booked]] = {}
    for b in booked:
        ours.setdefault((b.direction, b.reference), []).append(b)
    theirs: dict[tuple[Direction, str], list[Reported]] = {}
    for r in reported:
        theirs.setdefault((r.direction, r.reference), []).append(r)
    differences: list[Difference] = []
    matched = 0
    for key in sorted(set(ours) | set(theirs)):
        mine, gateway = ours.get(key, []), theirs.get(key, [])
        found = _issue(mine, gateway)
        if found is None:
            matched += 1
            continue
        issue, ledger_amount, gateway_amount = found
        differences.append(
            Difference(
                issue=issue,
                direction=key[0],
                reference=key[1],
                ledger_amount=ledger_amount,
                gateway_amount=gateway_amount,
                currency=(mine or gateway)[0].currency,
                transaction_id=mine[0].transaction_id if mine else None,
            )
        )
    return Report(matched=matched, differences=differences)


def _issue(
    mine: Sequence[Booked], gateway: Sequence[Reported]
) -> tuple[Issue, int | None, int | None] | None:
    settled = [r for r in gateway if not r.failed]
    booked_amount = sum(b.amount for b in mine)
    reported_amount = sum(r.amount for r in settled)
    if mine and not settled:
        if not booked_amount:
            return None  # booked and reversed here, failed there: in step
        if gateway:
            return "failed_at_gateway", booked_amount, 0
        return "missing_at_gateway", booked_amount, None
    if not mine:
        # A refund that failed there and was never booked as paid here is in step.
        return ("missing_in_ledger", None, reported_amount) if settled else None
    if {b.currency for b in mine} != {r.currency for r in settled}:
        return "currency_differs", booked_amount, reported_amount
    if booked_amount != reported_amount:
        return "amount_differs", booked_amount, reported_amount
    return None


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return start, start + timedelta(days=1)


def _through_clearing(day: date) -> Select[Any]:
    start, end = day_bounds(day)
    return (
        select(
            ledger_transactions.c.id,
            ledger_transactions.c.kind,
            ledger_lines.c.amount,
            ledger_lines.c.currency,
        )
        .join(ledger_lines, ledger_lines.c.transaction_id == ledger_transactions.c.id)
        .where(
            ledger_lines.c.account.like("%:gateway_clearing"),
            ledger_transactions.c.at >= start,
            ledger_transactions.c.at < end,
        )
    )


def captures_booked(conn: Connection, *, gateway: str, day: date) -> list[Booked]:
    """Captures recorded from the gateway's reports (not collected retries) on ``day``."""
    query = (
        _through_clearing(day)
        .add_columns(payments.c.gateway_payment_id, payments.c.id.label("pid"))
        .join(
            payments,
            and_(payments.c.id == ledger_transactions.c.reference, payments.c.gateway == gateway),
        )
        .where(ledger_transactions.c.kind == "capture")
    )
    return [
        Booked("in", row.gateway_payment_id or row.pid, int(row.amount), row.currency, row.id)
        for row in conn.execute(query)
    ]


def booked_on(conn: Connection, *, gateway: str, day: date) -> list[Booked]:
    """The ledger's movements through clearing for ``gateway``'s payments on ``day``."""
    collected = (
        _through_clearing(day)
        .add_columns(payment_retry_workflows.c.payment_id.label("pid"))
        .join(
            payment_retry_workflows,
            and_(
                payment_retry_workflows.c.id == ledger_transactions.c.reference,
                payment_retry_workflows.c.gateway == gateway,
            ),
        )
        .where(ledger_transactions.c.kind == "payment_collected")
    )
    refunded = (
        _through_clearing(day)
        .add_columns(refunds.c.id.label("rid"))
        .join(refunds, refunds.c.id == ledger_transactions.c.reference)
        .join(payments, and_(payments.c.id == refunds.c.payment_id, payments.c.gateway == gateway))
        .where(ledger_transactions.c.kind.in_(("refund_succeeded", "refund_reversed")))
    )
    found = captures_booked(conn, gateway=gateway, day=day)
    for row in conn.execute(collected):
        found.append(Booked("in", row.pid, int(row.amount), row.currency, row.id))
    for row in conn.execute(refunded):
        # Out of clearing is a credit: the refund's amount is its negation.
        found.append(Booked("out", row.rid, -int(row.amount), row.currency, row.id))
    return found


def reconcile_day(
    conn: Connection, *, gateway: str, day: date, reported: Sequence[Reported]
) -> Report:
    return compare(booked_on(conn, gateway=gateway, day=day), reported)
