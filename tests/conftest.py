"""Fixtures: a migrated database per test on every backend, a real SMTP server, the app."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.support import databases
from tests.support.smtp import SmtpServer, free_port
from tidings.api.app import create_app
from tidings.api.keys import create_key
from tidings.config import Settings
from tidings.db.types import utcnow
from tidings.runtime import Runtime, build_runtime

# Tests of what only PostgreSQL has (LISTEN/NOTIFY) live in *_postgres.py files: collected
# whenever TIDINGS_TEST_POSTGRES_URL is set (as in CI), where they must run and pass.
collect_ignore_glob = [] if databases.postgres_admin_url() else ["*/*_postgres.py"]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return databases.migrated_sqlite_template(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    if not databases.postgres_admin_url():
        yield None
        return
    # Not a skip: with the variable set, an unreachable server must fail the run.
    name = f"tidings_test_{os.getpid()}"
    url = databases.create_postgres_database(name)
    yield url
    databases.drop_postgres_database(name)


@pytest.fixture(params=databases.backends())
def db_url(
    request: pytest.FixtureRequest,
    sqlite_template: Path,
    postgres_url: str | None,
    tmp_path: Path,
) -> str:
    if request.param == "sqlite":
        return databases.fresh_sqlite(sqlite_template, tmp_path)
    assert postgres_url is not None
    return databases.emptied_postgres(postgres_url)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = databases.engine_for(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer(port=free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(db_url: str, smtp_server: SmtpServer, tmp_path: Path) -> Settings:
    return Settings(
        var_dir=tmp_path,
        database_url=db_url,
        smtp_url=smtp_server.url,
        retry_base_seconds=0.05,
        retry_max_seconds=0.2,
        retry_max_attempts=4,
        worker_poll_interval=0.02,
        smtp_timeout=2.0,
        provider_cooldown_seconds=0.2,
    )


@pytest.fixture
def runtime(settings: Settings, engine: Engine) -> Runtime:
    return build_runtime(settings, engine=engine)


@pytest.fixture
def admin_key(runtime: Runtime) -> str:
    with runtime.engine.begin() as conn:
        _, key = create_key(conn, name="test-admin", scopes=["admin"], actor="tester", now=utcnow())
    return key


@pytest.fixture
def client(runtime: Runtime, admin_key: str) -> Iterator[TestClient]:
    with TestClient(create_app(runtime)) as test_client:
        test_client.headers["Authorization"] = f"Bearer {admin_key}"
        yield test_client


@pytest.fixture(scope="session")
def sqlite_template_path(sqlite_template: Path) -> Path:
    """The migrated SQLite file itself, for tests that copy it per example."""
    return sqlite_template
