"""Which order a return belongs to, for sources whose later return events omit it.

Shopify's ``returns/request`` names the order, ``returns/decline`` does not. The canonical
``return.status_changed`` needs an ``order_id``, so a source that does not know it files
the event under ``return:<return id>`` (``placeholder_order_id``); the engine then puts
it under the order an earlier event of the same return, from the same source, named.
Keyed per source: return ids of two systems may collide, and a message about someone
else's return must never be sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from tidings.db.dialect import upsert
from tidings.db.schema import events, returns
from tidings.engine.planning import SUPPRESSED, PlannedNotification, key
from tidings.events.envelope import CanonicalEvent

RETURN_EVENT = "return.status_changed"
_ID_LENGTH = 256  # returns.id


def placeholder_order_id(return_id: str) -> str:
    """What a source that does not know a return's order puts in ``order_id``."""
    return f"return:{return_id}"


def names_order(data: Mapping[str, Any]) -> bool:
    order_id = data.get("order_id")
    return bool(order_id) and order_id != placeholder_order_id(str(data.get("return_id")))


def unknown_order_reason(return_id: object) -> str:
    return f"return {return_id} names no order and none is known"


def explain_unknown_order(
    event: CanonicalEvent, planned: Sequence[PlannedNotification]
) -> list[PlannedNotification]:
    """Nobody to tell because the return's order is unknown: say that, not only that
    there is no recipient, so the operator knows which fact is missing."""
    if event.type != RETURN_EVENT or names_order(event.data):
        return list(planned)
    reason = unknown_order_reason(event.data.get("return_id"))
    return [
        replace(p, reason=reason) if p.status == SUPPRESSED and p.recipient is None else p
        for p in planned
    ]


def _return_key(source: str, return_id: str) -> str:
    # A CloudEvents source is a URI-reference, which has no space: the pair reads back.
    readable = f"{source} {return_id}"
    return readable if len(readable) <= _ID_LENGTH else key(source, return_id)


def with_order(
    conn: Connection, event_id: str, event: CanonicalEvent, now: datetime
) -> CanonicalEvent:
    """Remember the order a return event names; give one that names none the order
    remembered for its return (filing the stored event under it too). Other events, and
    returns whose order is not known, come back unchanged."""
    if event.type != RETURN_EVENT:
        return event
    return_key = _return_key(event.source, str(event.data["return_id"]))
    status = str(event.data.get("status"))
    if names_order(event.data):
        _remember(conn, return_key, str(event.data["order_id"]), status, now)
        return event
    order_id = conn.execute(
        select(returns.c.order_id).where(returns.c.id == return_key)
    ).scalar_one_or_none()
    if order_id is None:
        return event
    _remember(conn, return_key, order_id, status, now)
    conn.execute(update(events).where(events.c.id == event_id).values(order_id=order_id))
    return CanonicalEvent(
        event.source,
        event.id,
        event.type,
        f"order/{order_id}",
        event.time,
        {**event.data, "order_id": order_id},
    )


def _remember(conn: Connection, return_key: str, order_id: str, status: str, now: datetime) -> None:
    stmt = upsert(conn, returns).values(
        id=return_key, order_id=order_id, status=status, updated_at=now
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[returns.c.id],
            set_={c: stmt.excluded[c] for c in ("order_id", "status", "updated_at")},
        )
    )
