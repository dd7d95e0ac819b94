"""Dead letters: messages that could not be delivered, listed and queued again on demand."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, or_, select, update

from tidings.audit.chain import AuditEntry, append
from tidings.db.schema import delivery_jobs, notifications


def dead_letters(conn: Connection, *, limit: int = 100) -> list[dict[str, Any]]:
    query = (
        select(
            delivery_jobs.c.id,
            delivery_jobs.c.notification_id,
            delivery_jobs.c.channel,
            delivery_jobs.c.attempts,
            delivery_jobs.c.last_error,
            delivery_jobs.c.updated_at,
            notifications.c.kind,
            notifications.c.recipient,
        )
        .join(notifications, notifications.c.id == delivery_jobs.c.notification_id)
        .where(delivery_jobs.c.status == "dead")
        .order_by(delivery_jobs.c.updated_at.desc())
        .limit(limit)
    )
    return [dict(row) for row in conn.execute(query).mappings()]


def replay_dead(
    conn: Connection, *, job_ids: Sequence[str] | None, actor: str, now: datetime
) -> list[str]:
    """Queue dead jobs again with a fresh attempt budget. ``None`` means every dead job."""
    query = select(delivery_jobs.c.id, delivery_jobs.c.notification_id).where(
        delivery_jobs.c.status == "dead"
    )
    if job_ids is not None:
        query = query.where(
            or_(
                delivery_jobs.c.id.in_(list(job_ids)),
                delivery_jobs.c.notification_id.in_(list(job_ids)),
            )
        )
    rows = conn.execute(query).all()
    if not rows:
        return []
    ids = [row.id for row in rows]
    conn.execute(
        update(delivery_jobs)
        .where(and_(delivery_jobs.c.id.in_(ids), delivery_jobs.c.status == "dead"))
        .values(status="queued", attempts=0, run_at=now, worker_id=None, updated_at=now)
    )
    conn.execute(
        update(notifications)
        .where(notifications.c.id.in_([row.notification_id for row in rows]))
        .values(status="queued", reason=None, updated_at=now)
    )
    append(
        conn,
        [
            AuditEntry(actor, "delivery.replayed", "notification", row.notification_id, {})
            for row in rows
        ],
        at=now,
    )
    return ids
