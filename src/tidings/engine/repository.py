"""Customers and orders as the engine needs them: enough to route a message."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, update

from tidings.db.dialect import upsert_for
from tidings.db.schema import customers, orders
from tidings.delivery.devices import active_device_ids
from tidings.engine.recipients import Recipient, recipient_from_row

_PROFILE = ("name", "email", "phone", "locale", "time_zone", "segment")


def upsert_customers(conn: Connection, profiles: Iterable[dict[str, Any]], now: datetime) -> None:
    """Create or refresh customer profiles; a field a source leaves out keeps its old value."""
    rows = [
        {"id": p["id"], **{k: p.get(k) for k in _PROFILE}, "preferences": {}}
        | {"created_at": now, "updated_at": now}
        for p in profiles
    ]
    if not rows:
        return
    conn.execute(_customer_upsert(conn.dialect.name), rows)


def upsert_orders(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    conn.execute(_order_upsert(conn.dialect.name), rows)


# Built once per dialect: constructing these expressions costs more than running them.
@functools.cache
def _customer_upsert(dialect: str) -> Any:
    stmt = upsert_for(dialect, customers)
    return stmt.on_conflict_do_update(
        index_elements=[customers.c.id],
        set_={
            **{k: func.coalesce(stmt.excluded[k], customers.c[k]) for k in _PROFILE},
            "updated_at": stmt.excluded.updated_at,
        },
    )


@functools.cache
def _order_upsert(dialect: str) -> Any:
    stmt = upsert_for(dialect, orders)
    return stmt.on_conflict_do_update(
        index_elements=[orders.c.id],
        set_={
            k: func.coalesce(stmt.excluded[k], orders.c[k])
            for k in ("number", "customer_id", "locale", "currency")
        },
    )


def orders_by_id(conn: Connection, order_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    ids = list(set(order_ids))
    if not ids:
        return {}
    result = conn.execute(select(orders).where(orders.c.id.in_(ids))).mappings()
    return {row["id"]: dict(row) for row in result}


def recipients_by_id(conn: Connection, customer_ids: Iterable[str]) -> dict[str, Recipient]:
    ids = list(set(customer_ids))
    if not ids:
        return {}
    result = conn.execute(select(customers).where(customers.c.id.in_(ids))).mappings()
    devices = active_device_ids(conn, list(ids))
    return {
        row["id"]: recipient_from_row(dict(row), push_devices=devices.get(row["id"], ()))
        for row in result
    }


def get_customer(conn: Connection, customer_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(customers).where(customers.c.id == customer_id)).mappings().first()
    return dict(row) if row else None


def set_preferences(
    conn: Connection, customer_id: str, preferences: dict[str, Any], now: datetime
) -> bool:
    result = conn.execute(
        update(customers)
        .where(customers.c.id == customer_id)
        .values(preferences=preferences, updated_at=now)
    )
    return result.rowcount == 1
