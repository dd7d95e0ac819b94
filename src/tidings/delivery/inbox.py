"""The in-app inbox: messages stored for a customer, their acknowledgment, the live feed."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select, update

from tidings.audit.chain import AuditEntry, append
from tidings.db.schema import inbox_messages, notifications


def list_inbox(
    conn: Connection, customer_id: str, *, unread_only: bool = False, limit: int = 50
) -> list[dict[str, Any]]:
    query = (
        select(inbox_messages)
        .where(inbox_messages.c.customer_id == customer_id)
        .order_by(inbox_messages.c.created_at.desc(), inbox_messages.c.id.desc())
        .limit(limit)
    )
    if unread_only:
        query = query.where(inbox_messages.c.read_at.is_(None))
    return [dict(row) for row in conn.execute(query).mappings()]


def mark_read(
    conn: Connection, customer_id: str, message_id: str, *, actor: str, now: datetime
) -> dict[str, Any] | None:
    """Record acknowledgment once; reading again keeps the first time."""
    row = (
        conn.execute(
            select(inbox_messages).where(
                inbox_messages.c.id == message_id, inbox_messages.c.customer_id == customer_id
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    if row["read_at"] is None:
        conn.execute(
            update(inbox_messages).where(inbox_messages.c.id == message_id).values(read_at=now)
        )
        conn.execute(
            update(notifications)
            .where(notifications.c.id == row["notification_id"])
            .values(status="acknowledged", updated_at=now)
        )
        append(
            conn,
            [AuditEntry(actor, "inbox.read", "notification", row["notification_id"], {})],
            at=now,
        )
        return {**dict(row), "read_at": now}
    return dict(row)


# --- The live feed -----------------------------------------------------------------------
#
# A stream asks the database again and again for the customer's messages (several API
# processes share one database, and any of their workers may write the message), and an
# in-process signal lets the worker next to it cut the wait short.
#
# Message ids are time-ordered (ULID layout, ``db.ids``) but taken when the message is
# sent, while the row commits with the whole batch later, and workers commit in any order:
# a message can appear after one with a higher id. So a stream does not ask for
# "id > last sent" but for everything in a trailing window, and remembers what it sent.

# Longer than a batch takes from send to commit (SMTP timeouts, recording retries) plus
# the clock difference between machines; a row committing later than this is not pushed
# live (the inbox list still has it).
LATE_COMMIT_WINDOW_MS = 60_000
_PAGE = 500
# The ids' time lies within moments of created_at; this margin only bounds the index range.
_CREATED_AT_MARGIN = timedelta(minutes=5)

# ULID (github.com/ulid/spec): 48-bit millisecond time first, in Crockford base32; the
# first 10 characters carry it, the last 16 the 80 random bits.
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_MESSAGE_ID = re.compile(r"^msg_[0-9A-HJKMNP-TV-Z]{26}$")


def is_message_id(value: str) -> bool:
    return bool(_MESSAGE_ID.match(value))


def message_id_time(message_id: str) -> int:
    """Milliseconds since the epoch when the id was made."""
    value = 0
    for char in message_id.removeprefix("msg_")[:10]:
        value = value * 32 + _CROCKFORD.index(char)
    return value


def message_id_floor(at_ms: int) -> str:
    """The lowest message id possible at this millisecond: every later id sorts above it."""
    value, chars = max(at_ms, 0), []
    for _ in range(10):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "msg_" + "".join(reversed(chars)) + "0" * 16


def messages_after(
    conn: Connection, customer_id: str, after_id: str, *, limit: int = _PAGE
) -> list[dict[str, Any]]:
    """The customer's messages with an id above ``after_id``, oldest first."""
    since = datetime.fromtimestamp(message_id_time(after_id) / 1000, UTC) - _CREATED_AT_MARGIN
    query = (
        select(inbox_messages)
        .where(
            inbox_messages.c.customer_id == customer_id,
            inbox_messages.c.created_at >= since,  # the (customer_id, created_at) index
            inbox_messages.c.id > after_id,
        )
        .order_by(inbox_messages.c.id)
        .limit(limit)
    )
    return [dict(row) for row in conn.execute(query).mappings()]


