"""In-app inbox routes: ``GET /api/customers/{id}/inbox``, acknowledgment, and the live
feed ``GET /api/customers/{id}/inbox/stream``.

The feed is Server-Sent Events as the WHATWG HTML Living Standard section 9.2 defines
them: ``text/event-stream`` (9.2.5 "Parsing an event stream"), the ``event``, ``id``,
``data`` and ``retry`` fields (9.2.6 "Interpreting an event stream"), resumption from the
``Last-Event-ID`` request header (9.2.4), and a comment line as keep-alive (9.2.7
"Authoring notes").
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy import Engine

from tidings.api.auth import scope
from tidings.api.keys import Principal
from tidings.api.problems import ApiProblem
from tidings.db.engine import read_transaction
from tidings.db.types import utcnow
from tidings.delivery import inbox
from tidings.delivery.inbox import FeedCursor, InboxListener, InboxSignal

router = APIRouter(tags=["inbox"])


class InboxMessage(BaseModel):
    id: str
    notification_id: str
    kind: str
    title: str
    body: str
    created_at: datetime
    read_at: datetime | None


class Inbox(BaseModel):
    customer_id: str
    unread: int
    messages: list[InboxMessage]


def _message(row: dict[str, Any]) -> InboxMessage:
    return InboxMessage.model_validate(row)


@router.get("/api/customers/{customer_id}/inbox", response_model=Inbox)
def get_inbox(
    customer_id: str,
    request: Request,
    unread_only: bool = False,
    limit: int = Query(50, ge=1, le=500),
    _: Principal = scope("inbox:read"),
) -> Inbox:
    with read_transaction(request.app.state.runtime.engine) as conn:
        rows = inbox.list_inbox(conn, customer_id, unread_only=unread_only, limit=limit)
    messages = [_message(row) for row in rows]
    return Inbox(
        customer_id=customer_id,
        unread=sum(1 for m in messages if m.read_at is None),
        messages=messages,
    )


@router.post("/api/customers/{customer_id}/inbox/{message_id}/read", response_model=InboxMessage)
def read_message(
    customer_id: str,
    message_id: str,
    request: Request,
    principal: Principal = scope("inbox:write"),
) -> InboxMessage:
    with request.app.state.runtime.engine.begin() as conn:
        row = inbox.mark_read(conn, customer_id, message_id, actor=principal.actor, now=utcnow())
    if row is None:
        raise ApiProblem(
            404, "message_not_found", f"Customer {customer_id} has no message {message_id}."
        )
    return _message(row)


RETRY_MS = 3000  # how long a browser waits before reconnecting (9.2.6, "retry")
POLL_SECONDS = 0.5  # reading the database: how writes by other processes are seen
# 9.2.7: "legacy proxy servers are known to, in certain cases, drop HTTP connections
# after a short timeout. To protect against such proxy servers, authors can include a
# comment line ... every 15 seconds or so."
HEARTBEAT_SECONDS = 15.0


@router.get(
    "/api/customers/{customer_id}/inbox/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
def stream_inbox(
    customer_id: str,
    request: Request,
    since: str | None = Query(None, description="Send messages newer than this message id first."),
    last_event_id: str | None = Header(
        None, description="Set by the browser on reconnection; wins over since."
    ),
    _: Principal = scope("inbox:read"),
) -> StreamingResponse:
    """New inbox messages as they are written, as Server-Sent Events (``event: message``,
    ``data``: the message as in the inbox list). Without ``since`` or ``Last-Event-ID``
    only messages written from now on are sent."""
    resume_after = _resume_point(last_event_id, since)
    runtime = request.app.state.runtime
    # Rung by a worker in this process; messages written elsewhere come by polling.
    signal: InboxSignal = runtime.inbox_signal
    return StreamingResponse(
        _feed(request, runtime.engine, customer_id, FeedCursor(resume_after), signal),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _resume_point(last_event_id: str | None, since: str | None) -> str | None:
    # The header is the browser's own record of what it got, newer than the page's URL.
    for value, field in ((last_event_id, "Last-Event-ID"), (since, "since")):
        if value is None or not value.strip():
            continue
        value = value.strip()
        late = inbox.message_id_floor(int(time.time() * 1000) + inbox.LATE_COMMIT_WINDOW_MS)
        if not inbox.is_message_id(value) or value >= late:
            raise ApiProblem(
                422,
                "invalid_message_id",
                f"{field} must be a message id from this inbox (msg_ and 26 characters), "
                "as the stream or the inbox list gave it.",
                field=field,
            )
        return value
    return None


def _read(engine: Engine, customer_id: str, cursor: FeedCursor) -> list[tuple[str, Any]]:
    with read_transaction(engine) as conn:
        return inbox.read_feed(conn, customer_id, cursor, now_ms=int(time.time() * 1000))


def _event(event_id: str, row: dict[str, Any]) -> str:
    # JSON has no raw line breaks, so the data is one "data:" line (9.2.6).
    return f"event: message\nid: {event_id}\ndata: {_message(row).model_dump_json()}\n\n"


async def _feed(
    request: Request,
    engine: Engine,
    customer_id: str,
    cursor: FeedCursor,
    signal: InboxSignal | None,
) -> AsyncIterator[str]:
    listening = signal.listen(customer_id) if signal else contextlib.nullcontext()
    with listening as listener:
        # The first read is done before anything is sent, so a client that has the
        # "retry" line knows the stream is live: whatever is written from then on comes.
        fresh = await asyncio.to_thread(_read, engine, customer_id, cursor)
        yield f"retry: {RETRY_MS}\n\n" + "".join(_event(i, row) for i, row in fresh)
        quiet_since = time.monotonic()
        while True:
            if await request.is_disconnected():
                return
            await _pause(listener)
            fresh = await asyncio.to_thread(_read, engine, customer_id, cursor)
            if fresh:
                yield "".join(_event(event_id, row) for event_id, row in fresh)
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= HEARTBEAT_SECONDS:
                yield ": keep-alive\n\n"
                quiet_since = time.monotonic()


async def _pause(listener: InboxListener | None) -> None:
    if listener is None:
        await asyncio.sleep(POLL_SECONDS)
    else:
        await listener.wait(POLL_SECONDS)
