"""Worker processes killed with SIGKILL while their SMS sends to Twilio are in flight.

Two real ``tidings worker`` processes share one database (PostgreSQL when
TIDINGS_TEST_POSTGRES_URL is set, else SQLite) holding a few thousand queued SMS, sent to a
Twilio stand-in on loopback that takes a little while to answer, as the real API does. A
worker is killed several times mid-batch and replaced. Delivery is at-least-once (DESIGN,
delivery: a job whose worker died is claimed again after its lease expires): nothing may be
lost or given up, and a message may reach Twilio twice only if it was in flight in a killed
worker, carrying the same stable message id both times so the copies can be recognized.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from tests.support import databases, processes
from tests.support.events import refund_authorized
from tests.support.providers import TwilioApi, as_environment, customer, write_refund_rules
from tests.support.work import in_flight
from tidings.config import Settings
from tidings.db.schema import delivery_jobs, notifications
from tidings.delivery.worker import PIPELINES
from tidings.intake.cloudevents_http import BATCH
from tidings.runtime import build_runtime

MESSAGES = 3000
INTAKE_BATCH = 1000  # the most one intake request takes (TIDINGS_BATCH_MAX_EVENTS)
WORKER_BATCH = 20
LEASE_SECONDS = 2
KILLS = 4
TWILIO_LATENCY = 0.05


@pytest.fixture
def database_url(postgres_url: str | None, sqlite_template: Path, tmp_path: Path) -> str:
    """PostgreSQL when it is configured (several workers is what it is for), else SQLite."""
    if postgres_url is None:
        return databases.fresh_sqlite(sqlite_template, tmp_path)
    return databases.emptied_postgres(postgres_url)


@pytest.fixture
def twilio() -> Iterator[TwilioApi]:
    api = TwilioApi()
    api.latency = TWILIO_LATENCY
    api.start()
    yield api
    api.server.stop()


def queue_refunds(settings: Settings) -> None:
    runtime = build_runtime(settings)
    try:
        for start in range(0, MESSAGES, INTAKE_BATCH):
            events = [
                refund_authorized(f"K{n}", customer=customer(n, phone=True, email=False))
                for n in range(start, min(start + INTAKE_BATCH, MESSAGES))
            ]
            outcome = runtime.intake.submit(BATCH, {}, json.dumps(events).encode(), actor="test")
            assert all(item.accepted is not None for item in outcome.items)
    finally:
        runtime.close()


def job_states(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(delivery_jobs.c.status, func.count()).group_by(delivery_jobs.c.status)
        ).all()
    return {str(status): int(n) for status, n in rows}


@pytest.mark.slow
def test_killed_http_workers_lose_nothing_and_repeat_only_sends_in_flight(
    database_url: str, twilio: TwilioApi, tmp_path: Path
) -> None:
    rules = write_refund_rules(tmp_path)
    values: dict[str, Any] = {
        "database_url": database_url,
        "var_dir": tmp_path,
        "rules_path": rules,
        "sms_providers": "twilio",
        "retry_max_attempts": 10,
        "retry_base_seconds": 0.1,
        "retry_max_seconds": 1.0,
        **twilio.settings(),
    }
    queue_refunds(Settings(**values))
    engine = databases.engine_for(database_url)
    env = processes.tidings_env(
        **as_environment(values),
        worker_batch_size=WORKER_BATCH,
        worker_lease_seconds=LEASE_SECONDS,
        worker_poll_interval=0.05,
    )

    def start(n: int) -> subprocess.Popen[bytes]:
        return processes.start(["worker"], env, tmp_path / f"worker{n}.log")

    running = [start(0), start(1)]
    killed: list[list[str]] = []  # what each killed worker had in flight
    try:
        for kill in range(KILLS):
            slot = kill % 2
            victim = running[slot]
            threshold = (kill + 1) * MESSAGES // (KILLS + 2)

            def sending(
                victim: subprocess.Popen[bytes] = victim, threshold: int = threshold
            ) -> bool:
                return sum(twilio.snapshot().values()) >= threshold and bool(
                    in_flight(engine, victim.pid)
                )

            processes.wait_until(
                sending, timeout=60, what=f"{threshold} sends and a batch in flight"
            )
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait()
            killed.append(sorted(in_flight(engine, victim.pid)))
            assert job_states(engine).get("sent", 0) < MESSAGES, "the kill must land mid-run"
            running[slot] = start(kill + 2)
        processes.wait_until(
            lambda: job_states(engine) == {"sent": MESSAGES}, timeout=60, what="every job sent"
        )
    finally:
        for process in running:
            processes.stop(process)

    with engine.connect() as conn:
        sent = conn.execute(
            select(notifications.c.id).where(
                notifications.c.channel == "sms", notifications.c.status == "sent"
            )
        ).all()
        taken_over = conn.execute(
            select(func.count()).where(delivery_jobs.c.attempts > 1)
        ).scalar_one()
    engine.dispose()
    accepted = twilio.snapshot()
    duplicated = {stable for stable, n in accepted.items() if n > 1}
    duplicates = sum(accepted.values()) - len(accepted)
    exposed = {f"{notification}.sms" for batch in killed for notification in batch}
    print(
        f"\nSIGKILL x{KILLS} of 2 HTTP workers: {MESSAGES} messages, "
        f"{sum(accepted.values())} sends accepted by Twilio, {duplicates} duplicates, "
        f"in flight at each kill {[len(batch) for batch in killed]}, "
        f"{taken_over} jobs taken over after their lease ran out"
    )
    assert len(sent) == MESSAGES  # none lost, none dead
    assert set(accepted) == {f"{row.id}.sms" for row in sent}  # each reached Twilio
    assert twilio.accepted_without_id == 0
    assert exposed, "no kill caught a batch in flight"
    assert taken_over >= len(exposed)  # each was claimed again once its lease ran out
    # A copy beyond the first is only ever of a message a killed worker was sending, and at
    # most one per kill that caught it.
    assert duplicated <= exposed
    # A worker has up to PIPELINES batches in flight.
    assert duplicates <= sum(len(batch) for batch in killed) <= KILLS * WORKER_BATCH * PIPELINES
