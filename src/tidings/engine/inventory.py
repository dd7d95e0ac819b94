"""Stock: levels per SKU and location, backorder and back-in-stock transitions, restock
dates, who is waiting for what, and how far a restock's waves have got. Queries live
here; decisions stay small and pure.

Out of stock means the units available across locations are at or below the SKU's
threshold (``policy.low_stock_thresholds``, default 0: no unit left). Once backordered,
a SKU is back in stock only when the total rises above the threshold; until then more
drops, rises that stay at or under it, and sources saying "backordered" again are one
backorder episode, told once.

A restock episode runs from a back-in-stock transition to the next backorder. Its
subscribers are told in waves; everyone told in one episode adds up to at most
``back_in_stock_wave_multiple`` x the units available when the wave goes out. A wave
that has used that budget ends the episode's waves until stock rises; a rise schedules
the next wave, no sooner than the wave interval after the last one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, case, exists, func, select, update

from tidings.db.dialect import upsert
from tidings.db.schema import (
    order_lines,
    orders,
    shipments,
    sku_states,
    stock_levels,
    stock_subscriptions,
)
from tidings.db.schema import timers as timer_rows
from tidings.engine import timers
from tidings.engine.rules import Policy
from tidings.events.envelope import CanonicalEvent

DERIVED_SOURCE = "tidings:inventory"
BACKORDERED = "backordered"
IN_STOCK = "in_stock"
WAVE_KIND = "back_in_stock_wave"
DEFAULT_LOCATION = "default"
DELIVERED = "delivered"


def out_of_stock(available: int, threshold: int) -> bool:
    return available <= threshold


def transition(state: str | None, available: int, threshold: int) -> str | None:
    """The SKU's next state, or None when nothing changed that customers should hear.

    Leaving a backorder needs more than the threshold, not merely more than before, so
    stock hovering at or under it does not flap between notices."""
    if state != BACKORDERED and out_of_stock(available, threshold):
        return BACKORDERED
    if state == BACKORDERED and not out_of_stock(available, threshold):
        return IN_STOCK
    return None


def wave_size(*, available: int, threshold: int, multiple: float, told: int) -> int:
    """How many more subscribers a restock episode may tell now: the episode's total
    stays within ``multiple`` x the units available, and nothing goes out of stock."""
    if out_of_stock(available, threshold) or available <= 0:
        return 0
    return max(0, math.floor(multiple * available) - told)


def eta_moved(previous: str | None, new: str | None, margin_days: int) -> bool:
    """A restock date is news when there was none, or it moved by more than the margin."""
    if new is None or new == previous:
        return False
    if previous is None:
        return True
    return abs((date.fromisoformat(new) - date.fromisoformat(previous)).days) > margin_days


def returned_to_stock(event: CanonicalEvent) -> list[CanonicalEvent]:
    """The stock a restocked return puts back: one level change per SKU and location.

    Its id names the return (per source, as return ids of two systems may collide), so
    the same return restocked twice by its source adds the units once."""
    data = event.data
    if event.type != "return.status_changed" or data.get("status") != "restocked":
        return []
    location = str(data.get("location") or DEFAULT_LOCATION)
    units: dict[str, int] = {}
    for line in data.get("lines") or []:
        units[str(line["sku"])] = units.get(str(line["sku"]), 0) + int(line["quantity"])
    return [
        CanonicalEvent(
            source=DERIVED_SOURCE,
            id=f"{sku}/{location}/returned/{event.source}/{data.get('return_id')}",
            type="inventory.level_changed",
            subject=f"sku/{sku}",
            time=event.time,
            data={
                "sku": sku,
                "location": location,
                "returned": quantity,
                "return_id": data.get("return_id"),
            },
        )
        for sku, quantity in units.items()
        if quantity > 0
    ]


def apply_level(
    conn: Connection, event: CanonicalEvent, store: Policy, now: datetime
) -> list[CanonicalEvent]:
    """Record a stock level; return the backordered / back-in-stock events it causes."""
    data = event.data
    sku, location = str(data["sku"]), str(data.get("location") or DEFAULT_LOCATION)
    if event.source == DERIVED_SOURCE and "returned" in data:
        _add_units(conn, sku, location, int(data["returned"]), now)
    else:
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
        if current.get("state") == IN_STOCK:
            resume_waves(conn, sku, total, store, now)
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


def mark_backordered(conn: Connection, sku: str, now: datetime) -> bool:
    """A source said so directly: remember it, so restocking later is news. Returns
    whether this starts a backorder; one already running is not news again."""
    started = _state(conn, sku).get("state") != BACKORDERED
    _set_state(conn, sku, now, state=BACKORDERED)
    return started


def back_in_stock(
    conn: Connection, event_id: str, event: CanonicalEvent, store: Policy, now: datetime
) -> None:
    """Start a restock episode's waves. A source saying "back in stock" while an episode
    runs continues it: a fresh budget would tell more than the units allow."""
    sku = str(event.data["sku"])
    if event.source != DERIVED_SOURCE:
        running = _state(conn, sku).get("state") != BACKORDERED and wave_progress(conn, sku)
        _set_state(conn, sku, now, state=IN_STOCK)
        if running:
            resume_waves(conn, sku, available(conn, sku), store, now)
            return
    stmt = upsert(conn, timer_rows).values(
        key=wave_key(sku),
        kind=WAVE_KIND,
        due_at=now,
        payload={"event_id": event_id, "sku": sku, "wave": 1, "told": 0},
        status=timers.PENDING,
        attempts=0,
        updated_at=now,
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[timer_rows.c.key],
            set_={c: stmt.excluded[c] for c in ("due_at", "payload", "status", "attempts")}
            | {"updated_at": now},
        )
    )


def wave_key(sku: str) -> str:
    """One wave timer per SKU: it carries the running episode's progress."""
    return f"wave:{sku}"


