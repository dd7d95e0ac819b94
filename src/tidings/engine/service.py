"""Applying stored events: the engine's stateful side, inside intake's transaction.

Facts are read here (recipients, orders, shipment progress, today's contacts, stock),
decisions are made by ``planning.plan``, and its notifications, jobs, timers and audit
entries are written back, all in the caller's transaction.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, update

from tidings.audit.chain import AuditEntry
from tidings.db.dialect import upsert
from tidings.db.ids import new_id
from tidings.db.lookups import chunked
from tidings.db.schema import events, order_lines, orders
from tidings.engine import inventory, repository, returns, shipments
from tidings.engine.planning import (
    SUPPRESSED,
    Facts,
    business_identity,
    key,
    plan,
)
from tidings.engine.recipients import Recipient
from tidings.engine.rules import RuleSet
from tidings.engine.writer import NotificationWriter, Settings
from tidings.events.envelope import CanonicalEvent


def apply_events(
    conn: Connection, fresh: list[tuple[str, CanonicalEvent]], settings: Settings
) -> dict[str, int]:
    """Apply newly stored events in order; returns notifications created per event id."""
    if not fresh:
        return {}
    _remember_customers_and_orders(conn, [event for _, event in fresh], settings.now)
    writer = NotificationWriter(conn, settings)
    known = Known(conn)
    known.prefetch([event for _, event in fresh], writer, settings.rules)
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
        _plan_event(conn, writer, known, event_id, event, settings)
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
            # Later events of the batch refresh the profile field by field: one that names
            # only the customer's id (a payment, a refund) keeps the email it came with.
            known = profiles.setdefault(event.customer["id"], {})
            known.update({k: v for k, v in event.customer.items() if v is not None})
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
    known: Known,
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
    order = known.order(order_id) if order_id else None
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
        found = known.recipients([w.customer_id for w in waiting])
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
        found = known.recipients([customer_id] if customer_id else [])
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
        sent_today=(
            writer.sent_today(
                {r.customer_id: order_of.get(r.customer_id) or order_id for r in recipients if r}
            )
            if _budgeted(rules, event.type)
            else {}
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


def _budgeted(rules: RuleSet, event_type: str) -> bool:
    """Whether a message of this event type can count against the contact budget: only
    non-critical ones do, and only when a budget is set."""
    if rules.policy.contact_budget_per_order_per_day is None:
        return False
    return any(not rule.critical for rule in rules.for_type(event_type))


class Known:
    """The orders and recipients a batch's events name, read for all of them at once and
    kept for the transaction (intake writes both before planning starts, nothing in
    planning changes them). Orders found only while planning (through a tracking number
    or a return) are read when asked for."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._orders: dict[str, dict[str, Any] | None] = {}
        self._recipients: dict[str, Recipient | None] = {}

    def prefetch(
        self, batch: list[CanonicalEvent], writer: NotificationWriter, rules: RuleSet
    ) -> None:
        orders = self.orders([event.order_id for event in batch if event.order_id])
        customers: set[str] = set()
        budgeted: set[tuple[str, str]] = set()
        # The dedupe keys planning will most likely ask about: each matching rule and
        # channel for the customer the event names. Any other is looked up when asked.
        expected: list[str] = []
        for event in batch:
            order = orders.get(event.order_id or "")
            customer_id = (event.customer or {}).get("id") or (order or {}).get("customer_id")
            identity = business_identity(event)
            expected.extend(
                key(rule.id, channel, customer_id, *identity)
                for rule in rules.for_type(event.type)
                for channel in rule.channels
            )
            if customer_id:
                customers.add(customer_id)
                if event.order_id and _budgeted(rules, event.type):
                    budgeted.add((event.order_id, customer_id))
        self.recipients(list(customers))
        writer.count_today(budgeted)
        writer.check_keys(expected)

    def order(self, order_id: str) -> dict[str, Any] | None:
        return self.orders([order_id]).get(order_id)

    def orders(self, order_ids: list[str]) -> dict[str, dict[str, Any]]:
        missing = sorted({i for i in order_ids if i not in self._orders})
        for chunk in chunked(missing):
            found = repository.orders_by_id(self.conn, chunk)
            self._orders.update({i: found.get(i) for i in chunk})
        return {i: row for i in order_ids if (row := self._orders[i]) is not None}

    def recipients(self, customer_ids: list[str]) -> dict[str, Recipient]:
        missing = sorted({i for i in customer_ids if i not in self._recipients})
        for chunk in chunked(missing):
            found = repository.recipients_by_id(self.conn, chunk)
            self._recipients.update({i: found.get(i) for i in chunk})
        return {i: who for i in customer_ids if (who := self._recipients[i]) is not None}


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


__all__ = ["Settings", "apply_events"]
