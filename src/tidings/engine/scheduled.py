"""What the engine does when its own timers come due: send a digest, run a restock wave."""

from __future__ import annotations

import logging
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
from tidings.engine.writer import NotificationWriter, Settings
from tidings.events.envelope import CanonicalEvent

log = logging.getLogger(__name__)

DIGEST_KIND = "inventory_digest"


def run(conn: Connection, timer: timers.Timer, settings: Settings) -> None:
    """Run one due timer inside the caller's transaction and mark it done.

    Marked done first: the update holds the timer's row until commit, so a stock rise
    that re-arms a wave while it runs waits for it, then re-arms it, and is not lost."""
    timers.finish(conn, timer.key, settings.now)
    handler = {"digest": run_digest, inventory.WAVE_KIND: run_wave}.get(timer.kind)
    if handler is not None:
        handler(conn, timer.payload, settings)


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
    """Tell the next subscribers of a restock episode, checking stock first: all told in
    the episode stay within the wave multiple of the units available now."""
    sku = str(payload["sku"])
    # The stored progress is the truth; a copy claimed before another run may be stale.
    progress = {"wave": 1, "told": 0, **(inventory.wave_progress(conn, sku) or payload)}
    number, told = int(progress["wave"]), int(progress["told"])
    store = settings.rules.policy
    left = inventory.available(conn, sku)
    threshold = store.low_stock_threshold(sku)
    writer = NotificationWriter(conn, settings)
    size = inventory.wave_size(
        available=left, threshold=threshold, multiple=store.back_in_stock_wave_multiple, told=told
    )
    if size == 0:
        gone = inventory.out_of_stock(left, threshold) or left <= 0
        reason = "out of stock again" if gone else f"{told} told for {left} units available"
        writer.audit.append(
            AuditEntry(
                settings.actor,
                "wave.stopped" if gone else "wave.waiting",
                "sku",
                sku,
                {"wave": number, "available": left, "reason": reason},
            )
        )
        inventory.record_wave(conn, sku, progress, settings.now)
        writer.flush()
        return
    wave = conn.execute(
        select(stock_subscriptions.c.id, stock_subscriptions.c.customer_id)
        .where(stock_subscriptions.c.sku == sku, stock_subscriptions.c.notified_at.is_(None))
        .order_by(stock_subscriptions.c.created_at, stock_subscriptions.c.id)
        .limit(size)
    ).all()
    row = conn.execute(select(events).where(events.c.id == progress["event_id"])).mappings().one()
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
            {"wave": number, "available": left, "notified": len(wave), "told": told + len(wave)},
        )
    )
    # No next wave is scheduled here: this one used the budget the stock allows (or told
    # everyone). A stock rise schedules the next one, not before the interval is over.
    next_at = settings.now + store.back_in_stock_wave_interval
    inventory.record_wave(
        conn,
        sku,
        {**progress, "wave": number + 1, "told": told + len(wave), "next_at": next_at.isoformat()},
        settings.now,
    )
    writer.flush()


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
