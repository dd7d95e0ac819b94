"""The live inbox feed over a real socket: Server-Sent Events from a uvicorn server.

The stream is read the way a browser's EventSource reads it (WHATWG HTML 9.2.5/9.2.6):
lines, fields, a blank line dispatching an event, comments ignored.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import insert, select

from tests.support.events import CAMILLE, JORDAN, refund_authorized
from tests.support.smtp import free_port
from tests.support.work import drain
from tidings.api.app import create_app
from tidings.api.keys import create_key
from tidings.db.ids import new_id
from tidings.db.schema import inbox_messages, notifications
from tidings.db.types import utcnow
from tidings.delivery import api as delivery_api
from tidings.delivery.inbox import InboxSignal, message_id_floor
from tidings.runtime import Runtime

STRUCTURED = {"Content-Type": "application/cloudevents+json"}
INBOX = f"/api/customers/{CAMILLE['id']}/inbox"
STREAM = f"{INBOX}/stream"


@contextmanager
def live_server(runtime: Runtime) -> Iterator[str]:
    config = uvicorn.Config(
        create_app(runtime),
        host="127.0.0.1",
        port=free_port(),
        log_level="warning",
        lifespan="off",
        ws="none",
        http="h11",
        # Long, so a stream that outlives its client would show as a slow shutdown.
        timeout_graceful_shutdown=30,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "server did not start"
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(10)
        assert not thread.is_alive(), "server did not stop: a stream outlived its client"


class EventReader:
    """An EventSource's parser (9.2.6), reading from an httpx streaming response."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.iter_lines()
        self.retry: int | None = None
        self.comments: list[str] = []

    def _fields(self) -> Iterator[dict[str, str] | None]:
        """Per dispatch: the event's fields (None for a comment line)."""
        fields: dict[str, str] = {}
        for line in self._lines:
            if line == "":
                yield fields
                fields = {}
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                yield None
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "retry" and value.isdigit():
                self.retry = int(value)
            elif name == "data":
                fields["data"] = f"{fields['data']}\n{value}" if "data" in fields else value
            else:
                fields[name] = value
        raise AssertionError("the stream ended")

    def next_event(self) -> dict[str, Any]:
        for fields in self._fields():
            if fields and "data" in fields:  # 9.2.6: an empty data buffer dispatches nothing
                return {
                    "event": fields.get("event", "message"),
                    "id": fields.get("id"),
                    "data": json.loads(fields["data"]),
                }
        raise AssertionError("unreachable")

    def ready(self) -> None:
        """Read up to the stream's "retry" line: it is live from then on."""
        for _ in self._fields():
            if self.retry is not None:
                return
        raise AssertionError("unreachable")

    def next_comment(self) -> str:
        for fields in self._fields():
            if fields is None:
                return self.comments[-1]
            assert "data" not in fields, fields
        raise AssertionError("unreachable")


def make_key(runtime: Runtime, *scopes: str) -> str:
    with runtime.engine.begin() as conn:
        _, key = create_key(conn, name="k", scopes=list(scopes), actor="tester", now=utcnow())
    return key


def in_app_notifications(runtime: Runtime) -> list[str]:
    with runtime.engine.connect() as conn:
        return list(
            conn.execute(
                select(notifications.c.id)
                .where(notifications.c.channel == "in_app")
                .order_by(notifications.c.created_at, notifications.c.id)
            ).scalars()
        )


def write_inbox(runtime: Runtime, message_id: str, notification_id: str) -> None:
    """What a worker in another process does: commit an inbox row to the shared database."""
    with runtime.engine.begin() as conn:
        conn.execute(
            insert(inbox_messages).values(
                id=message_id,
                customer_id=CAMILLE["id"],
                notification_id=notification_id,
                kind="refund_authorized",
                title=f"title {message_id}",
                body="body",
                created_at=utcnow(),
                read_at=None,
            )
        )


def now_floor() -> str:
    return message_id_floor(int(time.time() * 1000) - 1)


@pytest.fixture
def admin(runtime: Runtime) -> str:
    return make_key(runtime, "admin")


def test_messages_arrive_as_written_and_a_reconnect_gets_only_newer_ones(
    runtime: Runtime, admin: str
) -> None:
    reader_key = make_key(runtime, "inbox:read")
    with live_server(runtime) as base, httpx.Client(base_url=base, timeout=10) as http:

        def refund(order_id: str) -> dict[str, Any]:
            """Post a refund for Camille, run the worker, return her newest inbox message."""
            posted = http.post(
                "/api/events",
                content=json.dumps(refund_authorized(order_id, customer=CAMILLE)),
                headers={**STRUCTURED, "Authorization": f"Bearer {admin}"},
            )
            assert posted.status_code in (200, 202), posted.text
            drain(runtime)
            inbox = http.get(INBOX, headers={"Authorization": f"Bearer {admin}"}).json()
            newest: dict[str, Any] = inbox["messages"][0]
            return newest

        first = refund("1042")
        auth = {"Authorization": f"Bearer {reader_key}"}
        with http.stream("GET", STREAM, params={"since": first["id"]}, headers=auth) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            events = EventReader(response)
            second = refund("1043")
            third = refund("1044")
            got = [events.next_event(), events.next_event()]
            assert events.retry == 3000  # sent before any event
        assert [e["event"] for e in got] == ["message", "message"]
        assert [e["id"] for e in got] == [second["id"], third["id"]]
        assert [e["data"] for e in got] == [second, third]  # the inbox list item, as is
        assert first["id"] < second["id"] < third["id"]

        # The browser reconnects with the last id it got; the page's ?since is older.
        headers = {**auth, "Last-Event-ID": second["id"]}
        with http.stream("GET", STREAM, params={"since": first["id"]}, headers=headers) as again:
            events = EventReader(again)
            assert events.next_event()["id"] == third["id"]
            fourth = refund("1045")
            assert events.next_event()["data"] == fourth

        # Without a starting point only messages written from now on come.
        with http.stream("GET", STREAM, headers=auth) as fresh:
            events = EventReader(fresh)
            events.ready()
            fifth = refund("1046")
            assert events.next_event()["id"] == fifth["id"]


