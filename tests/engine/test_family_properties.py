"""Random order lives through the real intake and engine (SQLite), checked for the
promises customers feel: opt-outs honoured but never for critical messages, quiet hours
in the customer's own zone, digests at their hour, and the per-order contact budget."""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from tidings.db.engine import create_db_engine
from tidings.db.schema import customers, notifications
from tidings.engine.policy import DailyWindow
from tidings.engine.rules import parse_rules
from tidings.events.envelope import CanonicalEvent
from tidings.intake.service import DeliveryDefaults, ingest

BUDGET = 3
RULES = parse_rules(
    {
        "categories": {
            "refund": {"critical": True},
            "shipping": {},
            "returns": {},
            "inventory": {},
        },
        "policy": {
            "quiet_hours": "21:00-08:00",
            "contact_budget_per_order_per_day": BUDGET,
            "digest_hour": 18,
        },
        "rules": [
            {
                "id": "refund",
                "event": "refund.authorized",
                "kind": "refund_authorized",
                "category": "refund",
                "priority": "critical",
                "channels": ["email", "sms"],
            },
            {
                "id": "ship",
                "event": "shipment.status_changed",
                "kind": "shipment_update",
                "category": "shipping",
                "channels": ["email", "sms"],
                "group": "shipment",
            },
            {
                "id": "return",
                "event": "return.status_changed",
                "kind": "return_update",
                "category": "returns",
                "channels": ["email", "push"],
            },
            {
                "id": "backorder",
                "event": "inventory.backordered",
                "kind": "backorder_notice",
                "category": "inventory",
                "channels": ["email"],
                "digest": True,
            },
        ],
    }
)
CRITICAL = {"refund"}
COUNTED = {"queued", "scheduled", "held", "sent"}
ZONES = ["Europe/Paris", "America/Los_Angeles", "Asia/Tokyo", "Australia/Sydney", "UTC"]
SHIPMENT = ["info_received", "in_transit", "out_for_delivery", "delivered", "exception"]
RETURNS = ["requested", "approved", "received", "closed"]
START = datetime(2026, 3, 20, 6, 0, tzinfo=UTC)  # spans a DST change in several zones


@st.composite
def lives(draw: st.DrawFn) -> dict[str, Any]:
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["shipment", "return", "refund", "backorder"]),
                st.integers(0, 4),
                st.integers(0, 9 * 60),  # minutes since the previous step
            ),
            min_size=1,
            max_size=14,
        )
    )
    return {
        "zone": draw(st.sampled_from(ZONES)),
        "opted_out": draw(st.sets(st.sampled_from(["shipping", "returns", "inventory", "refund"]))),
        "digest": draw(st.sets(st.sampled_from(["inventory", "shipping"]))),
        "steps": steps,
    }


def event(kind: str, n: int, index: int) -> CanonicalEvent:
    base = {"order_id": "o1"}
    if kind == "shipment":
        data = {
            **base,
            "shipment_id": "s1",
            "tracking_number": "T1",
            "status": SHIPMENT[n % len(SHIPMENT)],
        }
        return CanonicalEvent("src", f"e{index}", "shipment.status_changed", None, None, data)
    if kind == "return":
        data = {**base, "return_id": "r1", "status": RETURNS[n % len(RETURNS)], "lines": []}
        return CanonicalEvent("src", f"e{index}", "return.status_changed", None, None, data)
    if kind == "refund":
        data = {**base, "refund_id": f"re{index}", "amount": 100 + n, "currency": "EUR"}
        return CanonicalEvent("src", f"e{index}", "refund.authorized", None, None, data)
    data = {"sku": "SKU-1", "available": -1, "location": None, "restock_eta": None}
    return CanonicalEvent("stock", f"e{index}", "inventory.backordered", None, None, data)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(life=lives())
def test_random_order_lives_keep_every_promise(
    sqlite_template_path: Path, life: dict[str, Any]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "t.db"
        shutil.copyfile(sqlite_template_path, db)
        engine = create_db_engine(f"sqlite:///{db}", pool_size=1)
        try:
            rows = run_life(engine, life)
        finally:
            engine.dispose()
    check(rows, life)


def run_life(engine: Any, life: dict[str, Any]) -> list[dict[str, Any]]:
    customer = {
        "id": "c1",
        "name": "Ana",
        "email": "ana@example.com",
        "phone": "+33612345678",
        "locale": "fr",
        "time_zone": life["zone"],
    }
    placed = CanonicalEvent(
        "src",
        "placed",
        "order.placed",
        None,
        None,
        {
            "order_id": "o1",
            "currency": "EUR",
            "total": 100,
            "customer": customer,
            "lines": [{"sku": "SKU-1", "name": "Lamp", "quantity": 1}],
        },
    )
    now = START
    defaults = DeliveryDefaults(max_attempts=3)
    with engine.begin() as conn:
        ingest(conn, [placed], rules=RULES, delivery=defaults, now=now, actor="t")
        conn.execute(
            update(customers)
            .where(customers.c.id == "c1")
            .values(
                preferences={
                    "opted_out": sorted(life["opted_out"]),
                    "digest": {"categories": sorted(life["digest"])},
                }
            )
        )
    for index, (kind, n, gap) in enumerate(life["steps"]):
        now += timedelta(minutes=gap)
        with engine.begin() as conn:
            ingest(
                conn, [event(kind, n, index)], rules=RULES, delivery=defaults, now=now, actor="t"
            )
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(notifications)).mappings()]


def check(rows: list[dict[str, Any]], life: dict[str, Any]) -> None:
    zone = ZoneInfo(life["zone"])
    quiet = DailyWindow.parse("21:00-08:00")
    for row in rows:
        critical = row["category"] in CRITICAL
        if critical:
            # Never silenced by an opt-out or the budget, never deferred.
            assert row["status"] == "queued", row
            assert row["scheduled_for"] is None
            continue
        if row["category"] in life["opted_out"]:
            assert row["status"] == "suppressed"  # for the opt-out, or an earlier reason
            assert row["reason"]
            continue
        if row["status"] == "suppressed":
            continue
        due = row["scheduled_for"] or row["created_at"]
        if row["channel"] in ("sms", "push") and row["category"] not in life["digest"]:
            local = due.astimezone(zone).time()
            assert not quiet.contains(local) or local == quiet.end, (row, local)
        if row["category"] in life["digest"] and row["kind"] == "backorder_notice":
            assert row["status"] == "held"
            assert row["scheduled_for"].astimezone(zone).hour in (18, 19)
    # The budget: in any 24 hours, at most BUDGET non-critical messages reach the order's
    # customer (a message on two channels is one message).
    messages = sorted(
        {
            (row["created_at"], row["event_id"], row["rule_id"])
            for row in rows
            if row["category"] not in CRITICAL
            and row["order_id"] == "o1"
            and row["status"] in COUNTED
        }
    )
    for start, _, _ in messages:
        window = [m for m in messages if start <= m[0] < start + timedelta(days=1)]
        assert len(window) <= BUDGET, window
