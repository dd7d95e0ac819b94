"""One parcel, whichever source reports it, and the furthest status it has reached.

Carrier aggregators (AfterShip, EasyPost) name a parcel by its tracking number; Shopify's
fulfillment events name it only by the fulfillment id; a fulfillment carries both. The
``shipments`` row is keyed by the tracking number once one is known (else by the
shipment id) and keeps the shipment id next to it, so a scan naming either finds the
same progress and a lower or repeated status from another source is caught.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, bindparam, delete, or_, select

from tidings.db.dialect import upsert_for
from tidings.db.schema import events, shipments
from tidings.engine.policy import SHIPMENT_RANK
from tidings.events.envelope import CanonicalEvent

NO_RANK, NO_STATUS = -1, "unknown"  # stored for a parcel seen only in side states


@dataclass(frozen=True, slots=True)
class Parcel:
    key: str  # the row it is kept under: the tracking number once known
    tracking_number: str | None
    shipment_id: str | None  # the id to keep on the row
    order_id: str | None
    rank: int | None  # the furthest ranked status reached, None before any
    status: str | None
    # Rows that turned out to be this parcel under another name; folded in on advance.
    absorbed: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "tracking_number": self.tracking_number,
            "shipment_id": self.shipment_id,
            "order_id": self.order_id,
            "rank": self.rank,
            "status": self.status,
            "absorbed": self.absorbed,
        }


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def fold(
    rows: Sequence[Mapping[str, Any]],
    *,
    tracking_number: str | None,
    shipment_id: str | None,
    told: str | None = None,
) -> Parcel:
    """The parcel an event naming ``tracking_number`` and/or ``shipment_id`` is about, from
    every stored row known under either name. ``told`` is the tracking number the event's
    source gave with ``shipment_id`` before, for an event that names only the latter."""
    by_key = {str(row["key"]): row for row in rows}
    # A row found through the shipment id but keyed otherwise is keyed by the tracking
    # number that an event naming both brought.
    known = (
        tracking_number
        or told
        or next((k for k in sorted(by_key) if shipment_id is not None and k != shipment_id), None)
    )
    key = known or shipment_id
    if key is None:
        raise ValueError("a shipment event names neither a tracking number nor a shipment id")
    own = by_key.get(key)
    ranked = [row for row in rows if row["rank"] != NO_RANK]
    furthest = max(ranked, key=lambda row: int(row["rank"]), default=None)
    # An id a source used without the tracking number is the one worth keeping: it is the
    # only name that source will give the parcel again. Otherwise the first one kept stays.
    named_alone = shipment_id is not None and (
        tracking_number is None
        or any(k == shipment_id or row["shipment_id"] == shipment_id for k, row in by_key.items())
    )
    kept_id = shipment_id if named_alone else (_text((own or {}).get("shipment_id")) or shipment_id)
    order_ids = [_text(row["order_id"]) for row in ([own] if own else []) + list(rows)]
    return Parcel(
        key=key,
        tracking_number=known,
        shipment_id=kept_id,
        order_id=next((o for o in order_ids if o), None),
        rank=int(furthest["rank"]) if furthest else None,
        status=str(furthest["status"]) if furthest else None,
        absorbed=tuple(sorted(k for k in by_key if k != key)),
    )


def reached_after(parcel: Parcel, status: str) -> tuple[int, str]:
    """(rank, status) to keep once ``status`` is reported: side states do not move it."""
    rank = SHIPMENT_RANK.get(status)
    if rank is not None and (parcel.rank is None or rank > parcel.rank):
        return rank, status
    if parcel.rank is None:
        return NO_RANK, NO_STATUS
    return parcel.rank, parcel.status or NO_STATUS


def with_known_names(event: CanonicalEvent, tracking_number: str | None) -> CanonicalEvent:
    """The event as planning should see it: under the tracking number its parcel is known
    by, so the same status from two sources is one message and a newer status from one
    source supersedes a held one from the other."""
    if event.data.get("tracking_number") or tracking_number is None:
        return event
    data = {**event.data, "tracking_number": tracking_number}
    return CanonicalEvent(event.source, event.id, event.type, event.subject, event.time, data)


# -- queries ------------------------------------------------------------------------


def find(conn: Connection, event: CanonicalEvent) -> Parcel:
    data = event.data
    tracking_number = _text(data.get("tracking_number"))
    shipment_id = _text(data.get("shipment_id"))
    if tracking_number == shipment_id:
        shipment_id = None  # a source that lends the tracking number as its id
    rows = _rows(conn, tracking_number, shipment_id)
    told = None
    if tracking_number is None and shipment_id is not None:
        if all(row["key"] == shipment_id for row in rows):
            told = _told_with(conn, event, shipment_id)
            if told is not None:
                rows = _rows(conn, told, shipment_id)
    return fold(rows, tracking_number=tracking_number, shipment_id=shipment_id, told=told)


def advance(
    conn: Connection, parcel: Parcel, status: str, order_id: str | None, now: datetime
) -> None:
    """Remember the furthest ranked status reached, under the parcel's one row."""
    rank, reached = reached_after(parcel, status)
    if parcel.absorbed:
        conn.execute(delete(shipments).where(shipments.c.key.in_(parcel.absorbed)))
    conn.execute(
        _parcel_upsert(conn.dialect.name),
        {
            "key": parcel.key,
            "shipment_id": parcel.shipment_id,
            "order_id": order_id or parcel.order_id,
            "rank": rank,
            "status": reached,
            "updated_at": now,
        },
    )


_KEPT = ("shipment_id", "order_id", "rank", "status", "updated_at")


# Built once per dialect: constructing it costs more than running it.
@functools.cache
def _parcel_upsert(dialect: str) -> Any:
    stmt = upsert_for(dialect, shipments)
    return stmt.on_conflict_do_update(
        index_elements=[shipments.c.key],
        set_={
            c: stmt.excluded[c] for c in ("shipment_id", "order_id", "rank", "status", "updated_at")
        },
    )


def _rows(
    conn: Connection, tracking_number: str | None, shipment_id: str | None
) -> list[dict[str, Any]]:
    names = [n for n in (tracking_number, shipment_id) if n is not None]
    if not names:
        return []
    query = _parcel_rows(with_shipment_id=shipment_id is not None)
    found = conn.execute(query, {"names": names, "shipment_id": shipment_id}).mappings()
    return [dict(row) for row in found]


@functools.cache
def _parcel_rows(*, with_shipment_id: bool) -> Any:
    where: list[ColumnElement[bool]] = [shipments.c.key.in_(bindparam("names", expanding=True))]
    if with_shipment_id:
        where.append(shipments.c.shipment_id == bindparam("shipment_id"))
    # Locked, so two sources telling the same parcel at once are taken one after the other.
    return select(shipments).where(or_(*where)).order_by(shipments.c.key).with_for_update()


def _told_with(conn: Connection, event: CanonicalEvent, shipment_id: str) -> str | None:
    """The tracking number this source gave together with ``shipment_id`` in an earlier
    event about the same order. Needed when another source named the parcel first: the row
    then keeps that source's id, and only the events say which tracking number this is."""
    if event.order_id is None:
        return None
    told = conn.execute(
        select(events.c.data)
        .where(
            events.c.order_id == event.order_id,
            events.c.source == event.source,
            events.c.type == "shipment.status_changed",
        )
        .order_by(events.c.received_at.desc())
    ).scalars()
    for data in told:
        if isinstance(data, Mapping) and _text(data.get("shipment_id")) == shipment_id:
            tracking_number = _text(data.get("tracking_number"))
            if tracking_number is not None and tracking_number != shipment_id:
                return tracking_number
    return None
