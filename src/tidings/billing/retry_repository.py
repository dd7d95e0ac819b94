"""Payment retry queries: policies, workflows, attempts and the events billing applied."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, RowMapping, and_, or_, select, update

from tidings.billing.retries import OPEN
from tidings.db.claims import lock_due
from tidings.db.dialect import upsert
from tidings.db.schema import (
    billing_inbox,
    events,
    payment_retry_attempts,
    payment_retry_policies,
    payment_retry_workflows,
)

workflows = payment_retry_workflows
attempts = payment_retry_attempts


@dataclass(frozen=True, slots=True)
class Workflow:
    id: str
    store: str
    payment_id: str
    order_id: str | None
    customer_id: str | None
    gateway: str
    amount: int
    currency: str
    status: str
    policy: dict[str, Any]
    attempts: int
    network: str | None
    decline_code: str | None
    next_attempt_at: datetime | None
    final_action: str | None
    closed_reason: str | None
    opened_by_event: str | None
    recovered_amount: int | None
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None


@dataclass(frozen=True, slots=True)
class Attempt:
    number: int
    at: datetime
    gateway: str
    outcome: str
    decline_code: str | None
    category: str | None
    network: str | None
    amount: int
    currency: str
    idempotency_key: str


def _workflow(row: RowMapping) -> Workflow:
    return Workflow(**{f.name: row[f.name] for f in fields(Workflow)})


def _attempt(row: RowMapping) -> Attempt:
    return Attempt(**{f.name: row[f.name] for f in fields(Attempt)})


# --- policies ---------------------------------------------------------------------------


def get_policy(conn: Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute(
        select(payment_retry_policies.c.policy).where(payment_retry_policies.c.name == name)
    ).first()
    return dict(row[0]) if row is not None else None


def list_policies(conn: Connection) -> list[tuple[str, dict[str, Any], str, datetime]]:
    rows = conn.execute(
        select(payment_retry_policies).order_by(payment_retry_policies.c.name)
    ).mappings()
    return [(r["name"], dict(r["policy"]), r["updated_by"], r["updated_at"]) for r in rows]


def put_policy(
    conn: Connection, name: str, policy: Mapping[str, Any], *, actor: str, now: datetime
) -> None:
    values = {"name": name, "policy": dict(policy), "updated_by": actor, "updated_at": now}
    stmt = upsert(conn, payment_retry_policies).values(**values)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={"policy": stmt.excluded.policy, "updated_by": actor, "updated_at": now},
        )
    )


# --- workflows --------------------------------------------------------------------------


def insert_workflow(conn: Connection, values: Mapping[str, Any]) -> None:
    conn.execute(workflows.insert().values(**values))


def get_workflow(
    conn: Connection, workflow_id: str, *, for_update: bool = False
) -> Workflow | None:
    query = select(workflows).where(workflows.c.id == workflow_id)
    if for_update:
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    return _workflow(row) if row is not None else None


def open_workflow_for_payment(conn: Connection, payment_id: str) -> Workflow | None:
    row = (
        conn.execute(
            select(workflows)
            .where(workflows.c.payment_id == payment_id, workflows.c.status.in_(OPEN))
            .with_for_update()
        )
        .mappings()
        .first()
    )
    return _workflow(row) if row is not None else None


def workflows_for_order(conn: Connection, order_id: str, states: Sequence[str]) -> list[Workflow]:
    rows = conn.execute(
        select(workflows)
        .where(workflows.c.order_id == order_id, workflows.c.status.in_(states))
        .order_by(workflows.c.id)
        .with_for_update()
    ).mappings()
    return [_workflow(row) for row in rows]


def latest_workflow_for_payment(conn: Connection, payment_id: str) -> Workflow | None:
    row = (
        conn.execute(
            select(workflows)
            .where(workflows.c.payment_id == payment_id)
            .order_by(workflows.c.id.desc())
            .limit(1)
            .with_for_update()
        )
        .mappings()
        .first()
    )
    return _workflow(row) if row is not None else None


def update_workflow(
    conn: Connection, workflow_id: str, expected_status: str, **values: Any
) -> None:
    """Write a move; the status guard turns a lost race into an error, not a double move."""
    result = conn.execute(
        update(workflows)
        .where(workflows.c.id == workflow_id, workflows.c.status == expected_status)
        .values(**values)
    )
    if result.rowcount != 1:
        raise RuntimeError(f"retry workflow {workflow_id} changed state while being updated")


def list_workflows(
    conn: Connection,
    *,
    status: str | None = None,
    payment_id: str | None = None,
    order_id: str | None = None,
    after: str | None = None,
    limit: int = 50,
) -> list[Workflow]:
    """Newest first; ``after`` is the last id of the previous page (ids sort by time)."""
    query = select(workflows).order_by(workflows.c.id.desc()).limit(limit)
    if status is not None:
        query = query.where(workflows.c.status == status)
    if payment_id is not None:
        query = query.where(workflows.c.payment_id == payment_id)
    if order_id is not None:
        query = query.where(workflows.c.order_id == order_id)
    if after is not None:
        query = query.where(workflows.c.id < after)
    return [_workflow(row) for row in conn.execute(query).mappings()]


def _due(now: datetime, stale_before: datetime) -> Any:
    return or_(
        and_(workflows.c.status == "retry_scheduled", workflows.c.next_attempt_at <= now),
        and_(workflows.c.status == "retrying", workflows.c.updated_at < stale_before),
    )


def any_due(conn: Connection, *, now: datetime, stale_before: datetime) -> bool:
    """A read, so an idle worker tick never takes SQLite's write lock for nothing."""
    found = conn.execute(select(workflows.c.id).where(_due(now, stale_before)).limit(1)).first()
    return found is not None


