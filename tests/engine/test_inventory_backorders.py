"""Backorders: out of stock means at or below the SKU's threshold, a backorder is told once
until the SKU is really back, the restock date heard with the notice counts, and only
orders still waiting for goods hear about it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from sqlalchemy import Engine, select

from tidings.db.schema import events, notifications
from tidings.engine.rules import BUILTIN_RULES, RuleSet, load_rules, parse_rules
from tidings.events.envelope import CanonicalEvent
from tidings.intake.service import DeliveryDefaults, ingest

RULES = load_rules()
NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SKU = "LAMP-01"


def with_threshold(threshold: int) -> RuleSet:
    raw = yaml.safe_load(BUILTIN_RULES.read_text(encoding="utf-8"))
    raw["policy"]["low_stock_thresholds"] = {"default": 0, SKU: threshold}
    return parse_rules(raw)


def placed(order_id: str, customer_id: str) -> CanonicalEvent:
    return CanonicalEvent(
        "shop",
        f"placed-{order_id}",
        "order.placed",
        None,
        None,
        {
            "order_id": order_id,
            "currency": "EUR",
            "total": 8900,
            "customer": {
                "id": customer_id,
                "email": f"{customer_id}@example.com",
                "time_zone": "UTC",
            },
            "lines": [{"sku": SKU, "name": "Opaline lamp", "quantity": 1}],
        },
    )


def level(available: int, n: int, **more: Any) -> CanonicalEvent:
    return CanonicalEvent(
        "wms",
        f"level-{n}",
        "inventory.level_changed",
        None,
        None,
        {"sku": SKU, "location": "lyon-1", "available": available, **more},
    )


def feed(
    engine: Engine, batch: list[CanonicalEvent], now: datetime, rules: RuleSet = RULES
) -> None:
    with engine.begin() as conn:
        ingest(conn, batch, rules=rules, delivery=DeliveryDefaults(3), now=now, actor="test")


def emails(engine: Engine, kind: str) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(notifications.c.customer_id, notifications.c.order_id).where(
                    notifications.c.kind == kind,
                    notifications.c.channel == "email",
                    notifications.c.status != "suppressed",
                )
            ).all()
        )


def derived(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.scalars(
                select(events.c.type)
                .where(events.c.source == "tidings:inventory")
                .order_by(events.c.received_at, events.c.id)
            ).all()
        )


def test_no_unit_left_is_a_backorder_and_units_coming_back_are_back_in_stock(
    engine: Engine,
) -> None:
    feed(engine, [placed("1", "ana"), level(3, 1)], NOON)
    feed(engine, [level(0, 2)], NOON + timedelta(minutes=1))
    assert emails(engine, "backorder_notice") == [("ana", "1")]
    feed(engine, [level(2, 3)], NOON + timedelta(minutes=2))
    assert derived(engine) == ["inventory.backordered", "inventory.back_in_stock"]


def test_a_per_sku_threshold_still_decides(engine: Engine) -> None:
    rules = with_threshold(5)
    feed(engine, [placed("1", "ana"), level(9, 1)], NOON, rules)
    feed(engine, [level(6, 2)], NOON + timedelta(minutes=1), rules)
    assert emails(engine, "backorder_notice") == []
    feed(engine, [level(5, 3)], NOON + timedelta(minutes=2), rules)  # at the threshold
    assert emails(engine, "backorder_notice") == [("ana", "1")]


def test_stock_hovering_under_the_threshold_does_not_flap(engine: Engine) -> None:
    rules = with_threshold(5)
    feed(engine, [placed("1", "ana"), level(9, 1)], NOON, rules)
    for n, units in enumerate([3, 4, 3, 4, 3, 5], start=2):
        feed(engine, [level(units, n)], NOON + timedelta(minutes=n), rules)
    assert emails(engine, "backorder_notice") == [("ana", "1")]
    assert derived(engine) == ["inventory.backordered"]

    feed(engine, [level(6, 20)], NOON + timedelta(minutes=20), rules)  # above: back
    assert derived(engine) == ["inventory.backordered", "inventory.back_in_stock"]


def test_a_source_repeating_backordered_tells_once(engine: Engine) -> None:
    def said(n: int) -> CanonicalEvent:
        data = {"sku": SKU, "location": None, "available": 0, "restock_eta": None}
        return CanonicalEvent("erp", f"backordered-{n}", "inventory.backordered", None, None, data)

    feed(engine, [placed("1", "ana"), said(1)], NOON)
    feed(engine, [said(2)], NOON + timedelta(days=1))
    feed(engine, [level(0, 3)], NOON + timedelta(days=1, minutes=1))
    assert emails(engine, "backorder_notice") == [("ana", "1")]


def test_a_restock_date_told_with_the_backorder_is_what_later_dates_are_measured_against(
    engine: Engine,
) -> None:
    def eta(date: str, n: int) -> CanonicalEvent:
        data = {"sku": SKU, "available": 0, "restock_eta": date}
        return CanonicalEvent("erp", f"eta-{n}", "inventory.restock_eta_changed", None, None, data)

    feed(engine, [placed("1", "ana"), level(2, 1)], NOON)
    feed(engine, [level(-1, 2, restock_eta="2026-12-05")], NOON + timedelta(minutes=1))
    assert emails(engine, "backorder_notice") == [("ana", "1")]
    feed(engine, [eta("2026-12-06", 3)], NOON + timedelta(minutes=2))  # within the margin
    assert emails(engine, "restock_eta_changed") == []
    feed(engine, [eta("2026-12-12", 4)], NOON + timedelta(minutes=3))  # a week later: news
    assert emails(engine, "restock_eta_changed") == [("ana", "1")]


def test_orders_canceled_or_delivered_in_full_hear_nothing(engine: Engine) -> None:
    def shipped(order_id: str, shipment: str, status: str) -> CanonicalEvent:
        data = {
            "order_id": order_id,
            "shipment_id": shipment,
            "tracking_number": f"TRK-{shipment}",
            "carrier": "colissimo",
            "status": status,
        }
        return CanonicalEvent(
            "carrier", f"{shipment}-{status}", "shipment.status_changed", None, None, data
        )

    orders = [placed(str(n), name) for n, name in enumerate(["ana", "ben", "cy", "dee"], 1)]
    cancel = CanonicalEvent("shop", "cancel-2", "order.canceled", None, None, {"order_id": "2"})
    feed(engine, [*orders, cancel, level(3, 1)], NOON - timedelta(days=30))
    feed(
        engine,
        [
            shipped("3", "s3", "delivered"),  # cy has everything
            shipped("4", "s4a", "delivered"),  # dee still waits for a second parcel
            shipped("4", "s4b", "in_transit"),
        ],
        NOON - timedelta(days=20),
    )
    feed(engine, [level(-1, 2)], NOON)
    assert sorted(emails(engine, "backorder_notice")) == [("ana", "1"), ("dee", "4")]
