"""Back in stock: all told in one restock stay within a multiple of the units available,
none once stock is gone, a later restock carries on, each subscription told once;
backorder notices reach customers with open orders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from tidings.db.schema import notifications, stock_subscriptions
from tidings.engine import repository
from tidings.engine.rules import load_rules
from tidings.engine.scheduled import run_due, subscribe
from tidings.events.envelope import CanonicalEvent
from tidings.intake.service import DeliveryDefaults, ingest

RULES = load_rules()
NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SKU = "LAMP-01"


def level(available: int, n: int) -> CanonicalEvent:
    return CanonicalEvent(
        "https://wms.example.com",
        f"level-{n}",
        "inventory.level_changed",
        None,
        None,
        {"sku": SKU, "location": "lyon-1", "available": available},
    )


def feed(engine: Engine, events: list[CanonicalEvent], now: datetime) -> None:
    with engine.begin() as conn:
        ingest(conn, events, rules=RULES, delivery=DeliveryDefaults(3), now=now, actor="test")


def back_in_stock_told(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).where(
                    notifications.c.kind == "back_in_stock",
                    notifications.c.channel == "email",
                    notifications.c.status != "suppressed",
                )
            ).scalar()
            or 0
        )


def run_timers(engine: Engine, monkeypatch: pytest.MonkeyPatch, now: datetime) -> int:
    monkeypatch.setattr("tidings.engine.scheduled.utcnow", lambda: now)
    return run_due(engine, rules=RULES, max_attempts=3, actor="test")


@pytest.fixture
def subscribers(engine: Engine) -> list[str]:
    ids = [f"cus_{n:03d}" for n in range(100)]
    profiles: list[dict[str, Any]] = [
        {"id": i, "name": f"Customer {i}", "email": f"{i}@example.com", "time_zone": "UTC"}
        for i in ids
    ]
    with engine.begin() as conn:
        repository.upsert_customers(conn, profiles, NOON)
        for offset, customer_id in enumerate(ids):
            subscribe(
                conn,
                sku=SKU,
                customer_id=customer_id,
                now=NOON - timedelta(days=1) + timedelta(seconds=offset),
            )
    return ids


def waiting(engine: Engine) -> int:
    with engine.connect() as conn:
        count = conn.execute(
            select(func.count()).where(stock_subscriptions.c.notified_at.is_(None))
        ).scalar()
    return int(count or 0)


def told_per_customer(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(notifications.c.customer_id, func.count())
            .where(notifications.c.kind == "back_in_stock", notifications.c.channel == "email")
            .group_by(notifications.c.customer_id)
        ).all()
    return {str(customer_id): int(count) for customer_id, count in rows}


def test_waves_never_exceed_the_multiple_and_stop_when_stock_is_gone(
    engine: Engine, subscribers: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    interval = RULES.policy.back_in_stock_wave_interval + timedelta(minutes=1)
    multiple = RULES.policy.back_in_stock_wave_multiple
    feed(engine, [level(-2, 1)], NOON)  # oversold: backordered
    feed(engine, [level(5, 2)], NOON)  # restocked: back in stock, first wave due now
    now = NOON
    for _ in range(6):  # stock stays at 5 for three hours of wave intervals
        run_timers(engine, monkeypatch, now)
        now += interval
    first = back_in_stock_told(engine)
    assert 0 < first <= multiple * 5

    feed(engine, [level(0, 3)], now)  # sold out again
    for _ in range(4):
        now += interval
        run_timers(engine, monkeypatch, now)
    assert back_in_stock_told(engine) == first
    assert waiting(engine) == 100 - first

    feed(engine, [level(50, 4)], now)  # a restock: the rest are told, nobody twice
    for _ in range(4):
        run_timers(engine, monkeypatch, now)
        now += interval
    assert waiting(engine) == 0
    assert told_per_customer(engine) == dict.fromkeys(subscribers, 1)


def test_more_stock_during_a_restock_tells_more_after_the_interval(
    engine: Engine, subscribers: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    interval = RULES.policy.back_in_stock_wave_interval
    feed(engine, [level(-1, 1), level(5, 2)], NOON)
    run_timers(engine, monkeypatch, NOON)
    assert back_in_stock_told(engine) == 10

    feed(engine, [level(8, 3)], NOON + timedelta(minutes=5))  # 3 more units arrive
    assert run_timers(engine, monkeypatch, NOON + timedelta(minutes=6)) == 0  # not yet
    run_timers(engine, monkeypatch, NOON + interval)
    assert back_in_stock_told(engine) == 16  # 2 x 8 over the whole restock, not 10 + 16

    feed(engine, [level(6, 4)], NOON + interval + timedelta(minutes=1))  # sales
    feed(engine, [level(7, 5)], NOON + interval + timedelta(minutes=2))  # still under 16
    assert run_timers(engine, monkeypatch, NOON + 3 * interval) == 0
    assert back_in_stock_told(engine) == 16


def test_a_source_saying_back_in_stock_again_does_not_reset_the_budget(
    engine: Engine, subscribers: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    feed(engine, [level(-1, 1), level(5, 2)], NOON)
    run_timers(engine, monkeypatch, NOON)
    again = CanonicalEvent(
        "https://wms.example.com",
        "said-back",
        "inventory.back_in_stock",
        None,
        None,
        {"sku": SKU, "location": "lyon-1", "available": 5},
    )
    later = NOON + RULES.policy.back_in_stock_wave_interval * 2
    feed(engine, [again], later)
    run_timers(engine, monkeypatch, later)
    assert back_in_stock_told(engine) == 10


def test_each_subscription_is_told_once_across_restocks(
    engine: Engine, subscribers: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    now = NOON
    feed(engine, [level(-1, 1)], now)
    for cycle in range(1, 8):
        feed(engine, [level(20, 10 * cycle)], now)  # 40 per wave at multiple 2
        run_timers(engine, monkeypatch, now)
        now += RULES.policy.back_in_stock_wave_interval + timedelta(minutes=1)
        run_timers(engine, monkeypatch, now)
        feed(engine, [level(-1, 10 * cycle + 1)], now)
    assert told_per_customer(engine) == dict.fromkeys(subscribers, 1)


def test_wholesale_customers_are_excluded_by_segment(
    engine: Engine, subscribers: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with engine.begin() as conn:
        repository.upsert_customers(conn, [{"id": "cus_000", "segment": "wholesale"}], NOON)
    feed(engine, [level(-1, 1), level(100, 2)], NOON)
    run_timers(engine, monkeypatch, NOON)
    with engine.connect() as conn:
        row = conn.execute(
            select(notifications.c.status).where(notifications.c.customer_id == "cus_000")
        ).all()
    assert row == []  # the rule's condition excludes the segment: nothing planned
    assert back_in_stock_told(engine) == 99


def test_backorder_notices_reach_customers_with_open_orders_only(engine: Engine) -> None:
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

    canceled = CanonicalEvent("shop", "cancel-2", "order.canceled", None, None, {"order_id": "2"})
    feed(engine, [placed("1", "ana"), placed("2", "ben"), canceled, level(3, 1)], NOON)
    feed(engine, [level(-1, 2)], NOON + timedelta(minutes=1))
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                notifications.c.customer_id, notifications.c.order_id, notifications.c.extra
            ).where(notifications.c.kind == "backorder_notice")
        ).all()
    assert {(r.customer_id, r.order_id) for r in rows} == {("ana", "1")}
    assert rows[0].extra["product"] == {"sku": SKU, "name": "Opaline lamp", "url": None}
