"""Storage: engine, schema, migrations. One schema serves SQLite and PostgreSQL."""
