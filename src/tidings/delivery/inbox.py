"""The in-app inbox: messages stored for a customer, and their acknowledgment."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from tidings.audit.chain import AuditEntry, append
from tidings.db.schema import inbox_messages, notifications


def list_inbox(
    conn: Connection, customer_id: str, *, unread_only: bool = False, limit: int = 50
) -> list[dict[str, Any]]:
    query = (
        select(inbox_messages)
        .where(inbox_messages.c.customer_id == customer_id)
        .order_by(inbox_messages.c.created_at.desc(), inbox_messages.c.id.desc())
        .limit(limit)
    )
    if unread_only:
        query = query.where(inbox_messages.c.read_at.is_(None))
    return [dict(row) for row in conn.execute(query).mappings()]


def mark_read(
    conn: Connection, customer_id: str, message_id: str, *, actor: str, now: datetime
) -> dict[str, Any] | None:
    """Record acknowledgment once; reading again keeps the first time."""
    row = (
        conn.execute(
            select(inbox_messages).where(
                inbox_messages.c.id == message_id, inbox_messages.c.customer_id == customer_id
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    if row["read_at"] is None:
        conn.execute(
            update(inbox_messages).where(inbox_messages.c.id == message_id).values(read_at=now)
        )
        conn.execute(
            update(notifications)
            .where(notifications.c.id == row["notification_id"])
            .values(status="acknowledged", updated_at=now)
        )
        append(
            conn,
            [AuditEntry(actor, "inbox.read", "notification", row["notification_id"], {})],
            at=now,
        )
        return {**dict(row), "read_at": now}
    return dict(row)
