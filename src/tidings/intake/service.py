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

from tidings.audit.chain import AuditEntry, append
from tidings.db.dialect import upsert
from tidings.db.ids import new_id
from tidings.db.schema import delivery_jobs, events, notifications
from tidings.engine import repository
from tidings.engine.planning import QUEUED, PlannedNotification, plan
from tidings.engine.rules import RuleSet
from tidings.events.envelope import CanonicalEvent


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
    repeated = [key for key in unique if keys[key] not in inserted]
    if repeated:
        # A redelivery is answered with the id the event was first stored under.
        stored = conn.execute(
            select(events.c.id, events.c.source, events.c.ce_id).where(
                tuple_(events.c.source, events.c.ce_id).in_(repeated)
            )
        ).all()
        keys.update({(row.source, row.ce_id): row.id for row in stored})
    counts = _apply(conn, fresh, rules=rules, delivery=delivery, now=now, actor=actor)
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


def _apply(
    conn: Connection,
    fresh: list[tuple[str, CanonicalEvent]],
    *,
    rules: RuleSet,
    delivery: DeliveryDefaults,
    now: datetime,
    actor: str,
) -> dict[str, int]:
    if not fresh:
        return {}
    profiles: dict[str, dict[str, Any]] = {}
    order_rows: list[dict[str, Any]] = []
    for _, event in fresh:
        if event.customer:
            profiles[event.customer["id"]] = event.customer
        if event.type == "order.placed" and event.customer:
            order_rows.append(
                {
                    "id": event.data["order_id"],
                    "number": event.data.get("order_number"),
                    "customer_id": event.customer["id"],
                    "locale": event.customer.get("locale"),
                    "currency": event.data.get("currency"),
                    "created_at": now,
                }
            )
    repository.upsert_customers(conn, profiles.values(), now)
    repository.upsert_orders(conn, order_rows)

    known_orders = repository.orders_by_id(
        conn, [e.order_id for _, e in fresh if e.order_id and rules.for_type(e.type)]
    )
    wanted = {
        event_id: (event.customer or {}).get("id")
        or (known_orders.get(event.order_id or "") or {}).get("customer_id")
        for event_id, event in fresh
    }
    recipients = repository.recipients_by_id(conn, [c for c in wanted.values() if c])

    audit = [
        AuditEntry(actor, "event.accepted", "event", event_id, {"type": e.type, "id": e.id})
        for event_id, e in fresh
    ]
    planned: list[tuple[str, CanonicalEvent, PlannedNotification]] = []
    for event_id, event in fresh:
        customer_id = wanted[event_id]
        recipient = recipients.get(customer_id) if customer_id else None
        order = known_orders.get(event.order_id or "")
        planned.extend((event_id, event, p) for p in plan(event, recipient, rules, order=order))
    counts: dict[str, int] = {}
    if not planned:
        append(conn, audit, at=now)
        return counts

    notification_rows: list[dict[str, Any]] = []
    for event_id, event, p in planned:
        notification_rows.append(
            {
                "id": new_id("ntf"),
                "event_id": event_id,
                "rule_id": p.rule.id,
                "kind": p.rule.kind,
                "category": p.rule.category,
                "priority": p.rule.lane.name,
                "channel": p.channel,
                "customer_id": p.recipient.customer_id if p.recipient else None,
                "order_id": event.order_id,
                "recipient": p.address,
                "locale": p.recipient.locale if p.recipient else None,
                "time_zone": p.recipient.time_zone if p.recipient else None,
                "status": p.status,
                "reason": p.reason,
                "dedupe_key": p.dedupe_key,
                "rendered": None,
                "created_at": now,
                "updated_at": now,
                "sent_at": None,
            }
        )
    stmt = upsert(conn, notifications).on_conflict_do_nothing().returning(notifications.c.id)
    stored = (
        set(conn.scalars(stmt, notification_rows).all())
        if len(notification_rows) > 1
        else _one(conn, stmt, notification_rows)
    )
    job_rows = []
    for row, (event_id, _, p) in zip(notification_rows, planned, strict=True):
        if row["id"] not in stored:
            continue
        counts[event_id] = counts.get(event_id, 0) + 1
        detail = {"rule": p.rule.id, "kind": p.rule.kind, "channel": p.channel}
        if p.status == QUEUED:
            audit.append(
                AuditEntry(actor, "notification.planned", "notification", str(row["id"]), detail)
            )
            job_rows.append(
                {
                    "id": new_id("job"),
                    "notification_id": row["id"],
                    "channel": p.channel,
                    "lane": int(p.rule.lane),
                    "status": "queued",
                    "run_at": now,
                    "attempts": 0,
                    "max_attempts": delivery.max_attempts,
                    "worker_id": None,
                    "last_error": None,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        else:
            detail["reason"] = p.reason or ""
            audit.append(
                AuditEntry(actor, "notification.suppressed", "notification", str(row["id"]), detail)
            )
    if job_rows:
        conn.execute(delivery_jobs.insert(), job_rows)
    append(conn, audit, at=now)
    return counts
