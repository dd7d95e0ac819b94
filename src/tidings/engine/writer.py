"""Writing what planning decided: notifications, their delivery jobs, digest timers and
audit entries, collected for one transaction and written in bulk."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select, update

from tidings.audit.chain import AuditEntry, append
from tidings.db.ids import new_id
from tidings.db.lookups import QUERY_CHUNK, chunked
from tidings.db.schema import delivery_jobs, notifications
from tidings.engine import timers
from tidings.engine.planning import (
    HELD,
    MERGED,
    QUEUED,
    SCHEDULED,
    SUPPRESSED,
    PlannedNotification,
    key,
)
from tidings.engine.rules import RuleSet
from tidings.events.envelope import CanonicalEvent

# Statuses that count against the per-order contact budget.
COUNTED = ("queued", "scheduled", "held", "sent", "delivered", "acknowledged")
DUPLICATE_REASON = "the same message was already planned from another event"


def superseded_reason(kind: str) -> str:
    return f"superseded by a newer update ({kind})"


@dataclass(frozen=True, slots=True)
class Settings:
    rules: RuleSet
    max_attempts: int
    now: datetime
    actor: str


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
        # Groups whose stored held messages are superseded when the batch is written, with
        # the kind of the first newer message.
        self._superseding: dict[str, str] = {}
        # Dedupe keys looked up in the stored notifications, and those found there.
        self._checked_keys: set[str] = set()
        self._stored_keys: set[str] = set()

    def sent_today(self, orders_of: dict[str, str | None]) -> dict[str, int]:
        """Per recipient: non-critical messages about their order in the last 24 hours,
        counting what this transaction has planned so far."""
        wanted = {
            (order_id, customer_id)
            for customer_id, order_id in orders_of.items()
            if order_id is not None
        }
        self.count_today(wanted)
        return {
            customer_id: self._today[(order_id, customer_id)] for order_id, customer_id in wanted
        }

    def count_today(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Count the stored messages of these (order, customer) pairs, in one query for all
        that are not counted yet: a batch asks once, not once per event."""
        missing = set(pairs) - self._today.keys()
        if not missing:
            return
        since = self.settings.now - timedelta(days=1)
        message = notifications.c.event_id.concat(notifications.c.rule_id)
        counted = func.count(func.distinct(message))
        for chunk in chunked(sorted(missing), QUERY_CHUNK):
            rows = self.conn.execute(
                select(notifications.c.order_id, notifications.c.customer_id, counted)
                .where(
                    notifications.c.order_id.in_(sorted({order_id for order_id, _ in chunk})),
                    notifications.c.customer_id.in_(
                        sorted({customer_id for _, customer_id in chunk})
                    ),
                    notifications.c.created_at >= since,
                    notifications.c.status.in_(COUNTED),
                    notifications.c.category.not_in(self.settings.rules.critical_categories),
                )
                .group_by(notifications.c.order_id, notifications.c.customer_id)
            ).all()
            found = {(row[0], row[1]): int(row[2]) for row in rows}
            for pair in chunk:
                self._today[pair] = found.get(pair, 0)

    def check_keys(self, keys: Iterable[str]) -> None:
        """Look up which of these dedupe keys stored notifications hold, in one query for
        all not looked up yet (a batch passes the keys it expects to plan up front)."""
        missing = sorted(set(keys) - self._checked_keys)
        for chunk in chunked(missing):
            self._stored_keys.update(
                self.conn.scalars(
                    select(notifications.c.dedupe_key).where(notifications.c.dedupe_key.in_(chunk))
                )
            )
        self._checked_keys.update(missing)

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
        self.check_keys(sending)
        taken = self._keys | (self._stored_keys & set(sending))
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
        """A newer message of a group replaces held ones: those of this batch now, the
        stored ones when the batch is written (one statement per kind for all groups)."""
        reason = superseded_reason(kind)
        for row in self.rows:
            if row["group_key"] == group_key and row["status"] == HELD:
                row["status"], row["reason"] = "superseded", reason
                self.jobs.pop(row["id"], None)
        self._superseding.setdefault(group_key, kind)

    def _supersede_stored(self) -> None:
        by_kind: dict[str, list[str]] = {}
        for group_key, kind in self._superseding.items():
            by_kind.setdefault(kind, []).append(group_key)
        self._superseding = {}
        for kind, group_keys in by_kind.items():
            reason = superseded_reason(kind)
            held = self.conn.scalars(
                update(notifications)
                .where(notifications.c.group_key.in_(group_keys), notifications.c.status == HELD)
                .values(status="superseded", reason=reason, updated_at=self.settings.now)
                .returning(notifications.c.id)
            ).all()
            if not held:
                continue
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
        # Before this batch's rows are in: its own held messages were handled in memory.
        self._supersede_stored()
        if self.rows:
            self.conn.execute(notifications.insert(), self.rows)
        if self.jobs:
            self.conn.execute(delivery_jobs.insert(), list(self.jobs.values()))
        append(self.conn, self.audit, at=self.settings.now)
        self.rows, self.jobs, self.audit = [], {}, []
