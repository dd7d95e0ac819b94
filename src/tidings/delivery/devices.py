"""A customer's push devices: FCM registration tokens and Web Push subscriptions.

The address is stored in its canonical form (``engine.addresses``) and found again by the
SHA-256 of that text, so registering the same device twice keeps one row. A device is
never deleted: removing it records when and why, which the audit trail and support need.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, select, update

from tidings.audit.chain import AuditEntry, append
from tidings.db.dialect import upsert
from tidings.db.ids import new_id
from tidings.db.schema import devices

DeviceKind = Literal["fcm", "webpush"]


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    customer_id: str
    kind: str
    address: str  # the FCM token, or the subscription as canonical JSON
    created_at: datetime


def address_hash(address: str) -> str:
    return hashlib.sha256(address.encode("utf-8")).hexdigest()


def _device(row: Any) -> Device:
    return Device(
        id=row["id"],
        customer_id=row["customer_id"],
        kind=row["kind"],
        address=row["address"],
        created_at=row["created_at"],
    )


def register_device(
    conn: Connection,
    *,
    customer_id: str,
    kind: DeviceKind,
    address: str,
    actor: str,
    now: datetime,
) -> tuple[Device, bool]:
    """Add a device, or find the one with this address; returns it and whether it is new.

    A device removed earlier (token reported dead, or removed by the customer) becomes
    active again under its old id when the same address is registered anew: the browser
    or app has just proven it works. ``address`` must already be canonical.
    """
    digest = address_hash(address)
    where = (devices.c.customer_id == customer_id, devices.c.address_hash == digest)
    row = conn.execute(select(devices).where(*where)).mappings().first()
    if row is not None and row["removed_at"] is None:
        return _device(row), False
    if row is not None:
        conn.execute(update(devices).where(*where).values(removed_at=None, removed_reason=None))
        device = _device(row)
    else:
        device = Device(new_id("dev"), customer_id, kind, address, now)
        inserted = conn.execute(
            upsert(conn, devices)
            .values(
                id=device.id,
                customer_id=customer_id,
                kind=kind,
                address=address,
                address_hash=digest,
                created_at=now,
            )
            .on_conflict_do_nothing()
        )
        if inserted.rowcount == 0:  # the same address registered concurrently: theirs wins
            row = conn.execute(select(devices).where(*where)).mappings().one()
            return _device(row), False
    append(
        conn,
        [AuditEntry(actor, "device.registered", "customer", customer_id, {"device": device.id})],
        at=now,
    )
    return device, True


def active_devices(conn: Connection, customer_id: str) -> list[Device]:
    rows = conn.execute(
        select(devices)
        .where(devices.c.customer_id == customer_id, devices.c.removed_at.is_(None))
        .order_by(devices.c.created_at, devices.c.id)
    ).mappings()
    return [_device(row) for row in rows]


def active_device_ids(conn: Connection, customer_ids: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Per customer, the ids of their active devices; customers with none are left out."""
    ids = sorted(set(customer_ids))
    if not ids:
        return {}
    rows = conn.execute(
        select(devices.c.customer_id, devices.c.id)
        .where(devices.c.customer_id.in_(ids), devices.c.removed_at.is_(None))
        .order_by(devices.c.customer_id, devices.c.created_at, devices.c.id)
    )
    found: dict[str, list[str]] = {}
    for customer_id, device_id in rows:
        found.setdefault(customer_id, []).append(device_id)
    return {customer_id: tuple(device_ids) for customer_id, device_ids in found.items()}


def remove_device(
    conn: Connection,
    *,
    customer_id: str,
    address: str,
    reason: str,
    now: datetime,
    actor: str = "delivery",
) -> bool:
    """Stop sending to this address (a provider said the token is dead); True if it was
    active. ``address`` is the device's stored address, as ``active_devices`` gives it."""
    device_id = conn.execute(
        update(devices)
        .where(
            devices.c.customer_id == customer_id,
            devices.c.address_hash == address_hash(address),
            devices.c.removed_at.is_(None),
        )
        .values(removed_at=now, removed_reason=reason)
        .returning(devices.c.id)
    ).scalar()
    if device_id is None:
        return False
    _audit_removal(
        conn, actor=actor, customer_id=customer_id, device_id=device_id, reason=reason, now=now
    )
    return True


def remove_device_by_id(
    conn: Connection,
    *,
    customer_id: str,
    device_id: str,
    reason: str,
    actor: str,
    now: datetime,
) -> bool | None:
    """Remove one of the customer's devices. None when the customer has no such device;
    False when it was already removed (the first removal and its reason are kept)."""
    row = (
        conn.execute(
            select(devices.c.removed_at).where(
                devices.c.id == device_id, devices.c.customer_id == customer_id
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    if row["removed_at"] is not None:
        return False
    conn.execute(
        update(devices)
        .where(devices.c.id == device_id, devices.c.removed_at.is_(None))
        .values(removed_at=now, removed_reason=reason)
    )
    _audit_removal(
        conn, actor=actor, customer_id=customer_id, device_id=device_id, reason=reason, now=now
    )
    return True


def _audit_removal(
    conn: Connection, *, actor: str, customer_id: str, device_id: str, reason: str, now: datetime
) -> None:
    append(
        conn,
        [
            AuditEntry(
                actor,
                "device.removed",
                "customer",
                customer_id,
                {"device": device_id, "reason": reason},
            )
        ],
        at=now,
    )
