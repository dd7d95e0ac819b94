"""The reject log: every payload that could not be accepted, kept with its reason."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from tidings.db.ids import new_id
from tidings.db.schema import rejects

OPEN = "open"
REPLAYED = "replayed"


def record(
    conn: Connection,
    *,
    channel: str,
    code: str,
    detail: str,
    field: str | None,
    payload: str,
    content_type: str | None,
    headers: dict[str, str],
    source: str | None,
    now: datetime,
) -> str:
    reject_id = new_id("rej")
    conn.execute(
        rejects.insert().values(
            id=reject_id,
            source=source,
            channel=channel,
            code=code,
            detail=detail,
            field=field,
            content_type=content_type,
            headers=headers,
            payload=payload,
            status=OPEN,
            received_at=now,
            replayed_at=None,
        )
    )
    return reject_id


def list_rejects(
    conn: Connection, *, status: str | None = OPEN, limit: int = 100
) -> list[dict[str, Any]]:
    query = select(rejects).order_by(rejects.c.received_at.desc()).limit(limit)
    if status:
        query = query.where(rejects.c.status == status)
    return [dict(row) for row in conn.execute(query).mappings()]


def get_reject(conn: Connection, reject_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(rejects).where(rejects.c.id == reject_id)).mappings().first()
    return dict(row) if row else None


def mark_replayed(conn: Connection, reject_id: str, now: datetime) -> None:
    conn.execute(
        update(rejects).where(rejects.c.id == reject_id).values(status=REPLAYED, replayed_at=now)
    )


def update_reason(conn: Connection, reject_id: str, *, code: str, detail: str) -> None:
    conn.execute(update(rejects).where(rejects.c.id == reject_id).values(code=code, detail=detail))
