"""Deferred SMS about one order that fall due at one moment go out as one text.

A customer whose quiet hours hold back two return updates gets, when they end, one SMS
with both updates (to a loopback Twilio), and the order's timeline says which message
rode along with which.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, update

from tests.support.events import CAMILLE, cloudevent, order_placed
from tests.support.http_stub import HttpStub, Reply, Request
from tests.support.work import drain
from tidings.api.app import create_app
from tidings.api.keys import create_key
from tidings.config import Settings
from tidings.db.schema import delivery_jobs, events, notifications
from tidings.db.types import utcnow
from tidings.engine.rules import BUILTIN_RULES
from tidings.runtime import Runtime, build_runtime

SID, TOKEN = "AC" + "0" * 32, "twilio-token"
STRUCTURED = {"Content-Type": "application/cloudevents+json"}


def twilio(request: Request) -> Reply:
    expected = "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    if request.headers.get("authorization") != expected:
        return Reply(401, {"code": 20003, "message": "Authenticate", "status": 401})
    if request.path != f"/2010-04-01/Accounts/{SID}/Messages.json":
        return Reply(404, {"code": 20404, "message": "not found", "status": 404})
    form = parse_qs(request.body.decode())
    if not form.get("To") or not form.get("Body"):
        return Reply(400, {"code": 21604, "message": "A 'To' and a 'Body' are required"})
    return Reply(201, {"sid": f"SM{len(form['Body'][0]):032d}", "status": "queued"})


@pytest.fixture
def night(settings: Settings, engine: Engine, tmp_path: Path) -> Iterator[tuple[Any, ...]]:
    stub = HttpStub(twilio).start()
    rules = yaml.safe_load(BUILTIN_RULES.read_text())
    for rule in rules["rules"]:
        if rule["event"] == "return.status_changed":
            rule["channels"] = ["sms"]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    runtime = build_runtime(
        settings.model_copy(
            update={
                "rules_path": path,
                "sms_providers": "twilio",
                "twilio_account_sid": SID,
                "twilio_auth_token": TOKEN,
                "twilio_from": "+15005550006",
                "twilio_api_url": stub.url,
            }
        ),
        engine=engine,
    )
    with runtime.engine.begin() as conn:
        _, key = create_key(conn, name="t", scopes=["admin"], actor="t", now=utcnow())
    with TestClient(create_app(runtime)) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        yield client, runtime, stub
    stub.stop()


def post(client: TestClient, event: dict[str, Any]) -> None:
    response = client.post("/api/events", content=json.dumps(event), headers=STRUCTURED)
    assert response.status_code == 202, response.text


def return_step(status: str) -> dict[str, Any]:
    return cloudevent(
        "return.status_changed",
        {
            "order_id": "1042",
            "return_id": "rma_7",
            "return_reference": "R-1042-1",
            "status": status,
            "lines": [{"sku": "BULB-4", "quantity": 1}],
        },
        subject="order/1042",
    )


def quiet_now(zone: str) -> str:
    """Quiet hours that hold from an hour ago until two hours from now, local time."""
    local = datetime.now(UTC).astimezone(ZoneInfo(zone))
    start, end = local - timedelta(hours=1), local + timedelta(hours=2)
    return f"{start:%H:%M}-{end:%H:%M}"


def rows(runtime: Runtime) -> list[Any]:
    with runtime.engine.connect() as conn:
        return list(conn.execute(select(notifications).order_by(notifications.c.created_at)))


def test_two_deferred_updates_go_as_one_text_when_quiet_hours_end(
    night: tuple[TestClient, Runtime, HttpStub],
) -> None:
    client, runtime, stub = night
    post(client, order_placed("1042", CAMILLE))
    answer = client.put(
        f"/api/customers/{CAMILLE['id']}/preferences",
        json={"quiet_hours": quiet_now(CAMILLE["time_zone"])},
    )
    assert answer.status_code == 200, answer.text
    post(client, return_step("requested"))
    post(client, return_step("approved"))

    planned = rows(runtime)
    assert [(r.kind, r.status) for r in planned] == [
        ("return_requested", "scheduled"),
        ("return_approved", "merged"),
    ]
    carrier, rider = planned
    assert rider.parent_id == carrier.id
    assert "merged into the sms message" in rider.reason
    assert run_worker_once(runtime) == 0  # quiet hours: nothing is due yet
    assert stub.taken() == []

    # The night ends.
    with runtime.engine.begin() as conn:
        conn.execute(update(delivery_jobs).values(run_at=utcnow()))
    drain(runtime)
    [sent] = stub.taken()
    body = parse_qs(sent.body.decode())["Body"][0]
    assert "R-1042-1" in body
    assert len(body.splitlines()) == 2  # one line per update, in one text
    requested, approved = (
        runtime.renderer.render(
            kind, "sms", "fr", CAMILLE["time_zone"], _context(runtime, kind)
        ).parts["txt_short"]
        for kind in ("return_requested", "return_approved")
    )
    assert body.splitlines() == [requested, approved]
    assert {r.kind: r.status for r in rows(runtime)} == {
        "return_requested": "sent",
        "return_approved": "merged",
    }
    timeline = client.get("/api/orders/1042/timeline").json()
    merged = [e for e in timeline["entries"] if e["status"] == "merged"]
    assert [e["kind"] for e in merged] == ["return_approved"]


def stored_data(runtime: Runtime, status: str) -> dict[str, Any]:
    with runtime.engine.connect() as conn:
        for data in conn.scalars(select(events.c.data)):
            if data.get("return_id") == "rma_7" and data.get("status") == status:
                return dict(data)
    raise AssertionError(f"no stored return event {status}")


def run_worker_once(runtime: Runtime) -> int:
    async def once() -> int:
        worker = runtime.new_worker()
        try:
            return await worker.run_once()
        finally:
            await worker.close()

    return asyncio.run(once())


def _context(runtime: Runtime, kind: str) -> dict[str, Any]:
    status = kind.removeprefix("return_")
    return {
        "recipient": {"name": CAMILLE["name"], "locale": "fr", "time_zone": "Europe/Paris"},
        "order": {"id": "1042", "number": None},
        "data": stored_data(runtime, status),
        "event": {"id": "x", "type": "return.status_changed", "time": utcnow()},
        "store": {"name": runtime.settings.store_name, "support_email": "s@x"},
    }
