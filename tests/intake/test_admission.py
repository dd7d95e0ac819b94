"""Admission control: past the backlog's high water, bulk events wait; nothing else does."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.intake.sources import test_aftership as aftership
from tests.support.events import JORDAN, cloudevent, refund_authorized
from tests.support.work import drain
from tidings.db.schema import events
from tidings.engine.rules import Lane, load_rules
from tidings.intake.admission import Admission
from tidings.intake.brokers.common import Delivery, Settle, store_batch
from tidings.runtime import Runtime

STRUCTURED = {"Content-Type": "application/cloudevents+json"}
BATCH = {"Content-Type": "application/cloudevents-batch+json"}


def restock(n: int) -> dict[str, Any]:
    return cloudevent(
        "inventory.back_in_stock", {"sku": "LAMP-01", "available": 40}, id=f"restock-{n}"
    )


def refund(n: int) -> dict[str, Any]:
    event = refund_authorized(str(n), id=f"refund-{n}", customer=JORDAN)
    event["data"]["refund_id"] = f"re_{n}"
    return event


def stored(runtime: Runtime) -> int:
    with runtime.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(events)).scalar_one())


def backed_up(runtime: Runtime, client: TestClient) -> Admission:
    admission = runtime.intake.admission
    assert admission is not None
    admission.high_water, admission.recheck = 1, 0.0
    for n in range(2):
        answer = client.post("/api/events", content=json.dumps(refund(n)), headers=STRUCTURED)
        assert answer.status_code == 202
    assert admission.backlog() > admission.high_water
    return admission


def test_the_builtin_back_in_stock_wave_is_bulk_and_refunds_are_critical() -> None:
    rules = load_rules()
    assert rules.lane_of("inventory.back_in_stock") is Lane.bulk
    assert rules.lane_of("refund.authorized") is Lane.critical
    assert rules.lane_of("inventory.level_changed") is Lane.transactional


def test_past_high_water_a_bulk_event_waits_and_a_refund_does_not(
    runtime: Runtime, client: TestClient
) -> None:
    admission = backed_up(runtime, client)
    before = stored(runtime)

    waits = client.post("/api/events", content=json.dumps(restock(1)), headers=STRUCTURED)
    assert waits.status_code == 429
    assert waits.headers["Retry-After"] == str(admission.retry_after)
    assert waits.json()["code"] == "backlog_full"
    assert stored(runtime) == before  # not stored, not in the reject log: the sender keeps it

    urgent = client.post("/api/events", content=json.dumps(refund(9)), headers=STRUCTURED)
    assert urgent.status_code == 202
    assert stored(runtime) == before + 1


def test_a_batch_stores_what_may_come_in_and_defers_the_rest(
    runtime: Runtime, client: TestClient
) -> None:
    backed_up(runtime, client)
    before = stored(runtime)
    mixed = client.post("/api/events", content=json.dumps([restock(2), refund(10)]), headers=BATCH)
    assert mixed.status_code == 200
    body = mixed.json()
    assert (body["accepted"], body["deferred"], body["rejected"]) == (1, 1, 0)
    assert [r["status"] for r in body["results"]] == ["deferred", "accepted"]
    assert mixed.headers["Retry-After"] == "30"
    assert stored(runtime) == before + 1

    only_bulk = client.post("/api/events", content=json.dumps([restock(3)]), headers=BATCH)
    assert only_bulk.status_code == 429
    assert only_bulk.json()["deferred"] == 1


def test_once_the_backlog_drains_bulk_events_are_taken_again(
    runtime: Runtime, client: TestClient
) -> None:
    backed_up(runtime, client)
    assert (
        client.post("/api/events", content=json.dumps(restock(4)), headers=STRUCTURED).status_code
        == 429
    )
    drain(runtime)
    again = client.post("/api/events", content=json.dumps(restock(4)), headers=STRUCTURED)
    assert again.status_code == 202, again.text


def test_the_backlog_is_counted_at_most_once_per_recheck(
    runtime: Runtime, client: TestClient
) -> None:
    now = [0.0]
    admission = Admission(
        runtime.engine, runtime.rules, high_water=10, recheck=1.0, clock=lambda: now[0]
    )
    assert admission.backlog() == 0
    posted = client.post("/api/events", content=json.dumps(refund(7)), headers=STRUCTURED)
    assert posted.status_code == 202
    now[0] = 0.5
    assert admission.backlog() == 0  # the count of a moment ago still stands
    now[0] = 1.0
    assert admission.backlog() == 2  # the refund's email and in-app jobs


def test_high_water_zero_never_defers(runtime: Runtime, client: TestClient) -> None:
    admission = backed_up(runtime, client)
    admission.high_water = 0
    answer = client.post("/api/events", content=json.dumps(restock(5)), headers=STRUCTURED)
    assert answer.status_code == 202


def test_a_broker_message_of_bulk_events_is_handed_back_while_backed_up(
    runtime: Runtime, client: TestClient
) -> None:
    backed_up(runtime, client)
    before = stored(runtime)
    settles = store_batch(
        runtime.intake,
        [
            Delivery(json.dumps(restock(6)).encode(), "application/cloudevents+json"),
            Delivery(json.dumps(refund(11)).encode(), "application/cloudevents+json"),
        ],
        channel="nats",
        actor="broker",
    )
    # The restock comes again later (nak/requeue); the refund is stored and acked.
    assert settles == [Settle.RETRY, Settle.ACK]
    assert stored(runtime) == before + 1


def test_a_webhook_of_bulk_events_is_answered_429_for_the_provider_to_send_again(
    runtime: Runtime, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    admission = backed_up(runtime, client)
    # Treat every event as bulk, as a store whose rules send shipment news in bulk would.
    monkeypatch.setattr(admission, "deferred", lambda events: [True] * len(events))
    cast(dict[str, str | None], runtime.webhooks.secrets)["aftership"] = aftership.SECRET
    before = stored(runtime)
    answer = aftership.post(client, aftership.sample("tracking_update_in_transit"))
    assert answer.status_code == 429, answer.text
    assert answer.headers["Retry-After"] == str(admission.retry_after)
    assert answer.json()["deferred"] == len(answer.json()["results"]) >= 1
    assert stored(runtime) == before  # nothing kept: the provider sends it again