class FeedCursor:
    """What one open stream has sent, so that each message goes out once, late ones too.

    ``resume_after`` is the id the client last saw (``Last-Event-ID``): on the first read
    only newer messages are sent. Without it, messages already written when the stream
    opened are not sent (the client has the inbox list for those).

    ``last_id`` is the highest id sent or resumed from. It is what each event carries as
    its SSE ``id``: a late message with a lower id must not move the client's
    ``Last-Event-ID`` back, or a reconnect would send the messages after it again.
    """

    def __init__(self, resume_after: str | None, *, window_ms: int = LATE_COMMIT_WINDOW_MS) -> None:
        self.last_id = resume_after
        self._window_ms = window_ms
        self._first = True
        self._seen: set[str] = set()

    def floor(self, now_ms: int) -> str:
        """Where the next read starts."""
        floor = message_id_floor(now_ms - self._window_ms)
        if self._first and self.last_id is not None:
            return min(floor, self.last_id)
        return floor

    def take(
        self, rows: Iterable[dict[str, Any]], *, floor: str
    ) -> list[tuple[str, dict[str, Any]]]:
        """The rows to send (with the SSE id for each), from everything read above ``floor``."""
        resume_after, first = self.last_id, self._first
        fresh: list[tuple[str, dict[str, Any]]] = []
        for row in sorted(rows, key=lambda r: str(r["id"])):
            message_id = str(row["id"])
            if message_id in self._seen:
                continue
            self._seen.add(message_id)
            if first and (resume_after is None or message_id <= resume_after):
                continue  # already there when the stream opened, and not asked for
            if self.last_id is None or message_id > self.last_id:
                self.last_id = message_id
            fresh.append((self.last_id, row))
        self._first = False
        # Later reads start at or above this floor, so nothing below it can come back.
        self._seen = {i for i in self._seen if i > floor}
        return fresh


def read_feed(
    conn: Connection, customer_id: str, cursor: FeedCursor, *, now_ms: int
) -> list[tuple[str, dict[str, Any]]]:
    """One read of a stream: messages it has not sent yet, with their SSE ids."""
    floor = cursor.floor(now_ms)
    rows: list[dict[str, Any]] = []
    after = floor
    while True:
        page = messages_after(conn, customer_id, after)
        rows.extend(page)
        if len(page) < _PAGE:
            return cursor.take(rows, floor=floor)
        after = page[-1]["id"]


class InboxListener:
    """One open stream's doorbell, rung from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def ring(self) -> None:
        if not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closing during shutdown
                self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float) -> bool:
        """Wait until rung or ``timeout`` seconds pass; True if rung."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        rung = self._event.is_set()
        self._event.clear()
        return rung


class InboxSignal:
    """In-process news that customers' inboxes have new rows, for the streams open here.

    Only a shortcut: streams read the database anyway, which is how they learn about
    messages written by other processes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[str, set[InboxListener]] = {}

    def notify(self, customer_ids: Iterable[str]) -> None:
        """Thread-safe; call after the transaction that wrote the messages commits."""
        with self._lock:
            listeners = [
                listener
                for customer_id in set(customer_ids)
                for listener in self._listeners.get(customer_id, ())
            ]
        for listener in listeners:
            listener.ring()

    def listening(self, customer_id: str) -> int:
        """How many streams of this customer are open in this process."""
        with self._lock:
            return len(self._listeners.get(customer_id, ()))

    @contextlib.contextmanager
    def listen(self, customer_id: str) -> Iterator[InboxListener]:
        """Call from the event loop that will wait on the listener."""
        listener = InboxListener(asyncio.get_running_loop())
        with self._lock:
            self._listeners.setdefault(customer_id, set()).add(listener)
        try:
            yield listener
        finally:
            with self._lock:
                waiting = self._listeners.get(customer_id)
                if waiting is not None:
                    waiting.discard(listener)
                    if not waiting:
                        del self._listeners[customer_id]
