"""Database engine: SQLite (WAL, foreign keys, immediate write transactions) or PostgreSQL."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool


def normalize_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and use the psycopg 3 driver for them."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def create_db_engine(url: str, *, pool_size: int = 8) -> Engine:
    url = normalize_url(url)
    if _prepare_sqlite_file(url):
        engine = create_engine(
            url,
            # The driver's own transaction handling is turned off so that we can
            # issue BEGIN IMMEDIATE ourselves: a deferred transaction that later
            # writes can fail with SQLITE_BUSY without waiting for busy_timeout.
            connect_args={"isolation_level": None, "check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size * 2,
        )
        _install_sqlite_hooks(engine)
        return engine
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size * 2,
        pool_pre_ping=True,
    )


def create_disposable_engine(url: str) -> Engine:
    """An engine for one-shot commands (migrate, CLI): no pooled connections left behind."""
    url = normalize_url(url)
    if not _prepare_sqlite_file(url):
        return create_engine(url, poolclass=NullPool)
    engine = create_engine(
        url, poolclass=NullPool, connect_args={"isolation_level": None, "timeout": 30}
    )
    _install_sqlite_hooks(engine)
    return engine


def _prepare_sqlite_file(url: str) -> bool:
    """For a SQLite URL, make sure the file's folder exists; returns whether it is SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return False
    database = parsed.database or ""
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    return True


# One writer at a time per SQLite file is SQLite's rule; waiting for it in SQLite's busy
# handler means sleeping in growing steps (up to 100 ms) and retrying, which under many
# threads makes a long tail and idle gaps. Writers of one process queue on this lock
# instead and start the moment the previous one ends, in the order they came: under a
# flood of intake requests the in-process worker's claim still gets its turn. Other
# processes still meet SQLite's own lock and busy handler.
WRITER_WAIT_SECONDS = 30.0
_HOLDS = "tidings_holds_writer_lock"


class FifoLock:
    """A lock handed to its waiters in arrival order (``threading.Lock`` lets any waiter,
    or a newcomer, take it: one busy thread group can keep the others out)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._waiters: deque[threading.Lock] = deque()
        self._held = False

    def acquire(self, timeout: float) -> bool:
        with self._guard:
            if not self._held:
                self._held = True
                return True
            turn = threading.Lock()
            turn.acquire()
            self._waiters.append(turn)
        if turn.acquire(timeout=timeout):
            return True  # handed over by release(): held now
        with self._guard:
            try:
                self._waiters.remove(turn)
            except ValueError:
                return True  # handed over just as the wait ran out
            return False

    def release(self) -> None:
        with self._guard:
            if self._waiters:
                self._waiters.popleft().release()  # ownership passes, still held
            else:
                self._held = False


_WRITERS: dict[str, FifoLock] = {}
_WRITERS_GUARD = threading.Lock()


def _writer_lock(database: str) -> FifoLock:
    key = os.path.realpath(database) if database and database != ":memory:" else database
    with _WRITERS_GUARD:
        return _WRITERS.setdefault(key, FifoLock())


def _install_sqlite_hooks(engine: Engine) -> None:
    writers = _writer_lock(engine.url.database or "")

    def release(info: dict[Any, Any]) -> None:
        if info.pop(_HOLDS, False):
            writers.release()

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # an accepted event survives power loss too
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        if mode != "IMMEDIATE":
            connection.exec_driver_sql(f"BEGIN {mode}")
            return
        if not writers.acquire(timeout=WRITER_WAIT_SECONDS):
            raise sqlite3.OperationalError(
                f"database is locked: no write transaction could start in "
                f"{WRITER_WAIT_SECONDS:.0f} s (one already open in this thread?)"
            )
        connection.info[_HOLDS] = True
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            release(connection.info)
            raise

    @event.listens_for(engine, "commit")
    def _on_commit(connection: Connection) -> None:
        release(connection.info)

    @event.listens_for(engine, "rollback")
    def _on_rollback(connection: Connection) -> None:
        release(connection.info)

    @event.listens_for(engine, "reset")
    def _on_reset(_dbapi: Any, record: Any, _state: Any) -> None:
        # A connection back in the pool never keeps the lock, however its work ended.
        release(record.info)


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A read-only unit of work: on SQLite it does not take the write lock."""
    with engine.connect() as conn:
        conn = conn.execution_options(sqlite_begin="DEFERRED")
        with conn.begin():
            yield conn
