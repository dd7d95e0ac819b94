"""An order's timeline: every event received and every message planned, sent, held,
superseded or suppressed, with the rule and the reason."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy import Connection, or_, select

from tidings.api.auth import scope
from tidings.api.keys import Principal
from tidings.api.problems import ApiProblem
from tidings.db.engine import read_transaction
from tidings.db.schema import events, notifications, orders

router = APIRouter(tags=["timeline"])


class TimelineEntry(BaseModel):
    at: datetime
    entry: Literal["event", "notification"]
    # events
    type: str | None = None
    source: str | None = None
    event_id: str | None = None
    status: str | None = None
    # notifications
    notification_id: str | None = None
    kind: str | None = None
    channel: str | None = None
    rule: str | None = None
    reason: str | None = None
    scheduled_for: datetime | None = None
    sent_at: datetime | None = None


class Timeline(BaseModel):
    order_id: str
    order_number: str | None
    customer_id: str | None
    entries: list[TimelineEntry]


def order_timeline(conn: Connection, order_id: str) -> Timeline | None:
    order = conn.execute(select(orders).where(orders.c.id == order_id)).mappings().first()
    sent = (
        conn.execute(select(notifications).where(notifications.c.order_id == order_id))
        .mappings()
        .all()
    )
    event_ids = {row["event_id"] for row in sent}
    received = (
        conn.execute(
            select(events).where(or_(events.c.order_id == order_id, events.c.id.in_(event_ids)))
        )
        .mappings()
        .all()
    )
    if order is None and not received:
        return None
    entries = [_event_entry(row) for row in received] + [_notification_entry(row) for row in sent]
    entries.sort(key=lambda e: (e.at, e.entry != "event"))
    return Timeline(
        order_id=order_id,
        order_number=order["number"] if order else None,
        customer_id=order["customer_id"] if order else None,
        entries=entries,
    )


def _event_entry(row: Any) -> TimelineEntry:
    data = row["data"] or {}
    return TimelineEntry(
        at=row["received_at"],
        entry="event",
        type=row["type"],
        source=row["source"],
        event_id=row["ce_id"],
        status=data.get("status"),
    )


def _notification_entry(row: Any) -> TimelineEntry:
    return TimelineEntry(
        at=row["created_at"],
        entry="notification",
        notification_id=row["id"],
        kind=row["kind"],
        channel=row["channel"],
        status=row["status"],
        rule=row["rule_id"],
        reason=row["reason"],
        scheduled_for=row["scheduled_for"],
        sent_at=row["sent_at"],
    )


@router.get("/api/orders/{order_id}/timeline", response_model=Timeline)
def get_timeline(order_id: str, request: Request, _: Principal = scope("events:read")) -> Timeline:
    with read_transaction(request.app.state.runtime.engine) as conn:
        timeline = order_timeline(conn, order_id)
    if timeline is None:
        raise ApiProblem(404, "order_not_found", f"Nothing is known about order {order_id}.")
    return timeline
