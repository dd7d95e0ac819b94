"""The migrations build exactly the tables the code describes, on every backend."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

from tidings.db.migrate import head_revision
from tidings.db.schema import metadata


def test_migrated_schema_matches_the_tables_in_code(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        assert context.get_current_revision() == head_revision()
        differences = compare_metadata(context, metadata)
    assert differences == []
