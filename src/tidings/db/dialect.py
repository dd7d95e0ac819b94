"""The few statements whose spelling differs between SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def upsert(conn: Connection, table: Table) -> Any:
    """An INSERT that supports ``on_conflict_do_nothing`` / ``on_conflict_do_update``."""
    return upsert_for(conn.dialect.name, table)


def upsert_for(dialect: str, table: Table) -> Any:
    """``upsert`` for a dialect by name, for statements built once and reused."""
    if dialect == "sqlite":
        return sqlite.insert(table)
    return postgresql.insert(table)
