"""On SQLite, API and worker share a process and wake each other directly: no LISTEN/NOTIFY.

The PostgreSQL side is in test_listen_postgres.py.
"""

from __future__ import annotations

from pathlib import Path

from tests.support import databases
from tidings.db import notify


def test_sqlite_neither_listens_nor_announces(sqlite_template: Path, tmp_path: Path) -> None:
    engine = databases.engine_for(databases.fresh_sqlite(sqlite_template, tmp_path))
    try:
        assert not notify.listens(engine)
        with engine.begin() as conn:
            notify.announce(conn)  # a no-op, not an error
    finally:
        engine.dispose()
