"""Random order lives through the real intake and engine (SQLite), checked for the
promises customers feel: critical messages always go, at once; every other message
either counts against the day's budget or is kept with the reason it did not go (the
budget, quiet hours, a digest, an opt-out, a newer status); opt-outs are honoured;
quiet hours and digests keep to the customer's own zone; the per-order budget holds."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from tidings.db.engine import create_db_engine
from tidings.db.schema import audit_log, customers, delivery_jobs, notifications, timers
from tidings.engine.planning import BUDGET_REASON
from tidings.engine.policy import SHIPMENT_RANK, DailyWindow
from tidings.engine.rules import parse_rules
from tidings.engine.writer import DUPLICATE_REASON
from tidings.events.envelope import CanonicalEvent
from tidings.intake.service import DeliveryDefaults, ingest

BUDGET = 3
HOLD = timedelta(minutes=15)
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
                "hold": "15m",
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
CATEGORY = {"shipment": "shipping", "return": "returns", "refund": "refund"}
CATEGORY["backorder"] = "inventory"
CHANNELS = {"shipment": ["email", "sms"], "return": ["email", "push"], "refund": ["email", "sms"]}
CHANNELS["backorder"] = ["email"]
COUNTED = {"queued", "scheduled", "held", "sent"}
QUIET = DailyWindow.parse("21:00-08:00")
# Half-hour offsets, both hemispheres' daylight saving, and zones without any.
ZONES = [
    "Europe/Paris",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Australia/Sydney",
    "Australia/Adelaide",
    "Pacific/Auckland",
    "UTC",
]
SHIPMENT = ["info_received", "in_transit", "out_for_delivery", "delivered", "exception"]
RETURNS = ["requested", "approved", "received", "closed"]
# A life lasts up to 14 x 9 hours; each start has a clock change within two days of it.
STARTS = [
    datetime(2026, 3, 7, 12, 0, tzinfo=UTC),  # the US springs forward on 8 March
    datetime(2026, 3, 27, 6, 0, tzinfo=UTC),  # Europe springs forward on 29 March
    datetime(2026, 4, 3, 6, 0, tzinfo=UTC),  # Sydney and Adelaide fall back on 5 April
    datetime(2026, 9, 25, 6, 0, tzinfo=UTC),  # Auckland springs forward on 27 September
    datetime(2026, 10, 2, 6, 0, tzinfo=UTC),  # Sydney and Adelaide spring forward on 4 October
]
VERDICTS = ("already reached", "is older than", "after the parcel was delivered")


@st.composite
def lives(draw: st.DrawFn) -> dict[str, Any]:
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["shipment", "return", "refund", "backorder"]),
                st.integers(0, 4),
                # Minutes since the previous step: sometimes inside a hold, often hours.
                st.one_of(st.integers(0, 20), st.integers(0, 9 * 60)),
            ),
            min_size=1,
            max_size=14,
        )
    )
    return {
        "zone": draw(st.sampled_from(ZONES)),
        "start": draw(st.sampled_from(STARTS)),
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


@dataclass
class Outcome:
    rows: list[dict[str, Any]]
    event_ids: list[str]  # stored event id of each step
    jobs: dict[str, dict[str, Any]]  # by notification id
    timers: dict[str, dict[str, Any]]  # by key
    no_news: dict[str, str]  # stored event id -> reason


def _life(steps: list[tuple[str, int, int]], **kw: Any) -> dict[str, Any]:
    return {"opted_out": set(), "digest": set(), "steps": steps} | kw


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(life=lives())
# A critical refund at night, in Sydney, from a customer who opted out of refunds.
@example(
    life=_life(
        [("refund", 0, 14 * 60)],
        zone="Australia/Sydney",
        start=STARTS[2],
        opted_out={"refund", "shipping"},
    )
)
# A backorder for a digest customer in a half-hour zone at 19:00 local, after the day's
# digest hour: it waits for tomorrow's.
@example(
    life=_life(
        [("shipment", 1, 30), ("backorder", 0, 7 * 60)],
        zone="Asia/Kolkata",
        start=STARTS[1],
        digest={"inventory"},
    )
)
# A newer status inside the hold supersedes the held one; then the budget runs out.
@example(
    life=_life(
        [
            ("shipment", 0, 0),
            ("shipment", 1, 5),
            ("return", 0, 60),
            ("return", 1, 60),
            ("shipment", 2, 60),
            ("return", 2, 60),
        ],
        zone="Europe/Paris",
        start=STARTS[1],
    )
)
def test_random_order_lives_keep_every_promise(
    sqlite_template_path: Path, life: dict[str, Any]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "t.db"
        shutil.copyfile(sqlite_template_path, db)
        engine = create_db_engine(f"sqlite:///{db}", pool_size=1)
        try:
            outcome = run_life(engine, life)
        finally:
            engine.dispose()
    check(outcome, life)


def run_life(engine: Any, life: dict[str, Any]) -> Outcome:
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
    now = life["start"]
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
    event_ids = []
    for index, (kind, n, gap) in enumerate(life["steps"]):
        now += timedelta(minutes=gap)
        with engine.begin() as conn:
            deliver_due(conn, now)
            accepted = ingest(
                conn, [event(kind, n, index)], rules=RULES, delivery=defaults, now=now, actor="t"
            )
        event_ids.append(accepted[0].event_id)
    with engine.connect() as conn:
        audit = conn.execute(
            select(audit_log.c.subject_id, audit_log.c.detail).where(
                audit_log.c.action == "event.no_news"
            )
        ).all()
        return Outcome(
            rows=[dict(r) for r in conn.execute(select(notifications)).mappings()],
            event_ids=event_ids,
            jobs={
                r["notification_id"]: dict(r)
                for r in conn.execute(select(delivery_jobs)).mappings()
            },
            timers={r["key"]: dict(r) for r in conn.execute(select(timers)).mappings()},
            no_news={a.subject_id: json.loads(a.detail)["reason"] for a in audit},
        )


def deliver_due(conn: Any, now: datetime) -> None:
    """Stands in for the delivery worker between events: what fell due has gone out, so
    a newer status can no longer supersede it. Digest items wait for their digest."""
    waiting = notifications.c.status.in_(["queued", "scheduled", "held"])
    undigested = notifications.c.digest_key.is_(None)
    for due in (
        notifications.c.scheduled_for.is_(None) & (notifications.c.created_at <= now),
        notifications.c.scheduled_for <= now,
    ):
        conn.execute(
            update(notifications)
            .where(waiting, undigested, due)
            .values(status="sent", sent_at=now, updated_at=now)
        )


def check(outcome: Outcome, life: dict[str, Any]) -> None:
    zone = ZoneInfo(life["zone"])
    rows = outcome.rows
    for row in rows:
        if row["category"] == "refund":
            continue  # critical: goes at once, checked step by step below
        if row["status"] in COUNTED and row["channel"] in ("sms", "push"):
            if row["category"] not in life["digest"] or row["kind"] != "backorder_notice":
                local = (row["scheduled_for"] or row["created_at"]).astimezone(zone).time()
                assert not QUIET.contains(local) or local == QUIET.end, (row, local)
    check_each_step(outcome, life, zone)
    # The budget: in any 24 hours, at most BUDGET non-critical messages reach the order's
    # customer (a message on two channels is one message).
    messages = sorted(
        {
            (row["created_at"], row["event_id"], row["rule_id"])
            for row in rows
            if row["category"] != "refund" and row["order_id"] == "o1" and row["status"] in COUNTED
        }
    )
    for start, _, _ in messages:
        window = [m for m in messages if start <= m[0] < start + timedelta(days=1)]
        assert len(window) <= BUDGET, window


def check_each_step(outcome: Outcome, life: dict[str, Any], zone: ZoneInfo) -> None:
    """Walk the life in order, keeping the little the engine is told to remember (how far
    the parcel got, which news already went out), and account for every event."""
    reached: tuple[int, str] | None = None  # the parcel's furthest ranked status
    delivered = False
    backordered = False
    told: set[tuple[str, str, str]] = set()  # (kind, channel, status) that went out
    index_of = {event_id: i for i, event_id in enumerate(outcome.event_ids)}
    for index, (kind, n, _) in enumerate(life["steps"]):
        event_id = outcome.event_ids[index]
        mine = [row for row in outcome.rows if row["event_id"] == event_id]
        by_channel = {row["channel"]: row for row in mine}
        assert len(by_channel) == len(mine), mine  # one row per channel
        category = CATEGORY[kind]

        if kind == "refund":
            # (a) Critical: on every channel, now, whatever the opt-outs and the hour.
            assert sorted(by_channel) == CHANNELS[kind], mine
            for row in mine:
                assert row["status"] in ("queued", "sent"), row
                assert row["scheduled_for"] is None, row
                assert row["reason"] is None, row
                assert row["priority"] == "critical"
                job = outcome.jobs[row["id"]]
                assert job["run_at"] == row["created_at"], job
                assert job["lane"] == 0, job
            continue

        status = SHIPMENT[n % len(SHIPMENT)] if kind == "shipment" else RETURNS[n % 4]
        verdict = None
        if kind == "shipment":
            rank = SHIPMENT_RANK.get(status)
            if rank is None and reached is not None and reached[1] == "delivered":
                verdict = "after the parcel was delivered"
            elif rank is not None and reached is not None and rank <= reached[0]:
                verdict = "already reached" if rank == reached[0] else "is older than"
            if rank is not None and (reached is None or rank > reached[0]):
                reached = (rank, status)
            delivered = delivered or status == "delivered"

        if kind == "backorder":
            if backordered:
                # The SKU stays on backorder: no news, and the audit says so.
                assert not mine, mine
                assert "already on backorder" in outcome.no_news[event_id]
                continue
            backordered = True
            if delivered and not mine:
                continue  # the order arrived: nobody is waiting for the SKU any more

        # (b) Every channel of the rule has its row: it counts, or it says why not.
        assert sorted(by_channel) == sorted(CHANNELS[kind]), (kind, mine)
        for channel, row in by_channel.items():
            reason = row["reason"] or ""
            if verdict is not None:
                assert row["status"] == "suppressed", row
                assert verdict in reason, (verdict, row)
                continue
            if category in life["opted_out"]:
                assert row["status"] == "suppressed", row
                assert reason == f"the customer opted out of the '{category}' category", row
                continue
            if channel == "push":
                assert row["status"] == "suppressed", row
                assert reason == "the customer has no push address", row
                continue
            if reason == BUDGET_REASON:
                assert row["status"] == "suppressed"
                assert used_budget(outcome, index_of, index, row["created_at"]) >= BUDGET, row
                continue
            identity = (kind, channel, status)
            if kind != "backorder" and identity in told:
                assert row["status"] == "suppressed", row
                assert reason == DUPLICATE_REASON, row
                continue
            assert row["status"] in COUNTED | {"superseded"}, row
            if kind != "backorder":
                told.add(identity)
            check_timing(outcome, life, zone, kind, row)


def used_budget(outcome: Outcome, index_of: dict[str, int], index: int, at: datetime) -> int:
    """Non-critical messages about the order planned by earlier events of the 24 hours up
    to ``at`` (superseded ones included: they counted when they were held)."""
    return len(
        {
            row["event_id"]
            for row in outcome.rows
            if index_of.get(row["event_id"], index) < index
            and row["category"] != "refund"
            and row["status"] != "suppressed"
            and at - timedelta(days=1) <= row["created_at"] <= at
        }
    )


def check_timing(
    outcome: Outcome, life: dict[str, Any], zone: ZoneInfo, kind: str, row: dict[str, Any]
) -> None:
    created, due, reason = row["created_at"], row["scheduled_for"], row["reason"] or ""
    if kind == "backorder" and "inventory" in life["digest"]:
        # (c) Held to the digest hour in the customer's zone, the next one to come.
        assert row["status"] == "held", row
        assert reason == "in the daily digest at 18:00", row
        assert due.astimezone(zone).time() == time(18, 0), (due, zone)
        assert created < due <= created + timedelta(hours=25), row
        timer = outcome.timers[f"digest:{row['digest_key']}"]
        assert timer["due_at"] == due, timer
        assert timer["kind"] == "digest", timer
        assert row["id"] not in outcome.jobs  # it goes with the digest, not alone
        return
    if kind in ("backorder", "return"):
        assert row["status"] in ("queued", "sent"), row
        assert due is None, row
        assert not reason, row
        assert outcome.jobs[row["id"]]["run_at"] == created
        return
    # Shipments wait out their hold for a newer status, SMS then out of quiet hours.
    intended = created + HOLD
    night = row["channel"] == "sms" and QUIET.contains(intended.astimezone(zone).time())
    if night:
        assert due.astimezone(zone).time() == QUIET.end, (due, zone)
        assert intended < due < intended + timedelta(hours=12), row
    else:
        assert due == intended, row
    if row["status"] == "superseded":
        # A newer status of the parcel, on the same channel, came while this one waited.
        assert reason == "superseded by a newer update (shipment_update)", row
        assert outcome.jobs[row["id"]]["status"] == "canceled"
        assert any(
            other["kind"] == "shipment_update"
            and other["channel"] == row["channel"]
            and created <= other["created_at"] < due
            and other["status"] != "suppressed"
            and other["id"] != row["id"]
            for other in outcome.rows
        ), row
        return
    assert reason.startswith("held 900s for a newer status"), row
    quiet = f"quiet hours 21:00-08:00 in {life['zone']}"
    assert (quiet in reason) == night, row
