"""Work the engine schedules for itself (digests, back-in-stock waves), kept in the
database and claimed with a lease exactly like delivery jobs, so none is lost."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select, update

from tidings.db.claims import lock_due
from tidings.db.dialect import upsert
from tidings.db.schema import timers

PENDING, LEASED, DONE = "pending", "leased", "done"


@dataclass(frozen=True, slots=True)
class Timer:
    key: str
    kind: str
    payload: dict[str, Any]
    attempts: int


def schedule(
    conn: Connection,
    *,
    key: str,
    kind: str,
    due_at: datetime,
    payload: dict[str, Any],
    now: datetime,
) -> None:
    """Idempotent by key: scheduling the same thing twice keeps the first."""
    stmt = upsert(conn, timers).values(
        key=key,
        kind=kind,
        due_at=due_at,
        payload=payload,
        status=PENDING,
        attempts=0,
        updated_at=now,
    )
    conn.execute(stmt.on_conflict_do_nothing())


def claim(conn: Connection, *, now: datetime, limit: int, lease: timedelta) -> list[Timer]:
    due = (
        select(timers.c.key)
        .where(timers.c.status.in_((PENDING, LEASED)), timers.c.due_at <= now)
        .order_by(timers.c.due_at)
        .limit(limit)
    )
    keys = lock_due(conn, due)
    if not keys:
        return []
    rows = conn.execute(
        update(timers)
        .where(timers.c.key.in_(keys))
        .values(status=LEASED, due_at=now + lease, attempts=timers.c.attempts + 1, updated_at=now)
        .returning(timers.c.key, timers.c.kind, timers.c.payload, timers.c.attempts)
    ).all()
    return [Timer(row.key, row.kind, dict(row.payload), row.attempts) for row in rows]


def finish(conn: Connection, key: str, now: datetime) -> None:
    conn.execute(update(timers).where(timers.c.key == key).values(status=DONE, updated_at=now))