def test_a_late_commit_is_sent_once_without_moving_last_event_id_back(
    runtime: Runtime, admin: str
) -> None:
    with live_server(runtime) as base, httpx.Client(base_url=base, timeout=10) as http:
        for order_id in ("1042", "1043", "1044"):
            posted = http.post(
                "/api/events",
                content=json.dumps(refund_authorized(order_id, customer=CAMILLE)),
                headers={**STRUCTURED, "Authorization": f"Bearer {admin}"},
            )
            assert posted.status_code in (200, 202)
        first, second, third = in_app_notifications(runtime)
        since = now_floor()
        # Two workers: one takes its id first but commits second.
        early = new_id("msg")
        time.sleep(0.005)
        late = new_id("msg")
        assert early < late

        auth = {"Authorization": f"Bearer {admin}"}
        with http.stream("GET", STREAM, params={"since": since}, headers=auth) as response:
            events = EventReader(response)
            write_inbox(runtime, late, first)
            got_late = events.next_event()
            write_inbox(runtime, early, second)
            got_early = events.next_event()
        assert (got_late["data"]["id"], got_late["id"]) == (late, late)
        # The earlier id arrives too, carrying the highest id sent so far as its SSE id.
        assert (got_early["data"]["id"], got_early["id"]) == (early, late)

        with http.stream("GET", STREAM, headers={**auth, "Last-Event-ID": late}) as response:
            events = EventReader(response)
            newest = new_id("msg")
            write_inbox(runtime, newest, third)
            assert events.next_event()["data"]["id"] == newest  # neither of the two again


def test_the_worker_next_door_wakes_the_stream_and_quiet_streams_keep_alive(
    runtime: Runtime, admin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    signal = InboxSignal()
    runtime.inbox_signal = signal  # type: ignore[attr-defined]
    # Reading the database alone would take far longer than the client waits.
    monkeypatch.setattr(delivery_api, "POLL_SECONDS", 60.0)
    monkeypatch.setattr(delivery_api, "HEARTBEAT_SECONDS", 0.0)
    with live_server(runtime) as base, httpx.Client(base_url=base, timeout=5) as http:
        posted = http.post(
            "/api/events",
            content=json.dumps(refund_authorized("1042", customer=CAMILLE)),
            headers={**STRUCTURED, "Authorization": f"Bearer {admin}"},
        )
        assert posted.status_code in (200, 202)
        [notification_id] = in_app_notifications(runtime)
        since = now_floor()
        auth = {"Authorization": f"Bearer {admin}"}
        with http.stream("GET", STREAM, params={"since": since}, headers=auth) as response:
            events = EventReader(response)
            events.ready()
            assert signal.listening(CAMILLE["id"]) == 1
            message_id = new_id("msg")
            write_inbox(runtime, message_id, notification_id)
            signal.notify([JORDAN["id"], CAMILLE["id"]])
            assert events.next_event()["data"]["id"] == message_id
            # Woken with nothing new and quiet for long enough: a comment keeps it alive.
            signal.notify([CAMILLE["id"]])
            assert events.next_comment() == "keep-alive"
        # The client left: the stream ends and stops listening.
        deadline = time.monotonic() + 5
        while signal.listening(CAMILLE["id"]) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert signal.listening(CAMILLE["id"]) == 0


def test_the_stream_needs_the_inbox_read_scope_and_a_real_message_id(
    runtime: Runtime, admin: str
) -> None:
    writer = make_key(runtime, "inbox:write", "customers:read")
    with live_server(runtime) as base, httpx.Client(base_url=base, timeout=10) as http:
        refused = http.get(STREAM, headers={"Authorization": f"Bearer {writer}"})
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["required_scope"] == "inbox:read"
        assert http.get(STREAM).status_code == 401
        auth = {"Authorization": f"Bearer {admin}"}
        for params, headers, field in (
            ({"since": "42"}, {}, "since"),
            ({}, {"Last-Event-ID": "msg_not-an-id"}, "Last-Event-ID"),
            ({"since": "msg_" + "7" * 26}, {}, "since"),  # from the far future
        ):
            response = http.get(STREAM, params=params, headers={**auth, **headers})
            assert response.status_code == 422
            assert response.json()["code"] == "invalid_message_id"
            assert response.json()["field"] == field
