"""Stock: levels per SKU and location, backorder and back-in-stock transitions, restock
dates, and who is waiting for what. Queries live here; decisions stay small and pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, func, select

from tidings.db.dialect import upsert
from tidings.db.schema import order_lines, orders, sku_states, stock_levels
from tidings.engine.rules import Policy
from tidings.events.envelope import CanonicalEvent

DERIVED_SOURCE = "tidings:inventory"
BACKORDERED = "backordered"
IN_STOCK = "in_stock"


def transition(state: str | None, available: int, threshold: int) -> str | None:
    """The SKU's next state, or None when nothing changed that customers should hear."""
    if available < threshold and state != BACKORDERED:
        return BACKORDERED
    if available > 0 and state == BACKORDERED:
        return IN_STOCK
    return None


def eta_moved(previous: str | None, new: str | None, margin_days: int) -> bool:
    """A restock date is news when there was none, or it moved by more than the margin."""
    if new is None or new == previous:
        return False
    if previous is None:
        return True
    return abs((date.fromisoformat(new) - date.fromisoformat(previous)).days) > margin_days


def apply_level(
    conn: Connection, event: CanonicalEvent, store: Policy, now: datetime
) -> list[CanonicalEvent]:
    """Record a stock level; return the backordered / back-in-stock events it causes."""
    data = event.data
    sku, location = str(data["sku"]), str(data.get("location") or "default")
    stmt = upsert(conn, stock_levels).values(
        sku=sku, location=location, available=int(data["available"]), updated_at=now
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[stock_levels.c.sku, stock_levels.c.location],
            set_={"available": stmt.excluded.available, "updated_at": now},
        )
    )
    if data.get("restock_eta"):
        _set_state(conn, sku, now, restock_eta=str(data["restock_eta"]))
    total = available(conn, sku)
    current = _state(conn, sku)
    following = transition(current.get("state"), total, store.low_stock_threshold(sku))
    if following is None:
        return []
    _set_state(conn, sku, now, state=following)
    kind = "inventory.backordered" if following == BACKORDERED else "inventory.back_in_stock"
    derived = {
        "sku": sku,
        "location": None,
        "available": total,
        "restock_eta": current.get("restock_eta"),
    }
    return [
        CanonicalEvent(
            source=DERIVED_SOURCE,
            id=f"{sku}/{following}/{event.source}/{event.id}",
            type=kind,
            subject=f"sku/{sku}",
            time=event.time,
            data=derived,
        )
    ]


def mark_backordered(conn: Connection, sku: str, now: datetime) -> None:
    """A source said so directly: remember it, so restocking later is news."""
    _set_state(conn, sku, now, state=BACKORDERED)


def restock_news(
    conn: Connection, event: CanonicalEvent, store: Policy, now: datetime
) -> tuple[bool, str | None]:
    """Whether a restock-date change is worth telling, and the date customers last heard."""
    sku, new = str(event.data["sku"]), event.data.get("restock_eta")
    previous = _state(conn, sku).get("notified_eta")
    news = eta_moved(previous, new, store.restock_eta_margin_days)
    _set_state(conn, sku, now, restock_eta=new, **({"notified_eta": new} if news else {}))
    return news, previous


def available(conn: Connection, sku: str) -> int:
    total = conn.execute(
        select(func.coalesce(func.sum(stock_levels.c.available), 0)).where(
            stock_levels.c.sku == sku
        )
    ).scalar()
    return int(total or 0)


@dataclass(frozen=True, slots=True)
class Waiting:
    customer_id: str
    order_id: str
    product_name: str | None


def open_orders_with(conn: Connection, sku: str) -> list[Waiting]:
    rows = conn.execute(
        select(orders.c.customer_id, orders.c.id, order_lines.c.name)
        .join(order_lines, order_lines.c.order_id == orders.c.id)
        .where(
            order_lines.c.sku == sku, orders.c.status == "open", orders.c.customer_id.is_not(None)
        )
        .order_by(orders.c.created_at)
    ).all()
    return [Waiting(row.customer_id, row.id, row.name) for row in rows]


def product_name(conn: Connection, sku: str) -> str | None:
    """What the store calls a SKU, as its orders named it."""
    name = conn.execute(
        select(order_lines.c.name)
        .where(order_lines.c.sku == sku, order_lines.c.name.is_not(None))
        .limit(1)
    ).scalar()
    return str(name) if name else None


def _state(conn: Connection, sku: str) -> dict[str, Any]:
    row = conn.execute(select(sku_states).where(sku_states.c.sku == sku)).mappings().first()
    return dict(row) if row else {}


def _set_state(conn: Connection, sku: str, now: datetime, **values: Any) -> None:
    stmt = upsert(conn, sku_states).values(
        sku=sku,
        state=values.get("state", IN_STOCK),
        restock_eta=values.get("restock_eta"),
        notified_eta=values.get("notified_eta"),
        updated_at=now,
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[sku_states.c.sku], set_={**values, "updated_at": now}
        )
    )
