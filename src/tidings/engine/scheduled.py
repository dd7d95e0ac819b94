"""What the engine does when its own timers come due: send a digest, run a restock wave."""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.exc import SQLAlchemyError

from tidings.audit.chain import AuditEntry, append
from tidings.db.dialect import upsert
from tidings.db.ids import new_id
from tidings.db.schema import events, notifications, stock_subscriptions
from tidings.db.types import utcnow
from tidings.engine import inventory, repository, timers
from tidings.engine.planning import Facts, plan
from tidings.engine.rules import Lane, RuleSet
from tidings.engine.service import NotificationWriter, Settings
from tidings.events.envelope import CanonicalEvent

log = logging.getLogger(__name__)

DIGEST_KIND = "inventory_digest"


def run(conn: Connection, timer: timers.Timer, settings: Settings) -> None:
    """Run one due timer inside the caller's transaction, then mark it done."""
    handler = {"digest": run_digest, "back_in_stock_wave": run_wave}.get(timer.kind)
    if handler is not None:
        handler(conn, timer.payload, settings)
    timers.finish(conn, timer.key, settings.now)


def run_digest(conn: Connection, payload: dict[str, Any], settings: Settings) -> None:
    """Fold a recipient's held digest items into one message (or send a lone item as is)."""
    items = (
        conn.execute(
            select(notifications)
            .where(
                notifications.c.digest_key == payload["digest_key"],
                notifications.c.status == "held",
            )
            .order_by(notifications.c.created_at)
        )
        .mappings()
        .all()
    )
    if not items:
        return
    writer = NotificationWriter(conn, settings)
    now = settings.now
    if len(items) == 1:
        item = items[0]
        conn.execute(
            update(notifications)
            .where(notifications.c.id == item["id"])
            .values(status="queued", updated_at=now)
        )
        lane = int(Lane[item["priority"]])
        writer.jobs[item["id"]] = writer.job(item["id"], item["channel"], lane, now)
        writer.flush()
        return
    first = items[0]
    digest_id = new_id("ntf")
    writer.rows.append(
        {
            **{
                k: first[k]
                for k in (
                    "event_id",
                    "category",
                    "channel",
                    "customer_id",
                    "recipient",
                    "locale",
                    "time_zone",
                )
            },
            "id": digest_id,
            "rule_id": "digest",
            "kind": DIGEST_KIND,
            "priority": "bulk",
            "order_id": None,
            "status": "queued",
            "reason": None,
            "dedupe_key": f"digest|{payload['digest_key']}",
            "rendered": None,
            "group_key": None,
            "digest_key": None,
            "parent_id": None,
            "scheduled_for": None,
            "extra": None,
            "created_at": now,
            "updated_at": now,
            "sent_at": None,
        }
    )
    writer.jobs[digest_id] = writer.job(digest_id, first["channel"], 2, now)
    conn.execute(
        update(notifications)
        .where(notifications.c.id.in_([item["id"] for item in items]))
        .values(
            status="merged",
            parent_id=digest_id,
            reason="merged into the daily digest",
            updated_at=now,
        )
    )
    writer.audit.append(
        AuditEntry(
            settings.actor,
            "notification.digest",
            "notification",
            digest_id,
            {"items": [item["id"] for item in items]},
        )
    )
    writer.flush()


def run_wave(conn: Connection, payload: dict[str, Any], settings: Settings) -> None:
    """Tell the next subscribers, never more than the wave multiple of the units left."""
    sku, number = str(payload["sku"]), int(payload["wave"])
    store = settings.rules.policy
    left = inventory.available(conn, sku)
    writer = NotificationWriter(conn, settings)
    if left <= 0:
        writer.audit.append(
            AuditEntry(
                settings.actor,
                "wave.stopped",
                "sku",
                sku,
                {"wave": number, "reason": "out of stock again"},
            )
        )
        writer.flush()
        return
    size = math.floor(store.back_in_stock_wave_multiple * left)
    waiting = conn.execute(
        select(stock_subscriptions.c.id, stock_subscriptions.c.customer_id)
        .where(stock_subscriptions.c.sku == sku, stock_subscriptions.c.notified_at.is_(None))
        .order_by(stock_subscriptions.c.created_at, stock_subscriptions.c.id)
        .limit(size + 1)
    ).all()
    wave, more = waiting[:size], len(waiting) > size
    row = conn.execute(select(events).where(events.c.id == payload["event_id"])).mappings().one()
    event = CanonicalEvent(
        row["source"],
        row["ce_id"],
        row["type"],
        row["subject"],
        row["time"],
        {**row["data"], "available": left},
    )
    recipients = repository.recipients_by_id(conn, [w.customer_id for w in wave])
    product = {
        "sku": sku,
        "name": event.data.get("name") or inventory.product_name(conn, sku),
        "url": event.data.get("url"),
    }
    for subscriber in wave:
        recipient = recipients.get(subscriber.customer_id)
        facts = Facts(now=settings.now, extra={subscriber.customer_id: {"product": product}})
        writer.add(row["id"], event, plan(event, [recipient], settings.rules, facts))
    if wave:
        conn.execute(
            update(stock_subscriptions)
            .where(stock_subscriptions.c.id.in_([w.id for w in wave]))
            .values(notified_at=settings.now)
        )
    writer.audit.append(
        AuditEntry(
            settings.actor,
            "wave.sent",
            "sku",
            sku,
            {"wave": number, "available": left, "notified": len(wave)},
        )
    )
    writer.flush()
    if more:
        timers.schedule(
            conn,
            key=f"wave:{payload['event_id']}:{number + 1}",
            kind="back_in_stock_wave",
            due_at=settings.now + store.back_in_stock_wave_interval,
            payload={**payload, "wave": number + 1},
            now=settings.now,
        )


def subscribe(conn: Connection, *, sku: str, customer_id: str, now: datetime) -> str | None:
    """Subscribe a customer to a SKU's return; None if already subscribed."""
    subscription_id = new_id("sub")
    stmt = upsert(conn, stock_subscriptions).values(
        id=subscription_id, sku=sku, customer_id=customer_id, created_at=now, notified_at=None
    )
    inserted = conn.execute(
        stmt.on_conflict_do_nothing().returning(stock_subscriptions.c.id)
    ).scalar()
    return str(inserted) if inserted else None


TIMER_LEASE = timedelta(minutes=5)
TIMER_MAX_ATTEMPTS = 5


def run_due(
    engine: Engine, *, rules: RuleSet, max_attempts: int, actor: str, limit: int = 20
) -> int:
    """Claim and run due timers, each in its own transaction; returns how many ran."""
    with engine.begin() as conn:
        due = timers.claim(conn, now=utcnow(), limit=limit, lease=TIMER_LEASE)
    for timer in due:
        settings = Settings(rules, max_attempts, utcnow(), actor)
        try:
            with engine.begin() as conn:
                run(conn, timer, settings)
        except SQLAlchemyError:
            # Left leased: it runs again when the lease ends, unless it keeps failing.
            log.exception("timer %s failed (attempt %d)", timer.key, timer.attempts)
            if timer.attempts >= TIMER_MAX_ATTEMPTS:
                with engine.begin() as conn:
                    timers.finish(conn, timer.key, settings.now)
                    append(
                        conn,
                        [
                            AuditEntry(
                                actor,
                                "timer.failed",
                                "timer",
                                timer.key,
                                {"attempts": timer.attempts},
                            )
                        ],
                        at=settings.now,
                    )
    return len(due)
