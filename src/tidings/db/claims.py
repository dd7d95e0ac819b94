"""Claiming due rows: lock the first ones for this transaction, then move exactly those.

Two statements on purpose. In one ``UPDATE ... WHERE id IN (SELECT ... LIMIT n FOR
UPDATE SKIP LOCKED)``, PostgreSQL may run the subquery again for rows it updates, and a
rerun that sees the rows already moved takes the next ones: one claim of ``LIMIT 1``
moved two refunds. Selecting the keys first, locked (``SKIP LOCKED``: concurrent workers
take other rows instead of waiting), and then updating those keys claims at most the
limit. SQLite ignores the locking clause; its writers are serialized by BEGIN IMMEDIATE.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Select


def lock_due(conn: Connection, due: Select[Any]) -> list[Any]:
    """The first column of ``due`` (which carries its own ORDER BY and LIMIT) for the rows
    now locked by this transaction and skipped by everyone else's."""
    return list(conn.execute(due.with_for_update(skip_locked=True)).scalars())
