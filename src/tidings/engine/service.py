"""Applying stored events: the engine's stateful side, inside intake's transaction.

Facts are read here (recipients, orders, shipment progress, today's contacts, stock),
decisions are made by ``planning.plan``, and its notifications, jobs, timers and audit
entries are written back, all in the caller's transaction.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select, update

from tidings.audit.chain import AuditEntry, append
from tidings.db.dialect import upsert
from tidings.db.ids import new_id
from tidings.db.schema import delivery_jobs, events, notifications, order_lines, orders
from tidings.engine import inventory, repository, returns, shipments, timers
from tidings.engine.planning import (
    HELD,
    MERGED,
    QUEUED,
    SCHEDULED,
    SUPPRESSED,
    Facts,
    PlannedNotification,
    key,
    plan,
)
from tidings.engine.recipients import Recipient
from tidings.engine.rules import RuleSet
from tidings.events.envelope import CanonicalEvent

COUNTED = ("queued", "scheduled", "held", "sent", "delivered", "acknowledged")
DUPLICATE_REASON = "the same message was already planned from another event"


@dataclass(frozen=True, slots=True)
class Settings:
    rules: RuleSet
    max_attempts: int
    now: datetime
    actor: str


def apply_events(
    conn: Connection, fresh: list[tuple[str, CanonicalEvent]], settings: Settings
) -> dict[str, int]:
    """Apply newly stored events in order; returns notifications created per event id."""
    if not fresh:
        return {}
    _remember_customers_and_orders(conn, [event for _, event in fresh], settings.now)
    writer = NotificationWriter(conn, settings)
    pending = deque(fresh)
    while pending:
        event_id, event = pending.popleft()
        writer.audit.append(
            AuditEntry(
                settings.actor,
                "event.accepted",
                "event",
                event_id,
                {"type": event.type, "id": event.id},
            )
        )
        for derived in _derive(conn, event_id, event, settings):
            derived_id = _store_derived(conn, derived, settings.now)
            if derived_id is not None:
                pending.append((derived_id, derived))
        event = returns.with_order(conn, event_id, event, settings.now)
        _plan_event(conn, writer, event_id, event, settings)
    writer.flush()
    return writer.counts


def _remember_customers_and_orders(
    conn: Connection, batch: list[CanonicalEvent], now: datetime
) -> None:
    profiles: dict[str, dict[str, Any]] = {}
    order_rows: list[dict[str, Any]] = []
    lines: list[dict[str, Any]] = []
    canceled: list[str] = []
    for event in batch:
        if event.customer:
            profiles[event.customer["id"]] = event.customer
        if event.type == "order.placed" and event.customer:
            order_id = event.data["order_id"]
            order_rows.append(
                {
                    "id": order_id,
                    "number": event.data.get("order_number"),
                    "customer_id": event.customer["id"],
                    "locale": event.customer.get("locale"),
                    "currency": event.data.get("currency"),
                    "created_at": now,
                    "status": "open",
                }
            )
            merged: dict[str, dict[str, Any]] = {}
            for line in event.data.get("lines") or []:
                row = merged.setdefault(
                    line["sku"],
                    {
                        "order_id": order_id,
                        "sku": line["sku"],
                        "name": line.get("name"),
                        "quantity": 0,
                    },
                )
                row["quantity"] += int(line["quantity"])
            lines.extend(merged.values())
        if event.type == "order.canceled" and event.order_id:
            canceled.append(event.order_id)
    repository.upsert_customers(conn, profiles.values(), now)
    repository.upsert_orders(conn, order_rows)
    if lines:
        conn.execute(upsert(conn, order_lines).on_conflict_do_nothing(), lines)
    if canceled:
        conn.execute(update(orders).where(orders.c.id.in_(canceled)).values(status="canceled"))


def _derive(
    conn: Connection, event_id: str, event: CanonicalEvent, settings: Settings
) -> list[CanonicalEvent]:
    """Events the engine itself concludes from this one (stock crossing a threshold, a
    restocked return putting units back on the shelf)."""
    store, now = settings.rules.policy, settings.now
    if event.type == "inventory.level_changed":
        return inventory.apply_level(conn, event, store, now)
    if event.type == "inventory.back_in_stock":
        inventory.back_in_stock(conn, event_id, event, store, now)
    if event.type == "return.status_changed":
        return inventory.returned_to_stock(event)
    return []


def _store_derived(conn: Connection, event: CanonicalEvent, now: datetime) -> str | None:
    event_id = new_id("evt")
    stmt = upsert(conn, events).values(
        id=event_id,
        source=event.source,
        ce_id=event.id,
        type=event.type,
        subject=event.subject,
        time=event.time,
        data=event.data,
        order_id=None,
        customer_id=None,
        received_at=now,
    )
    inserted = conn.execute(stmt.on_conflict_do_nothing().returning(events.c.id)).scalar()
    return str(inserted) if inserted else None


def _plan_event(
    conn: Connection,
    writer: NotificationWriter,
    event_id: str,
    event: CanonicalEvent,
    settings: Settings,
) -> None:
    rules = settings.rules
    shipment = _shipment(conn, event) if event.type == "shipment.status_changed" else None
    if shipment is not None:
        event = shipments.with_known_names(event, shipment["tracking_number"])
    if event.type == "inventory.backordered" and event.source != inventory.DERIVED_SOURCE:
        # A source repeating it while the backorder runs is not news; the engine's own
        # backordered events were decided when the level changed.
        if not inventory.mark_backordered(conn, str(event.data["sku"]), settings.now):
            writer.note_no_news(event_id, event, "the SKU is already on backorder")
            return
    if not rules.for_type(event.type) or event.type == "inventory.back_in_stock":
        return  # back-in-stock goes to subscribers in waves, see run_wave
    order_id = event.order_id or (shipment or {}).get("order_id")
    order = repository.orders_by_id(conn, [order_id]).get(order_id) if order_id else None
    extra: dict[str, dict[str, Any]] = {}
    order_of: dict[str, str] = {}
    recipients: list[Recipient | None]
    if event.type in ("inventory.backordered", "inventory.restock_eta_changed"):
        if event.type == "inventory.restock_eta_changed":
            news, previous = inventory.restock_news(conn, event, rules.policy, settings.now)
            event = _with_data(event, previous_eta=previous)
            if not news:
                writer.note_no_news(event_id, event)
                return
        waiting = inventory.open_orders_with(conn, str(event.data["sku"]))
        found = repository.recipients_by_id(conn, [w.customer_id for w in waiting])
        recipients = []
        for w in waiting:
            if w.customer_id in found and w.customer_id not in order_of:
                recipients.append(found[w.customer_id])
                order_of[w.customer_id] = w.order_id
                extra[w.customer_id] = {
                    "product": {"sku": event.data["sku"], "name": w.product_name, "url": None}
                }
                if "previous_eta" in event.data:
                    # Messages are rendered from the stored event, which lacks the date
                    # customers last heard; the worker lets this data stand in for it.
                    extra[w.customer_id]["data"] = event.data
    else:
        customer_id = (event.customer or {}).get("id") or (order or {}).get("customer_id")
        found = repository.recipients_by_id(conn, [customer_id] if customer_id else [])
        recipients = [found.get(customer_id)] if customer_id else [None]
        if customer_id and order_id:
            order_of[customer_id] = order_id
    reached = None
    if shipment is not None and shipment.get("status"):
        reached = (shipment.get("rank"), str(shipment["status"]))
    facts = Facts(
        now=settings.now,
        order=order,
        shipment_reached=reached,
        sent_today=writer.sent_today(
            {r.customer_id: order_of.get(r.customer_id) or order_id for r in recipients if r}
        ),
        extra=extra,
    )
    planned = returns.explain_unknown_order(event, plan(event, recipients, rules, facts))
    writer.add(event_id, event, planned, order_of)
    eta = event.data.get("restock_eta")
    if event.type == "inventory.backordered" and eta:
        if any(p.status != SUPPRESSED for p in planned):
            inventory.told_restock_date(conn, str(event.data["sku"]), str(eta), settings.now)
    if order_id and not event.order_id:
        # Found through the tracking number: file the event under its order too.
        conn.execute(update(events).where(events.c.id == event_id).values(order_id=order_id))
    if shipment is not None:
        _advance_shipment(conn, event, shipment, order_id, settings.now)


def _with_data(event: CanonicalEvent, **values: Any) -> CanonicalEvent:
    return CanonicalEvent(
        event.source, event.id, event.type, event.subject, event.time, {**event.data, **values}
    )


def _shipment(conn: Connection, event: CanonicalEvent) -> dict[str, Any]:
    """The parcel this event is about, found by its tracking number or its shipment id."""
    return shipments.find(conn, event).as_dict()


def _advance_shipment(
    conn: Connection,
    event: CanonicalEvent,
    known: dict[str, Any],
    order_id: str | None,
    now: datetime,
) -> None:
    """Remember the furthest ranked status reached; side states do not move it."""
    shipments.advance(conn, shipments.Parcel(**known), str(event.data["status"]), order_id, now)


class NotificationWriter:
    """Collects planned notifications for one transaction and writes them in bulk."""

    def __init__(self, conn: Connection, settings: Settings) -> None:
        self.conn = conn
        self.settings = settings
        self.rows: list[dict[str, Any]] = []
        self.jobs: dict[str, dict[str, Any]] = {}
        self.audit: list[AuditEntry] = []
        self.counts: dict[str, int] = {}
        self._keys: set[str] = set()
        self._today: dict[tuple[str, str], int] = {}
        # Escalations name their first message by its dedupe key.
        self._ids_by_key: dict[str, str] = {}

    def sent_today(self, orders_of: dict[str, str | None]) -> dict[str, int]:
        """Per recipient: non-critical messages about their order in the last 24 hours,
        counting what this transaction has planned so far."""
        wanted = {
            (order_id, customer_id)
            for customer_id, order_id in orders_of.items()
            if order_id is not None
        }
        for order_id, customer_id in wanted - self._today.keys():
            since = self.settings.now - timedelta(days=1)
            count = self.conn.execute(
                select(
                    func.count(
                        func.distinct(notifications.c.event_id.concat(notifications.c.rule_id))
                    )
                ).where(
                    notifications.c.order_id == order_id,
                    notifications.c.customer_id == customer_id,
                    notifications.c.created_at >= since,
                    notifications.c.status.in_(COUNTED),
                    notifications.c.category.not_in(self.settings.rules.critical_categories),
                )
            ).scalar()
            self._today[(order_id, customer_id)] = int(count or 0)
        return {
            customer_id: self._today[(order_id, customer_id)] for order_id, customer_id in wanted
        }

    def note_no_news(
        self,
        event_id: str,
        event: CanonicalEvent,
        reason: str = "restock date moved within the margin",
    ) -> None:
        self.audit.append(
            AuditEntry(
                self.settings.actor,
                "event.no_news",
                "event",
                event_id,
                {"type": event.type, "reason": reason},
            )
        )

    def add(
        self,
        event_id: str,
        event: CanonicalEvent,
        planned: list[PlannedNotification],
        order_of: dict[str, str] | None = None,
    ) -> list[str]:
        """Queue rows for the planned notifications that are new; returns their ids."""
        # A message's business key is held by the one that goes out. A second event with
        # the same news (another source, a late copy) is recorded as suppressed, under a
        # key of its own, so the timeline shows it and why.
        sending = [p.dedupe_key for p in planned if p.status != SUPPRESSED]
        taken = set(self._keys)
        if sending:
            taken |= set(
                self.conn.scalars(
                    select(notifications.c.dedupe_key).where(
                        notifications.c.dedupe_key.in_(sending)
                    )
                ).all()
            )
        fresh = []
        for p in planned:
            if p.status != SUPPRESSED and p.dedupe_key in taken:
                p = replace(p, status=SUPPRESSED, reason=DUPLICATE_REASON, group_key=None)
            if p.status == SUPPRESSED:
                p = replace(p, dedupe_key=key(p.dedupe_key, event_id))
            fresh.append(p)
        ids = []
        merged: set[str] = set()
        now, actor = self.settings.now, self.settings.actor
        for p in fresh:
            self._keys.add(p.dedupe_key)
            who = p.recipient.customer_id if p.recipient else None
            if p.status != SUPPRESSED and p.group_key:
                self._supersede(p.group_key, p.rule.kind)
            status = p.status
            digest_key = None
            if p.digest and status == HELD and who:
                digest_key = f"{who}|{p.channel}|{p.run_at.isoformat()}"
                timers.schedule(
                    self.conn,
                    key=f"digest:{digest_key}",
                    kind="digest",
                    due_at=p.run_at,
                    payload={"digest_key": digest_key},
                    now=now,
                )
            notification_id = new_id("ntf")
            carrier = self._carrier(p.merge_key) if status == SCHEDULED and p.merge_key else None
            reason = p.reason
            if carrier is not None:
                merged.add(p.dedupe_key)
                status = MERGED
                reason = f"merged into the {p.channel} message that goes at the same time"
            self._ids_by_key[p.dedupe_key] = notification_id
            order_id = (order_of or {}).get(who or "") or event.order_id
            self.rows.append(
                {
                    "id": notification_id,
                    "event_id": event_id,
                    "rule_id": p.rule.id,
                    "kind": p.rule.kind,
                    "category": p.rule.category,
                    "priority": p.rule.lane.name,
                    "channel": p.channel,
                    "customer_id": who,
                    "order_id": order_id,
                    "recipient": p.address,
                    "locale": p.recipient.locale if p.recipient else None,
                    "time_zone": p.recipient.time_zone if p.recipient else None,
                    "status": status,
                    "reason": reason,
                    "dedupe_key": p.dedupe_key,
                    "rendered": None,
                    "group_key": p.group_key,
                    "digest_key": digest_key,
                    "parent_id": carrier or self._ids_by_key.get(p.parent_key or ""),
                    "merge_key": p.merge_key if status == SCHEDULED else None,
                    "scheduled_for": p.run_at if p.run_at > now else None,
                    "extra": dict(p.extra) if p.extra else None,
                    "created_at": now,
                    "updated_at": now,
                    "sent_at": None,
                }
            )
            ids.append(notification_id)
            self.counts[event_id] = self.counts.get(event_id, 0) + 1
            detail = {"rule": p.rule.id, "kind": p.rule.kind, "channel": p.channel}
            if status == SUPPRESSED:
                self.audit.append(
                    AuditEntry(
                        actor,
                        "notification.suppressed",
                        "notification",
                        notification_id,
                        detail | {"reason": p.reason or ""},
                    )
                )
                continue
            if reason:
                detail["reason"] = reason
            self.audit.append(
                AuditEntry(
                    actor,
                    "notification.planned" if status == QUEUED else f"notification.{status}",
                    "notification",
                    notification_id,
                    detail,
                )
            )
            if digest_key is None and status != MERGED:
                self.jobs[notification_id] = self.job(
                    notification_id, p.channel, int(p.rule.lane), p.run_at
                )
        counted = {
            (p.recipient.customer_id, p.rule.id)
            for p in fresh
            if p.recipient
            and not p.rule.critical
            and p.status != SUPPRESSED
            and p.dedupe_key not in merged
        }
        for customer_id, _ in counted:
            order_id = (order_of or {}).get(customer_id) or event.order_id
            if order_id and (order_id, customer_id) in self._today:
                self._today[(order_id, customer_id)] += 1
        return ids

    def job(
        self, notification_id: str, channel: str, lane: int, run_at: datetime
    ) -> dict[str, Any]:
        now = self.settings.now
        return {
            "id": new_id("job"),
            "notification_id": notification_id,
            "channel": channel,
            "lane": lane,
            "status": "queued",
            "run_at": max(run_at, now),
            "attempts": 0,
            "max_attempts": self.settings.max_attempts,
            "worker_id": None,
            "last_error": None,
            "created_at": now,
            "updated_at": now,
        }

    def _carrier(self, merge_key: str) -> str | None:
        """The scheduled message, planned earlier, that this one rides along with."""
        for row in self.rows:
            if row.get("merge_key") == merge_key and row["status"] == SCHEDULED:
                return str(row["id"])
        found = self.conn.scalar(
            select(notifications.c.id)
            .where(notifications.c.merge_key == merge_key, notifications.c.status == SCHEDULED)
            .limit(1)
        )
        return str(found) if found else None

    def _supersede(self, group_key: str, kind: str) -> None:
        """A newer message of a group replaces held ones, stored or in this batch."""
        reason = f"superseded by a newer update ({kind})"
        for row in self.rows:
            if row["group_key"] == group_key and row["status"] == HELD:
                row["status"], row["reason"] = "superseded", reason
                self.jobs.pop(row["id"], None)
        held = self.conn.scalars(
            update(notifications)
            .where(notifications.c.group_key == group_key, notifications.c.status == HELD)
            .values(status="superseded", reason=reason, updated_at=self.settings.now)
            .returning(notifications.c.id)
        ).all()
        if held:
            self.conn.execute(
                update(delivery_jobs)
                .where(
                    delivery_jobs.c.notification_id.in_(held), delivery_jobs.c.status == "queued"
                )
                .values(status="canceled", updated_at=self.settings.now)
            )
            self.audit.extend(
                AuditEntry(
                    self.settings.actor,
                    "notification.superseded",
                    "notification",
                    i,
                    {"reason": reason},
                )
                for i in held
            )

    def flush(self) -> None:
        if self.rows:
            self.conn.execute(notifications.insert(), self.rows)
        if self.jobs:
            self.conn.execute(delivery_jobs.insert(), list(self.jobs.values()))
        append(self.conn, self.audit, at=self.settings.now)
        self.rows, self.jobs, self.audit = [], {}, []


__all__ = ["QUEUED", "Settings", "apply_events"]
