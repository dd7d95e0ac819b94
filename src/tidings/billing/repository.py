"""Billing queries: payments, refunds and the atomic reservation of refundable money."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, and_, or_, select, update

from tidings.db.claims import lock_due
from tidings.db.schema import payments, refunds


@dataclass(frozen=True, slots=True)
class Payment:
    id: str
    store: str
    order_id: str | None
    customer_id: str | None
    gateway: str
    gateway_payment_id: str | None
    currency: str
    captured: int
    refunded: int
    method: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def refundable(self) -> int:
        return self.captured - self.refunded


@dataclass(frozen=True, slots=True)
class Refund:
    id: str
    payment_id: str
    amount: int
    currency: str
    status: str
    reason_code: str
    reason: str | None
    lines: list[dict[str, Any]] | None
    idempotency_key: str
    requested_by: str
    approvals: list[dict[str, Any]]
    approvals_needed: int
    decided_reason: str | None
    gateway_refund_id: str | None
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime
    approved_at: datetime | None = None
    authorized_at: datetime | None = None
    succeeded_at: datetime | None = None


def _payment(row: RowMapping) -> Payment:
    return Payment(**{field.name: row[field.name] for field in fields(Payment)})


def _refund(row: RowMapping) -> Refund:
    values = {field.name: row[field.name] for field in fields(Refund)}
    values["approvals"] = list(values["approvals"] or [])
    return Refund(**values)


def insert_payment(conn: Connection, values: Mapping[str, Any]) -> None:
    conn.execute(payments.insert().values(**values))


def get_payment(conn: Connection, payment_id: str) -> Payment | None:
    row = conn.execute(select(payments).where(payments.c.id == payment_id)).mappings().first()
    return _payment(row) if row is not None else None


def reserve_refund_amount(conn: Connection, payment_id: str, amount: int, now: datetime) -> bool:
    """Add ``amount`` to what the payment's refunds hold, if it stays within the capture.

    One statement, so the check and the write cannot be separated (DESIGN.md invariant
    5): PostgreSQL locks the row and re-evaluates the condition on the newest version
    after a concurrent writer commits; SQLite runs one writer at a time. The table's
    CHECK (refunded <= captured) is the backstop.
    """
    result = conn.execute(
        update(payments)
        .where(payments.c.id == payment_id)
        .where(payments.c.refunded + amount <= payments.c.captured)
        .values(refunded=payments.c.refunded + amount, updated_at=now)
    )
    return result.rowcount == 1


def release_refund_amount(conn: Connection, payment_id: str, amount: int, now: datetime) -> bool:
    """Give back what a refund held once it ends without paying out."""
    result = conn.execute(
        update(payments)
        .where(payments.c.id == payment_id)
        .where(payments.c.refunded >= amount)
        .values(refunded=payments.c.refunded - amount, updated_at=now)
    )
    return result.rowcount == 1


def insert_refund(conn: Connection, values: Mapping[str, Any]) -> None:
    conn.execute(refunds.insert().values(**values))


def get_refund(conn: Connection, refund_id: str, *, for_update: bool = False) -> Refund | None:
    """One refund; ``for_update`` locks its row until commit so moves do not interleave."""
    query = select(refunds).where(refunds.c.id == refund_id)
    if for_update:
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    return _refund(row) if row is not None else None


def find_refund_by_key(conn: Connection, requested_by: str, idempotency_key: str) -> Refund | None:
    row = (
        conn.execute(
            select(refunds).where(
                refunds.c.requested_by == requested_by,
                refunds.c.idempotency_key == idempotency_key,
            )
        )
        .mappings()
        .first()
    )
    return _refund(row) if row is not None else None


def update_refund(conn: Connection, refund_id: str, expected_status: str, **values: Any) -> None:
    """Write a move; the status guard turns a lost race into an error, not a double move."""
    result = conn.execute(
        update(refunds)
        .where(refunds.c.id == refund_id, refunds.c.status == expected_status)
        .values(**values)
    )
    if result.rowcount != 1:
        raise RuntimeError(f"refund {refund_id} changed state while being updated")


def refunds_for_payment(conn: Connection, payment_id: str) -> list[Refund]:
    rows = conn.execute(
        select(refunds).where(refunds.c.payment_id == payment_id).order_by(refunds.c.id)
    ).mappings()
    return [_refund(row) for row in rows]


def list_refunds(
    conn: Connection,
    *,
    status: str | None = None,
    payment_id: str | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    after: str | None = None,
    limit: int = 50,
) -> list[Refund]:
    """Refunds newest first, created in ``[created_from, created_to)`` when given; ``after``
    is the last id of the previous page (ids sort by time)."""
    query = select(refunds).order_by(refunds.c.id.desc()).limit(limit)
    if created_from is not None:
        query = query.where(refunds.c.created_at >= created_from)
    if created_to is not None:
        query = query.where(refunds.c.created_at < created_to)
    if status is not None:
        query = query.where(refunds.c.status == status)
    if payment_id is not None:
        query = query.where(refunds.c.payment_id == payment_id)
    if after is not None:
        query = query.where(refunds.c.id < after)
    return [_refund(row) for row in conn.execute(query).mappings()]


def any_refund_in(conn: Connection, status: str) -> bool:
    """A read, so an idle worker tick never takes SQLite's write lock for nothing."""
    return (
        conn.execute(select(refunds.c.id).where(refunds.c.status == status).limit(1)).first()
        is not None
    )


def claim_refunds(
    conn: Connection, *, status: str, new_status: str, now: datetime, limit: int
) -> list[Refund]:
    """Move up to ``limit`` refunds from ``status`` to ``new_status``, oldest change first,
    and return them as moved.

    Concurrent workers take different refunds without waiting (db/claims.py); the status
    guard in the UPDATE itself means a refund is moved once.
    """
    due = (
        select(refunds.c.id)
        .where(refunds.c.status == status)
        .order_by(refunds.c.updated_at, refunds.c.id)
        .limit(limit)
    )
    ids = lock_due(conn, due)
    if not ids:
        return []
    rows = (
        conn.execute(
            update(refunds)
            .where(refunds.c.id.in_(ids), refunds.c.status == status)
            .values(status=new_status, updated_at=now)
            .returning(*refunds.c)
        )
        .mappings()
        .all()
    )
    return sorted((_refund(row) for row in rows), key=lambda refund: refund.id)


def refunds_to_reconcile(
    conn: Connection,
    *,
    in_flight: tuple[str, ...],
    settled: str,
    changed_before: datetime,
    settled_since: datetime,
    limit: int,
) -> list[Refund]:
    """Refunds in an ``in_flight`` state, and ``settled`` ones that changed since
    ``settled_since``, all last changed before ``changed_before``; oldest change first."""
    query = (
        select(refunds)
        .where(
            refunds.c.updated_at <= changed_before,
            or_(
                refunds.c.status.in_(in_flight),
                and_(refunds.c.status == settled, refunds.c.updated_at >= settled_since),
            ),
        )
        .order_by(refunds.c.updated_at, refunds.c.id)
        .limit(limit)
    )
    return [_refund(row) for row in conn.execute(query).mappings()]
