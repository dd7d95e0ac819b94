"""Test databases: a fresh SQLite file per test, and a private PostgreSQL database per run.

When TIDINGS_TEST_POSTGRES_URL is set, storage tests run on PostgreSQL too, and an
unreachable server fails the run instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from tidings.db.engine import create_db_engine, create_disposable_engine, normalize_url
from tidings.db.migrate import upgrade
from tidings.db.schema import metadata

POSTGRES_ENV = "TIDINGS_TEST_POSTGRES_URL"


def postgres_admin_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


def backends() -> list[str]:
    return ["sqlite", "postgresql"] if postgres_admin_url() else ["sqlite"]


def migrated_sqlite_template(directory: Path) -> Path:
    path = directory / "template.db"
    if not path.exists():
        engine = create_disposable_engine(f"sqlite:///{path}")
        upgrade(engine)
        engine.dispose()
    return path


def fresh_sqlite(template: Path, directory: Path) -> str:
    target = directory / "tidings.db"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


def create_postgres_database(name: str) -> str:
    """Create (or recreate) a migrated database for this test run; returns its URL."""
    admin_url = postgres_admin_url()
    assert admin_url, POSTGRES_ENV
    admin = create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    url = make_url(normalize_url(admin_url)).set(database=name).render_as_string(False)
    engine = create_disposable_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


def drop_postgres_database(name: str) -> None:
    admin_url = postgres_admin_url()
    assert admin_url
    admin = create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def truncate_all(engine: Engine) -> None:
    """Empty every table between tests and reset the audit chain to its genesis."""
    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        conn.execute(
            text("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, :h)"), {"h": "0" * 64}
        )


def emptied_postgres(url: str) -> str:
    """The run's PostgreSQL database with every table emptied, for one more test."""
    engine = engine_for(url)
    truncate_all(engine)
    engine.dispose()
    return url


def engine_for(url: str) -> Engine:
    return create_db_engine(url, pool_size=4)
