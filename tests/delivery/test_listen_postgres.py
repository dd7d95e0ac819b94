"""Workers on PostgreSQL wake on other processes' commits (LISTEN/NOTIFY), not on polls.

Collected only when TIDINGS_TEST_POSTGRES_URL is set (tests/conftest.py): LISTEN/NOTIFY is
PostgreSQL's, and there it must run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from tests.support import databases
from tests.support.events import JORDAN, refund_authorized
from tests.support.smtp import SmtpServer
from tidings.config import Settings
from tidings.db import notify
from tidings.db.schema import notifications
from tidings.events.envelope import parse_structured
from tidings.runtime import build_runtime


@pytest.fixture
def pg_engine(postgres_url: str | None) -> Iterator[Engine]:
    assert postgres_url is not None, "collected only with TIDINGS_TEST_POSTGRES_URL set"
    engine = databases.engine_for(postgres_url)
    databases.truncate_all(engine)
    yield engine
    engine.dispose()


def test_a_commit_wakes_a_listener_and_a_rollback_does_not(pg_engine: Engine) -> None:
    async def scenario() -> int:
        woken = asyncio.Event()
        wakes = 0

        def wake() -> None:
            nonlocal wakes
            wakes += 1
            woken.set()

        listener = asyncio.create_task(notify.listen(pg_engine, wake))
        await asyncio.wait_for(woken.wait(), 10)  # connected: one wake for what it missed
        woken.clear()

        def rolled_back() -> None:
            with pg_engine.connect() as conn, conn.begin() as txn:
                notify.announce(conn)
                txn.rollback()

        def committed() -> None:
            with pg_engine.begin() as conn:
                notify.announce(conn)
                notify.announce(conn)  # folded into one on commit

        await asyncio.to_thread(rolled_back)
        await asyncio.to_thread(committed)
        await asyncio.wait_for(woken.wait(), 10)
        await asyncio.sleep(0.2)  # room for any stray second notification to arrive
        listener.cancel()
        return wakes

    assert asyncio.run(scenario()) == 2  # the connect, then the one committed announcement


def test_a_worker_delivers_what_another_process_stored_without_waiting_for_its_poll(
    pg_engine: Engine, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=pg_engine.url.render_as_string(hide_password=False),
        smtp_url=smtp_server.url,
        var_dir=tmp_path,
        worker_poll_interval=120.0,
    )
    working, other = build_runtime(settings), build_runtime(settings)

    async def scenario() -> int:
        worker = working.new_worker()
        running = asyncio.create_task(worker.run())
        await asyncio.sleep(0.5)  # listening, and idle until the 120 s poll
        event = parse_structured(refund_authorized("1042", customer=JORDAN))
        # Stored by another runtime: this process's own wake-up never hears of it.
        await asyncio.to_thread(other.intake.accept_events, [event], actor="shop")
        for _ in range(200):
            sent = await asyncio.to_thread(_sent, pg_engine)
            if sent == 2:
                break
            await asyncio.sleep(0.05)
        worker.stop()
        await asyncio.wait_for(running, 10)
        return sent

    try:
        assert asyncio.run(scenario()) == 2  # email and in-app, long before the next poll
    finally:
        working.close()
        other.close()
    assert len(smtp_server.parsed()) == 1


def _sent(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(notifications)
                .where(notifications.c.status == "sent")
            ).scalar_one()
        )