def claim_due(
    conn: Connection, *, now: datetime, stale_before: datetime, limit: int
) -> list[Workflow]:
    """Move due ``retry_scheduled`` workflows to ``retrying``, and take back ``retrying``
    ones whose worker went quiet before ``stale_before``; returns them as claimed.

    A retaken one repeats its attempt with the same idempotency key, so a gateway that
    did act on the lost request answers with that outcome instead of charging again.
    Concurrent workers take different workflows without waiting (db/claims.py); the
    status guard in the UPDATE claims each workflow once.
    """
    due_condition = _due(now, stale_before)
    due = (
        select(workflows.c.id)
        .where(due_condition)
        .order_by(workflows.c.next_attempt_at, workflows.c.id)
        .limit(limit)
    )
    ids = lock_due(conn, due)
    if not ids:
        return []
    rows = (
        conn.execute(
            update(workflows)
            .where(workflows.c.id.in_(ids), due_condition)
            .values(status="retrying", updated_at=now)
            .returning(*workflows.c)
        )
        .mappings()
        .all()
    )
    return sorted((_workflow(row) for row in rows), key=lambda w: w.id)


# --- attempts ---------------------------------------------------------------------------


def insert_attempt(conn: Connection, workflow_id: str, attempt: Attempt) -> None:
    conn.execute(
        attempts.insert().values(
            workflow_id=workflow_id, **{f.name: getattr(attempt, f.name) for f in fields(Attempt)}
        )
    )


def attempts_of(conn: Connection, workflow_id: str) -> list[Attempt]:
    rows = conn.execute(
        select(attempts).where(attempts.c.workflow_id == workflow_id).order_by(attempts.c.number)
    ).mappings()
    return [_attempt(row) for row in rows]


def attempts_of_many(conn: Connection, workflow_ids: Sequence[str]) -> dict[str, list[Attempt]]:
    found: dict[str, list[Attempt]] = {w: [] for w in workflow_ids}
    if not workflow_ids:
        return found
    rows = conn.execute(
        select(attempts)
        .where(attempts.c.workflow_id.in_(list(workflow_ids)))
        .order_by(attempts.c.workflow_id, attempts.c.number)
    ).mappings()
    for row in rows:
        found[row["workflow_id"]].append(_attempt(row))
    return found


# --- the events billing acts on ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: str
    source: str
    type: str
    time: datetime
    data: dict[str, Any]
    order_id: str | None
    customer_id: str | None


def pending_events(conn: Connection, *, now: datetime, limit: int) -> list[StoredEvent]:
    """Events intake queued for billing and not applied yet, oldest first; one that
    failed waits for its ``retry_at``."""
    query = (
        select(
            events.c.id,
            events.c.source,
            events.c.type,
            events.c.time,
            events.c.data,
            events.c.order_id,
            events.c.customer_id,
        )
        .join(billing_inbox, billing_inbox.c.event_id == events.c.id)
        .where(
            billing_inbox.c.applied_at.is_(None),
            or_(billing_inbox.c.retry_at.is_(None), billing_inbox.c.retry_at <= now),
        )
        .order_by(billing_inbox.c.queued_at, events.c.time, events.c.id)
        .limit(limit)
    )
    return [
        StoredEvent(
            id=row.id,
            source=row.source,
            type=row.type,
            time=row.time,
            data=dict(row.data or {}),
            order_id=row.order_id,
            customer_id=row.customer_id,
        )
        for row in conn.execute(query)
    ]


def mark_applied(conn: Connection, event_id: str, outcome: str, now: datetime) -> bool:
    """Take ``event_id`` for this transaction; False when another already applied it.

    The ``applied_at IS NULL`` guard makes the first writer win: PostgreSQL's second
    writer waits on the row and then matches nothing; SQLite runs one writer at a time.
    """
    result = conn.execute(
        update(billing_inbox)
        .where(billing_inbox.c.event_id == event_id, billing_inbox.c.applied_at.is_(None))
        .values(applied_at=now, outcome=outcome[:64])
    )
    return result.rowcount == 1


def postpone(conn: Connection, event_id: str, error: str, *, now: datetime) -> datetime:
    """Acting on the event failed: count it and wait longer each time, up to an hour, so
    one broken event neither stalls the events behind it nor floods the log."""
    attempts = conn.execute(
        select(billing_inbox.c.attempts).where(billing_inbox.c.event_id == event_id)
    ).scalar_one()
    retry_at = now + timedelta(seconds=min(5 * 2 ** int(attempts), 3600))
    conn.execute(
        update(billing_inbox)
        .where(billing_inbox.c.event_id == event_id, billing_inbox.c.applied_at.is_(None))
        .values(attempts=billing_inbox.c.attempts + 1, retry_at=retry_at, last_error=error[:500])
    )
    return retry_at


def set_applied_outcome(conn: Connection, event_id: str, outcome: str) -> None:
    conn.execute(
        update(billing_inbox)
        .where(billing_inbox.c.event_id == event_id)
        .values(outcome=outcome[:64])
    )
