"""The demo stream is a believable past: every event has happened, in order."""

from __future__ import annotations

from datetime import UTC, datetime

from tidings.demo import demo_events


def test_no_demo_event_lies_in_the_future() -> None:
    before = datetime.now(UTC)
    stream = demo_events(200)
    times = [event.time for event in stream]
    assert all(t is not None and t <= before for t in times)
    assert times == sorted(t for t in times if t is not None)
    assert {e.type for e in stream} >= {"order.placed", "shipment.status_changed"}
