"""The end-to-end rows on PostgreSQL, and the databases of every PostgreSQL row.

A row that needs PostgreSQL creates a database of its own on the server named by
``TIDINGS_BENCH_POSTGRES_URL`` (an admin URL; trust auth on the loopback by default) and
drops it when it ends, also on errors and Ctrl-C. A server that cannot be reached does not
stop the run: the row's lines are left without figures and say why in the details.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from typing import Any

from bench.rows import (
    CLIENTS,
    OFFERED_RATE,
    Line,
    Options,
    RowResult,
    e2e_latency,
    e2e_sustained,
)

ADMIN_ENV = "TIDINGS_BENCH_POSTGRES_URL"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
WORKERS = 2
SUSTAINED_TARGET = 1000.0


def admin_url() -> str:
    return os.environ.get(ADMIN_ENV) or DEFAULT_ADMIN_URL


def database_url(name: str, *, driver: str = "postgresql+psycopg") -> str:
    """The URL of database ``name`` on the admin URL's server; ``driver="postgresql"``
    gives a plain libpq URL (for other libraries than SQLAlchemy)."""
    from sqlalchemy.engine import make_url

    from tidings.db.engine import normalize_url

    url = make_url(normalize_url(admin_url())).set(drivername=driver, database=name)
    return url.render_as_string(hide_password=False)


def _admin_engine() -> Any:
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from tidings.db.engine import normalize_url

    return create_engine(
        normalize_url(admin_url()),
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
        connect_args={"connect_timeout": 5},
    )


def server_info() -> dict[str, Any] | str:
    """The server's version and durability settings, or why it cannot be reached."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    engine = _admin_engine()
    try:
        with engine.connect() as conn:
            info = {"server_version": conn.execute(text("SHOW server_version")).scalar()}
            for setting in ("fsync", "synchronous_commit", "shared_buffers", "max_connections"):
                info[setting] = conn.execute(text(f"SHOW {setting}")).scalar()
            return info
    except (DBAPIError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL at {_safe(admin_url())} cannot be reached: {first}"
    finally:
        engine.dispose()


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@contextlib.contextmanager
def postgres_database(label: str, log: Callable[[str], None]) -> Iterator[str]:
    """A new, empty database ``tidings_bench_<pid>_<label>`` for one measurement; its
    SQLAlchemy URL. Dropped (``WITH (FORCE)``: connections still open are ended) when the
    block ends, however it ends."""
    from sqlalchemy import text

    name = f"tidings_bench_{os.getpid()}_{label}"
    engine = _admin_engine()
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield database_url(name)
        finally:
            try:
                with engine.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            except Exception as exc:  # must not hide the row's own error
                log(f"could not drop database {name}: {exc}")
    finally:
        engine.dispose()


def unavailable(name: str, lines: list[tuple[str, str, str]], reason: str) -> RowResult:
    """The row's lines without figures: (path, unit, target) each; ``reason`` in details."""
    return RowResult(
        name,
        [Line(path, math.nan, unit, None, target, None) for path, unit, target in lines],
        {"skipped": reason},
    )


# --- row: end to end on PostgreSQL --------------------------------------------------------


def postgres(options: Options) -> RowResult:
    """The end-to-end measurements on PostgreSQL, each on a fresh database: ``tidings serve
    --no-worker`` plus two ``tidings worker`` processes. The e2e rows' open loop (fixed
    offered rate: delivered/s, accept->SMTP p50/p99), then their closed loop (32 clients:
    emails per second after the first 2 s)."""
    how = f"postgres, serve + {WORKERS} tidings workers"
    info = server_info()
    if isinstance(info, str):
        options.log(f"postgres: skipped, {info}")
        latency_label = f"e2e {OFFERED_RATE:,.0f}/s offered, {how}"
        return unavailable(
            "postgres",
            [
                (f"{latency_label}: delivered/s", "/s", f"keeps up ({OFFERED_RATE:,.0f}/s)"),
                (f"{latency_label}: accept->SMTP p50", "ms", ""),
                (f"{latency_label}: accept->SMTP p99", "ms", "<= 100 ms"),
                (
                    f"e2e sustained, {CLIENTS} clients, {how}: delivered/s",
                    "/s",
                    f">= {SUSTAINED_TARGET:,.0f} /s",
                ),
            ],
            info,
        )

    with postgres_database("latency", options.log) as url:
        latency = e2e_latency(
            options, "process", workers=WORKERS, database_url=url, how=how, name="postgres"
        )
    with postgres_database("sustained", options.log) as url:
        sustained = e2e_sustained(
            options,
            worker="process",
            workers=WORKERS,
            database_url=url,
            how=how,
            target=SUSTAINED_TARGET,
            name="postgres",
        )
    return RowResult(
        "postgres",
        latency.lines + sustained.lines,
        {
            "postgres": info,
            "worker_processes": WORKERS,
            "latency": latency.details,
            "sustained": sustained.details,
        },
    )