def wave_progress(conn: Connection, sku: str) -> dict[str, Any] | None:
    """The running episode: which event started it, the next wave's number, how many
    were told, when the next wave may go."""
    payload = conn.execute(
        select(timer_rows.c.payload).where(timer_rows.c.key == wave_key(sku))
    ).scalar()
    return dict(payload) if payload else None


def record_wave(conn: Connection, sku: str, progress: Mapping[str, Any], now: datetime) -> None:
    """Keep the episode's progress on its timer, finished until stock rises again."""
    stmt = upsert(conn, timer_rows).values(
        key=wave_key(sku),
        kind=WAVE_KIND,
        due_at=now,
        payload=dict(progress),
        status=timers.DONE,
        attempts=0,
        updated_at=now,
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[timer_rows.c.key],
            set_={"payload": stmt.excluded.payload, "status": timers.DONE, "updated_at": now},
        )
    )


def resume_waves(conn: Connection, sku: str, total: int, store: Policy, now: datetime) -> None:
    """Stock rose during an episode: schedule its next wave if it may tell anyone.

    Read without a lock: the count told only grows, so a stale one can only re-arm a wave
    that then finds nothing to do. The update waits for a wave that is running (it holds
    the row, see ``scheduled.run``), so the re-arm lands after it rather than under it."""
    progress = wave_progress(conn, sku)
    if progress is None:
        return
    size = wave_size(
        available=total,
        threshold=store.low_stock_threshold(sku),
        multiple=store.back_in_stock_wave_multiple,
        told=int(progress.get("told", 0)),
    )
    if size <= 0 or not _anyone_waiting(conn, sku):
        return
    next_at = progress.get("next_at")
    due = max(now, datetime.fromisoformat(next_at)) if next_at else now
    conn.execute(
        update(timer_rows)
        .where(timer_rows.c.key == wave_key(sku))
        .values(status=timers.PENDING, due_at=due, attempts=0, updated_at=now)
    )


def restock_news(
    conn: Connection, event: CanonicalEvent, store: Policy, now: datetime
) -> tuple[bool, str | None]:
    """Whether a restock-date change is worth telling, and the date customers last heard."""
    sku, new = str(event.data["sku"]), event.data.get("restock_eta")
    previous = _state(conn, sku).get("notified_eta")
    news = eta_moved(previous, new, store.restock_eta_margin_days)
    _set_state(conn, sku, now, restock_eta=new, **({"notified_eta": new} if news else {}))
    return news, previous


def told_restock_date(conn: Connection, sku: str, eta: str, now: datetime) -> None:
    """Customers heard this date with their backorder notice: a later date is measured
    against it, so a change within the margin stays quiet."""
    _set_state(conn, sku, now, notified_eta=eta)


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
    """Orders still waiting for the SKU: not canceled, and not already delivered in full
    (an order stays open after delivery, and its customer has nothing left to wait for)."""
    delivered = (
        select(shipments.c.order_id)
        .where(shipments.c.order_id.is_not(None))
        .group_by(shipments.c.order_id)
        .having(func.sum(case((shipments.c.status == DELIVERED, 0), else_=1)) == 0)
    )
    rows = conn.execute(
        select(orders.c.customer_id, orders.c.id, order_lines.c.name)
        .join(order_lines, order_lines.c.order_id == orders.c.id)
        .where(
            order_lines.c.sku == sku,
            orders.c.status == "open",
            orders.c.customer_id.is_not(None),
            orders.c.id.not_in(delivered),
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


def _anyone_waiting(conn: Connection, sku: str) -> bool:
    return bool(
        conn.execute(
            select(
                exists().where(
                    stock_subscriptions.c.sku == sku, stock_subscriptions.c.notified_at.is_(None)
                )
            )
        ).scalar()
    )


def _add_units(conn: Connection, sku: str, location: str, units: int, now: datetime) -> None:
    stmt = upsert(conn, stock_levels).values(
        sku=sku, location=location, available=units, updated_at=now
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[stock_levels.c.sku, stock_levels.c.location],
            set_={"available": stock_levels.c.available + units, "updated_at": now},
        )
    )


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
