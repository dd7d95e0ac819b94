"""The delivery queue in the database: claim due jobs with a lease, record their outcomes.

Jobs are written by intake in the same transaction as their notification. A job is due
when it is queued and its ``run_at`` has passed, or when it is leased and its lease
(held in ``run_at``) has run out, which is how the work of a dead worker is taken over.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from tidings.audit.chain import AuditEntry, append
from tidings.db.claims import lock_due
from tidings.db.dialect import upsert
from tidings.db.schema import (
    customers,
    delivery_attempts,
    delivery_jobs,
    events,
    inbox_messages,
    notifications,
    orders,
)
from tidings.delivery import job_context
from tidings.delivery.devices import remove_device
from tidings.engine.rules import Lane

ACTIVE = ("queued", "leased")
# What receipts move a sent notification to; the worker's own outcome never undoes them.
AFTER_SENT = ("delivered", "acknowledged", "bounced", "complained", "failed")
DIGEST_KIND = "inventory_digest"


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    job_id: str
    notification_id: str
    channel: str
    attempt: int
    max_attempts: int
    kind: str
    category: str
    recipient: str | None
    locale: str | None
    time_zone: str | None
    customer: dict[str, Any]
    order: dict[str, Any]
    event: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    priority: str = "transactional"
    # Why this message must not go out after all (a suppressed address, an escalation
    # whose first message was read), found when it was claimed.
    blocked: str | None = None
    # Push: the customer's active devices, as (kind, address).
    devices: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class JobOutcome:
    job: ClaimedJob
    outcome: str  # sent | retry | paused | dead | suppressed
    started_at: datetime
    finished_at: datetime
    provider: str | None = None
    error: str | None = None
    retry_at: datetime | None = None
    provider_message_id: str | None = None
    rendered: dict[str, Any] | None = None
    inbox: dict[str, Any] | None = field(default=None)
    # Push devices the provider said are gone: (customer id, address, reason).
    dead_devices: tuple[tuple[str, str, str], ...] = ()


# Of what a claim has room for after critical jobs, the share bulk jobs are sure of while
# transactional ones wait: a campaign keeps moving, at a fifth of the pace.
BULK_SHARE = 5


def _lock_by_lane(conn: Connection, limit: int, now: datetime) -> list[str]:
    """The due jobs a claim of ``limit`` takes, locked. Critical jobs come first, always:
    a refund never waits behind anything. Of the room left, transactional jobs get up to
    four fifths and bulk jobs the rest, and either lane takes what the other leaves."""

    def due(lane: Lane, room: int, besides: Sequence[str] = ()) -> list[str]:
        if room <= 0:
            return []
        query = (
            select(delivery_jobs.c.id)
            .where(
                delivery_jobs.c.lane == int(lane),
                # Written as literals: with bound values neither SQLite nor a generic
                # PostgreSQL plan can tell that the partial index ix_delivery_jobs_due
                # covers the query, and a claim then sorts the whole queue.
                delivery_jobs.c.status.in_(
                    bindparam("active", list(ACTIVE), expanding=True, literal_execute=True)
                ),
                delivery_jobs.c.run_at <= now,
            )
            .order_by(delivery_jobs.c.run_at)
            .limit(room)
        )
        if besides:
            query = query.where(delivery_jobs.c.id.not_in(besides))
        return lock_due(conn, query)

    ids = due(Lane.critical, limit)
    room = limit - len(ids)
    if room <= 0:
        return ids
    transactional = due(Lane.transactional, room - math.ceil(room / BULK_SHARE))
    bulk = due(Lane.bulk, room - len(transactional))
    transactional += due(Lane.transactional, room - len(transactional) - len(bulk), transactional)
    return ids + transactional + bulk


def claim(
    conn: Connection, *, worker_id: str, limit: int, now: datetime, lease: timedelta
) -> list[ClaimedJob]:
    ids = _lock_by_lane(conn, limit, now)
    if not ids:
        return []
    claimed = conn.execute(
        update(delivery_jobs)
        .where(delivery_jobs.c.id.in_(ids))
        .values(
            status="leased",
            run_at=now + lease,
            worker_id=worker_id,
            attempts=delivery_jobs.c.attempts + 1,
            updated_at=now,
        )
        .returning(delivery_jobs.c.id, delivery_jobs.c.attempts, delivery_jobs.c.max_attempts)
    ).all()
    if not claimed:
        return []
    by_job = {row.id: row for row in claimed}
    rows = conn.execute(
        select(
            delivery_jobs.c.id.label("job_id"),
            notifications.c.id.label("notification_id"),
            notifications.c.channel,
            notifications.c.kind,
            notifications.c.category,
            notifications.c.priority,
            notifications.c.parent_id,
            notifications.c.recipient,
            notifications.c.locale,
            notifications.c.time_zone,
            notifications.c.extra,
            customers.c.id.label("customer_id"),
            customers.c.name.label("customer_name"),
            customers.c.email.label("customer_email"),
            orders.c.id.label("order_id"),
            orders.c.number.label("order_number"),
            events.c.id.label("event_pk"),
            events.c.ce_id,
            events.c.source,
            events.c.type.label("event_type"),
            events.c.time.label("event_time"),
            events.c.received_at,
            events.c.data,
        )
        .select_from(
            delivery_jobs.join(notifications, notifications.c.id == delivery_jobs.c.notification_id)
            .join(events, events.c.id == notifications.c.event_id)
            .outerjoin(customers, customers.c.id == notifications.c.customer_id)
            .outerjoin(orders, orders.c.id == notifications.c.order_id)
        )
        .where(delivery_jobs.c.id.in_(list(by_job)))
    ).all()
    jobs = []
    for row in rows:
        data = row.data or {}
        jobs.append(
            ClaimedJob(
                job_id=row.job_id,
                notification_id=row.notification_id,
                channel=row.channel,
                attempt=by_job[row.job_id].attempts,
                max_attempts=by_job[row.job_id].max_attempts,
                kind=row.kind,
                category=row.category,
                recipient=row.recipient,
                locale=row.locale,
                time_zone=row.time_zone,
                customer={
                    "id": row.customer_id,
                    "name": row.customer_name,
                    "email": row.customer_email,
                },
                order={
                    "id": row.order_id or data.get("order_id"),
                    "number": row.order_number,
                },
                event={
                    "id": row.ce_id,
                    "source": row.source,
                    "type": row.event_type,
                    "time": row.event_time or row.received_at,
                    "received_at": row.received_at,
                    "data": data,
                },
                extra=dict(row.extra or {}),
                priority=row.priority,
                blocked=None,
            )
        )
    jobs = job_context.with_blocks_and_devices(conn, jobs, [row.parent_id for row in rows])
    carriers = [job.notification_id for job in jobs if job.channel in ("sms", "push")]
    if carriers:
        riders = job_context.merged_into(conn, carriers)
        jobs = [
            replace(job, extra={**job.extra, "merged": riders[job.notification_id]})
            if job.notification_id in riders
            else job
            for job in jobs
        ]
    digests = [job.notification_id for job in jobs if job.kind == DIGEST_KIND]
    if digests:
        items = job_context.digest_items(conn, digests)
        jobs = [
            replace(job, extra={**job.extra, "items": items.get(job.notification_id, [])})
            if job.kind == DIGEST_KIND
            else job
            for job in jobs
        ]
    # In the order they fell due (lane, then time): the worker sends them in this order,
    # so the first through a half-open breaker is the one that has waited longest.
    position = {job_id: n for n, job_id in enumerate(ids)}
    return sorted(jobs, key=lambda job: position[job.job_id])


def record(
    conn: Connection, outcomes: Sequence[JobOutcome], *, worker_id: str, now: datetime
) -> int:
    """Store the outcomes of one batch of attempts; returns how many were still ours.

    The update is fenced on the attempt number: if our lease ran out and another worker
    took the job over, its newer attempt wins and our late result is only logged.
    """
    if not outcomes:
        return 0
    job_updates = []
    for o in outcomes:
        status = {
            "sent": "sent",
            "retry": "queued",
            "paused": "queued",
            "dead": "dead",
            "suppressed": "suppressed",
        }[o.outcome]
        job_updates.append(
            {
                "b_id": o.job.job_id,
                "b_attempt": o.job.attempt,
                "b_status": status,
                "b_run_at": o.retry_at or now,
                "b_error": o.error,
                "b_now": now,
                # Waiting behind an open breaker tried nothing: the attempt is given back.
                "b_refund": 1 if o.outcome == "paused" else 0,
            }
        )
    stmt = (
        update(delivery_jobs)
        .where(
            delivery_jobs.c.id == bindparam("b_id"),
            delivery_jobs.c.attempts == bindparam("b_attempt"),
            delivery_jobs.c.status == "leased",
        )
        .values(
            status=bindparam("b_status"),
            run_at=bindparam("b_run_at"),
            last_error=bindparam("b_error"),
            attempts=delivery_jobs.c.attempts - bindparam("b_refund"),
            updated_at=bindparam("b_now"),
        )
    )
    conn.execute(stmt, job_updates)
    # A message that waited behind open breakers tried nothing: no attempt, no audit entry
    # (a long outage would otherwise write one of each per message per cooldown).
    tried = [o for o in outcomes if o.outcome != "paused"]
    if not tried:
        return len(outcomes)
    conn.execute(
        delivery_attempts.insert(),
        [
            {
                "job_id": o.job.job_id,
                "notification_id": o.job.notification_id,
                "attempt": o.job.attempt,
                "worker_id": worker_id,
                "provider": o.provider,
                "outcome": {
                    "sent": "sent",
                    "retry": "transient",
                    "dead": "failed",
                    "suppressed": "suppressed",
                }[o.outcome],
                "error": o.error,
                "provider_message_id": o.provider_message_id,
                "started_at": o.started_at,
                "finished_at": o.finished_at,
            }
            for o in tried
        ],
    )
    final = [o for o in outcomes if o.outcome in ("sent", "dead", "suppressed")]
    if final:
        conn.execute(
            update(notifications)
            # A provider's receipt can arrive before this commit; its news stays.
            .where(
                notifications.c.id == bindparam("b_id"),
                # Not NOT IN: an expanding list cannot be bound once per row of executemany.
                *(notifications.c.status != status for status in AFTER_SENT),
            )
            .values(
                status=bindparam("b_status"),
                reason=bindparam("b_reason"),
                rendered=bindparam("b_rendered"),
                sent_at=bindparam("b_sent_at"),
                provider=bindparam("b_provider"),
                provider_message_id=bindparam("b_provider_message_id"),
                updated_at=bindparam("b_now"),
            ),
            [
                {
                    "b_id": o.job.notification_id,
                    "b_status": o.outcome,
                    "b_reason": o.error,
                    "b_rendered": o.rendered,
                    "b_sent_at": o.finished_at if o.outcome == "sent" else None,
                    "b_provider": o.provider,
                    "b_provider_message_id": o.provider_message_id,
                    "b_now": now,
                }
                for o in final
            ],
        )
    gone = [device for o in outcomes for device in o.dead_devices]
    for customer_id, address, reason in gone:
        remove_device(conn, customer_id=customer_id, address=address, reason=reason, now=now)
    inbox = [o.inbox for o in outcomes if o.inbox is not None and o.outcome == "sent"]
    if inbox:
        conn.execute(upsert(conn, inbox_messages).on_conflict_do_nothing(), inbox)
    append(
        conn,
        [
            AuditEntry(
                worker_id,
                f"delivery.{o.outcome}",
                "notification",
                o.job.notification_id,
                {
                    "attempt": o.job.attempt,
                    "channel": o.job.channel,
                    "provider": o.provider,
                    **({"error": o.error} if o.error else {}),
                },
            )
            for o in tried
        ],
        at=now,
    )
    return len(outcomes)
