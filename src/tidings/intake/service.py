"""Accepting canonical events: store each once, plan its notifications, queue their jobs.

Everything happens in the caller's transaction, so an event, its notifications, their
delivery jobs and the audit entries commit together or not at all (the outbox).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, tuple_

from tidings.db.dialect import upsert
from tidings.db.ids import new_id
from tidings.db.notify import announce
from tidings.db.schema import billing_inbox, events
from tidings.engine.rules import RuleSet
from tidings.engine.service import Settings as EngineSettings
from tidings.engine.service import apply_events
from tidings.events.envelope import CanonicalEvent
from tidings.events.feeds import billing_wants


@dataclass(frozen=True, slots=True)
class Accepted:
    source: str
    id: str
    event_id: str
    duplicate: bool
    notifications: int


@dataclass(frozen=True, slots=True)
class DeliveryDefaults:
    max_attempts: int


def ingest(
    conn: Connection,
    batch: Sequence[CanonicalEvent],
    *,
    rules: RuleSet,
    delivery: DeliveryDefaults,
    now: datetime,
    actor: str,
) -> list[Accepted]:
    """Store new events and everything they cause; a redelivered event changes nothing."""
    unique: dict[tuple[str, str], CanonicalEvent] = {}
    for event in batch:
        unique.setdefault((event.source, event.id), event)
    keys = {key: new_id("evt") for key in unique}
    rows = [
        {
            "id": keys[key],
            "source": event.source,
            "ce_id": event.id,
            "type": event.type,
            "subject": event.subject,
            "time": event.time,
            "data": event.data,
            "order_id": event.order_id,
            "customer_id": (event.customer or {}).get("id"),
            "received_at": now,
        }
        for key, event in unique.items()
    ]
    inserted: set[str] = set()
    if rows:
        stmt = upsert(conn, events).on_conflict_do_nothing().returning(events.c.id)
        inserted = set(conn.scalars(stmt, rows).all()) if len(rows) > 1 else _one(conn, stmt, rows)

    fresh = [(keys[key], event) for key, event in unique.items() if keys[key] in inserted]
    for_billing = [
        {"event_id": event_id, "queued_at": now}
        for event_id, event in fresh
        if billing_wants(event.source, event.type)
    ]
    if for_billing:
        conn.execute(billing_inbox.insert(), for_billing)
    repeated = [key for key in unique if keys[key] not in inserted]
    if repeated:
        # A redelivery is answered with the id the event was first stored under.
        stored = conn.execute(
            select(events.c.id, events.c.source, events.c.ce_id).where(
                tuple_(events.c.source, events.c.ce_id).in_(repeated)
            )
        ).all()
        keys.update({(row.source, row.ce_id): row.id for row in stored})
    counts = apply_events(conn, fresh, EngineSettings(rules, delivery.max_attempts, now, actor))
    if fresh:
        announce(conn)
    # The first copy of a new event is accepted; any other copy, in this batch or
    # stored before, is a duplicate.
    seen = set(repeated)
    results = []
    for event in batch:
        key = (event.source, event.id)
        results.append(
            Accepted(
                source=event.source,
                id=event.id,
                event_id=keys[key],
                duplicate=key in seen,
                notifications=0 if key in seen else counts.get(keys[key], 0),
            )
        )
        seen.add(key)
    return results


def _one(conn: Connection, stmt: Any, rows: list[dict[str, Any]]) -> set[str]:
    value = conn.execute(stmt, rows[0]).scalar()
    return {value} if value is not None else set()
