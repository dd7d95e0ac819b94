"""What a claimed job needs to know beyond its own rows, read in the claim's transaction
with one set-based query each: suppressed addresses, answered escalations, push devices,
messages merged into it, digest items."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from tidings.db.schema import devices, events, notifications, suppressions
from tidings.delivery.suppressions import normalize_address

if TYPE_CHECKING:
    from tidings.delivery.queue import ClaimedJob


def with_blocks_and_devices(
    conn: Connection, jobs: list[ClaimedJob], parents: list[str | None]
) -> list[ClaimedJob]:
    """What the batch needs to know beyond its rows, in three set-based look-ups: which
    addresses are on the suppression list, which escalations were answered, and the
    active devices of the customers that get push."""
    # Stored and looked up in one form: a bounce blocks the address however it is written.
    addresses = {
        (job.channel, normalize_address(job.channel, job.recipient))
        for job in jobs
        if job.recipient
    }
    blocked: dict[tuple[str, str], tuple[str, str | None]] = {}
    if addresses:
        listed = conn.execute(
            select(
                suppressions.c.channel,
                suppressions.c.address,
                suppressions.c.reason,
                suppressions.c.detail,
            ).where(
                suppressions.c.address.in_([address for _, address in addresses]),
                suppressions.c.channel.in_({channel for channel, _ in addresses}),
            )
        ).all()
        blocked = {(row.channel, row.address): (row.reason, row.detail) for row in listed}
    answered: dict[str, str] = {}
    wanted = [parent for parent in parents if parent]
    if wanted:
        read = conn.execute(
            select(notifications.c.id, notifications.c.channel).where(
                notifications.c.id.in_(wanted),
                notifications.c.status == "acknowledged",
            )
        ).all()
        answered = {row.id: row.channel for row in read}
    push_customers = {job.customer["id"] for job in jobs if job.channel == "push"}
    devices_of: dict[str, list[tuple[str, str]]] = {}
    if push_customers:
        active = conn.execute(
            select(devices.c.customer_id, devices.c.kind, devices.c.address)
            .where(devices.c.customer_id.in_(push_customers), devices.c.removed_at.is_(None))
            .order_by(devices.c.created_at)
        ).all()
        for row in active:
            devices_of.setdefault(row.customer_id, []).append((row.kind, row.address))
    result = []
    for job, parent in zip(jobs, parents, strict=True):
        reason = None
        if parent in answered:
            reason = f"the customer already read the {answered[parent]} message"
        elif (
            found := blocked.get((job.channel, normalize_address(job.channel, job.recipient or "")))
        ) is not None:
            reason = _suppression_reason(job.channel, *found)
        result.append(
            replace(
                job,
                blocked=reason,
                devices=tuple(devices_of.get(job.customer["id"] or "", ())),
            )
        )
    return result


def _suppression_reason(channel: str, reason: str, detail: str | None) -> str:
    said = {
        "hard_bounce": "the address bounced",
        "complaint": "the recipient marked our mail as spam",
        "stop": "the number replied STOP",
    }.get(reason, reason)
    text = f"{channel} address is on the suppression list: {said}"
    return f"{text} ({detail})" if detail else text


def merged_into(conn: Connection, carriers: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Messages merged into each carrier: what the worker needs to write each one's line."""
    rows = conn.execute(
        select(
            notifications.c.parent_id,
            notifications.c.kind,
            events.c.ce_id,
            events.c.type,
            events.c.time,
            events.c.received_at,
            events.c.data,
        )
        .join(events, events.c.id == notifications.c.event_id)
        .where(notifications.c.parent_id.in_(carriers), notifications.c.status == "merged")
        .order_by(notifications.c.created_at)
    ).all()
    riders: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        riders.setdefault(row.parent_id, []).append(
            {
                "kind": row.kind,
                "data": row.data or {},
                "event": {"id": row.ce_id, "type": row.type, "time": row.time or row.received_at},
            }
        )
    return riders


def digest_items(conn: Connection, parents: list[str]) -> dict[str, list[dict[str, Any]]]:
    rows = conn.execute(
        select(
            notifications.c.parent_id, notifications.c.kind, notifications.c.extra, events.c.data
        )
        .join(events, events.c.id == notifications.c.event_id)
        .where(notifications.c.parent_id.in_(parents))
        .order_by(notifications.c.created_at)
    ).all()
    items: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        data = row.data or {}
        product = (row.extra or {}).get("product") or {
            "sku": data.get("sku"),
            "name": None,
            "url": None,
        }
        items.setdefault(row.parent_id, []).append(
            {"kind": row.kind, "product": product, "restock_eta": data.get("restock_eta")}
        )
    return items
