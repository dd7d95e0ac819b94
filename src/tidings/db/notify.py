"""New work, announced across processes with PostgreSQL's LISTEN/NOTIFY.

Intake announces in the transaction that stores events (``announce``); PostgreSQL
delivers the notification when, and only if, it commits, and folds repeats within one
transaction. Every worker listens on its own connection (``listen``) and wakes at once,
on any machine, instead of waiting for its next poll; polling stays as the fallback for
work that falls due later (retries, held messages) and for SQLite, where API and worker
share a process and wake each other directly (delivery/wakeup.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy import Connection, Engine, text

log = logging.getLogger(__name__)

CHANNEL = "tidings_work"
RECONNECT_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)


def announce(conn: Connection) -> None:
    """Tell listening workers there is new work, once this transaction commits."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})


def listens(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


async def listen(engine: Engine, wake: Callable[[], None]) -> None:
    """Call ``wake`` on every announcement until cancelled; reconnect when the connection
    drops, waking once on each reconnect for what was announced meanwhile."""
    import psycopg

    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    failures = 0
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                failures = 0
                wake()
                async for _ in conn.notifies():
                    wake()
        except psycopg.Error as exc:
            pause = RECONNECT_SECONDS[min(failures, len(RECONNECT_SECONDS) - 1)]
            failures += 1
            log.warning("listening for new work failed (%s); again in %.1f s", exc, pause)
            await asyncio.sleep(pause)
