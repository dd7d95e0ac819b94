"""A restocked return puts its units back on the shelf, and that can end a backorder."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from tidings.db.schema import notifications, stock_levels
from tidings.engine import repository
from tidings.engine.rules import load_rules
from tidings.engine.scheduled import run_due, subscribe
from tidings.events.envelope import CanonicalEvent
from tidings.intake.service import DeliveryDefaults, ingest

RULES = load_rules()
NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SKU = "LAMP-01"


def feed(engine: Engine, batch: list[CanonicalEvent], now: datetime) -> None:
    with engine.begin() as conn:
        ingest(conn, batch, rules=RULES, delivery=DeliveryDefaults(3), now=now, actor="test")


def returned(status: str, n: int, **more: Any) -> CanonicalEvent:
    data = {
        "order_id": "1042",
        "return_id": "rma_7",
        "status": status,
        "lines": [{"sku": SKU, "quantity": 1}, {"sku": SKU, "quantity": 1}],
        **more,
    }
    return CanonicalEvent("returns-app", f"rma_7-{n}", "return.status_changed", None, None, data)


def told(engine: Engine) -> int:
    with engine.connect() as conn:
        count = conn.execute(
            select(func.count()).where(
                notifications.c.kind == "back_in_stock", notifications.c.channel == "email"
            )
        ).scalar()
    return int(count or 0)


def stock(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(stock_levels.c.location, stock_levels.c.available).where(
                stock_levels.c.sku == SKU
            )
        ).all()
    return {str(location): int(units) for location, units in rows}


def test_a_restocked_return_brings_a_sold_out_sku_back_to_its_subscribers(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    profiles = [
        {"id": f"cus_{n}", "email": f"c{n}@example.com", "time_zone": "UTC"} for n in range(9)
    ]
    with engine.begin() as conn:
        repository.upsert_customers(conn, profiles, NOON)
        for n, profile in enumerate(profiles):
            subscribe(conn, sku=SKU, customer_id=profile["id"], now=NOON + timedelta(seconds=n))
    level = {"sku": SKU, "location": "lyon-1", "available": 0}
    feed(engine, [CanonicalEvent("wms", "l1", "inventory.level_changed", None, None, level)], NOON)
    feed(engine, [returned("received", 1)], NOON + timedelta(hours=1))
    assert stock(engine) == {"lyon-1": 0}

    feed(engine, [returned("restocked", 2)], NOON + timedelta(hours=2))
    feed(engine, [returned("restocked", 3)], NOON + timedelta(hours=3))  # told twice: once
    assert stock(engine) == {"lyon-1": 0, "default": 2}

    at = NOON + timedelta(hours=3)
    monkeypatch.setattr("tidings.engine.scheduled.utcnow", lambda: at)
    run_due(engine, rules=RULES, max_attempts=3, actor="test")
    assert told(engine) == RULES.policy.back_in_stock_wave_multiple * 2


def test_a_return_names_the_location_it_goes_back_to(engine: Engine) -> None:
    feed(engine, [returned("restocked", 1, location="paris")], NOON)
    assert stock(engine) == {"paris": 2}
