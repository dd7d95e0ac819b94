"""Shipment updates through the engine: holds, supersede, order, bypass, cross-source
dedupe, lookup by tracking number; restock-date margins; daily digests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from tidings.db.schema import customers, delivery_jobs, notifications
from tidings.engine.rules import load_rules
from tidings.engine.scheduled import run_due
from tidings.events.envelope import CanonicalEvent
from tidings.intake.service import DeliveryDefaults, ingest

RULES = load_rules()
NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
CUSTOMER = {
    "id": "cam",
    "name": "Camille",
    "email": "cam@example.fr",
    "time_zone": "UTC",
    "locale": "fr",
}


def placed() -> CanonicalEvent:
    return CanonicalEvent(
        "shop",
        "placed-1042",
        "order.placed",
        None,
        None,
        {
            "order_id": "1042",
            "order_number": "#1042",
            "currency": "EUR",
            "total": 8900,
            "customer": CUSTOMER,
            "lines": [{"sku": "LAMP-01", "name": "Lamp", "quantity": 1}],
        },
    )


def scan(
    status: str, *, source: str = "aftership", order: bool = True, n: int = 0
) -> CanonicalEvent:
    data: dict[str, Any] = {
        "shipment_id": "shp_1",
        "tracking_number": "6A123",
        "carrier": "colissimo",
        "status": status,
    }
    if order:
        data["order_id"] = "1042"
    return CanonicalEvent(
        source, f"{source}-{status}-{n}", "shipment.status_changed", None, None, data
    )


def feed(engine: Engine, events: list[CanonicalEvent], now: datetime = NOON) -> None:
    with engine.begin() as conn:
        ingest(conn, events, rules=RULES, delivery=DeliveryDefaults(3), now=now, actor="test")


def email_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(
                    notifications.c.kind,
                    notifications.c.status,
                    notifications.c.reason,
                    notifications.c.scheduled_for,
                )
                .where(notifications.c.channel == "email", notifications.c.kind != "order")
                .order_by(notifications.c.created_at, notifications.c.id)
            ).all()
        )


def test_in_transit_is_held_then_superseded_by_out_for_delivery(engine: Engine) -> None:
    feed(engine, [placed(), scan("info_received")])
    feed(engine, [scan("in_transit")], NOON + timedelta(minutes=1))
    held = email_rows(engine)[-1]
    assert (held.kind, held.status) == ("shipment_in_transit", "held")
    assert held.scheduled_for == NOON + timedelta(minutes=11)
    feed(engine, [scan("out_for_delivery")], NOON + timedelta(minutes=5))
    rows = email_rows(engine)
    assert [(r.kind, r.status) for r in rows] == [
        ("shipment_shipped", "queued"),
        ("shipment_in_transit", "superseded"),
        ("shipment_out_for_delivery", "queued"),
    ]
    assert "superseded by a newer update" in rows[1].reason
    with engine.connect() as conn:
        jobs = dict(
            conn.execute(
                select(notifications.c.kind, delivery_jobs.c.status)
                .join(delivery_jobs, delivery_jobs.c.notification_id == notifications.c.id)
                .where(notifications.c.channel == "email")
            ).all()
        )
    assert jobs["shipment_in_transit"] == "canceled"


def test_late_lower_status_is_recorded_and_suppressed(engine: Engine) -> None:
    feed(engine, [placed(), scan("delivered")])
    feed(engine, [scan("in_transit"), scan("out_for_delivery")], NOON + timedelta(hours=1))
    rows = email_rows(engine)
    assert [(r.kind, r.status) for r in rows] == [
        ("shipment_delivered", "queued"),  # first seen as delivered: only that
        ("shipment_in_transit", "suppressed"),
        ("shipment_out_for_delivery", "suppressed"),
    ]
    assert rows[1].reason == "'in_transit' is older than 'delivered', already reached"


def test_exceptions_bypass_holds_and_the_same_status_from_two_sources_is_one_message(
    engine: Engine,
) -> None:
    feed(engine, [placed(), scan("in_transit", source="shopify")])
    feed(engine, [scan("in_transit", source="aftership")], NOON + timedelta(minutes=1))
    feed(engine, [scan("exception")], NOON + timedelta(minutes=2))
    rows = email_rows(engine)
    assert [(r.kind, r.status) for r in rows] == [
        ("shipment_in_transit", "superseded"),
        ("shipment_in_transit", "suppressed"),  # the second source's copy, on record
        ("shipment_exception", "queued"),
    ]
    assert rows[1].reason == "'in_transit' was already reached"
    assert rows[2].scheduled_for is None


def test_a_scan_with_only_a_tracking_number_reaches_the_orders_customer(engine: Engine) -> None:
    feed(engine, [placed(), scan("info_received")])
    feed(
        engine,
        [scan("out_for_delivery", source="easypost", order=False)],
        NOON + timedelta(hours=3),
    )
    with engine.connect() as conn:
        row = conn.execute(
            select(notifications.c.customer_id, notifications.c.order_id).where(
                notifications.c.kind == "shipment_out_for_delivery"
            )
        ).first()
    assert row is not None
    assert (row.customer_id, row.order_id) == ("cam", "1042")


def eta(date: str, n: int) -> CanonicalEvent:
    return CanonicalEvent(
        "wms",
        f"eta-{n}",
        "inventory.restock_eta_changed",
        None,
        None,
        {"sku": "LAMP-01", "available": 0, "restock_eta": date},
    )


def test_restock_date_changes_within_the_margin_are_not_news(engine: Engine) -> None:
    feed(engine, [placed(), eta("2026-12-05", 1)])
    feed(engine, [eta("2026-12-06", 2)], NOON + timedelta(hours=1))  # 1 day: within 2
    feed(engine, [eta("2026-12-12", 3)], NOON + timedelta(hours=2))  # 6 days later: news
    with engine.connect() as conn:
        told = conn.execute(
            select(notifications.c.event_id).where(
                notifications.c.kind == "restock_eta_changed", notifications.c.channel == "email"
            )
        ).all()
    assert len(told) == 2


def test_digest_customers_get_one_message_at_their_hour(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed(engine, [placed()])
    with engine.begin() as conn:
        conn.execute(
            update(customers)
            .where(customers.c.id == "cam")
            .values(preferences={"digest": {"categories": ["inventory"], "hour": 19}})
        )
    feed(engine, [eta("2026-12-05", 1)], NOON)
    feed(engine, [eta("2026-12-20", 2)], NOON + timedelta(hours=2))
    rows = email_rows(engine)
    assert {r.status for r in rows} == {"held"}
    assert {r.scheduled_for for r in rows} == {datetime(2026, 11, 23, 19, tzinfo=UTC)}

    monkeypatch.setattr(
        "tidings.engine.scheduled.utcnow", lambda: datetime(2026, 11, 23, 19, 0, 1, tzinfo=UTC)
    )
    assert run_due(engine, rules=RULES, max_attempts=3, actor="test") >= 1
    rows = email_rows(engine)
    assert sorted((r.kind, r.status) for r in rows) == [
        ("inventory_digest", "queued"),
        ("restock_eta_changed", "merged"),
        ("restock_eta_changed", "merged"),
    ]
