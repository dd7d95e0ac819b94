"""Worker processes under real faults: SIGKILL mid-run, and two workers sharing one database."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.support import processes
from tests.support.events import JORDAN
from tests.support.smtp import SmtpServer
from tidings.db.schema import delivery_attempts, delivery_jobs, inbox_messages
from tidings.delivery.worker import PIPELINES
from tidings.events.envelope import CanonicalEvent
from tidings.runtime import Runtime

EVENTS = 1000
BATCH = 25


def refunds(count: int) -> list[CanonicalEvent]:
    customer = {**JORDAN}
    return [
        CanonicalEvent(
            source="https://shop.example.com/oms",
            id=f"refund-{n}",
            type="refund.authorized",
            subject=f"order/{n}",
            time=None,
            data={
                "order_id": str(n),
                "refund_id": f"re_{n}",
                "amount": 100 + n,
                "currency": "USD",
                "method": "card",
                "customer": customer,
            },
        )
        for n in range(count)
    ]


def job_states(runtime: Runtime) -> dict[str, int]:
    with runtime.engine.connect() as conn:
        rows = conn.execute(
            select(delivery_jobs.c.status, func.count()).group_by(delivery_jobs.c.status)
        ).all()
    return {status: int(n) for status, n in rows}


def all_sent(runtime: Runtime) -> bool:
    return job_states(runtime) == {"sent": 2 * EVENTS}


def worker_env(runtime: Runtime, smtp_server: SmtpServer, tmp_path: Path) -> dict[str, str]:
    return processes.tidings_env(
        database_url=runtime.settings.database_url,
        smtp_url=smtp_server.url,
        var_dir=tmp_path,
        worker_batch_size=BATCH,
        worker_lease_seconds=2,
        worker_poll_interval=0.05,
    )


@pytest.mark.slow
def test_sigkill_mid_run_loses_nothing_and_duplicates_only_in_flight_sends(
    runtime: Runtime, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    runtime.intake.accept_events(refunds(EVENTS), actor="test")
    env = worker_env(runtime, smtp_server, tmp_path)
    kills = 0
    for threshold in (200, 500):
        worker = processes.start(["worker"], env, tmp_path / "worker.log")
        processes.wait_until(
            lambda t=threshold: len(smtp_server.messages()) >= t,  # type: ignore[misc]
            timeout=60,
            what=f"{threshold} messages",
        )
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        kills += 1
        assert not all_sent(runtime), "the kill must land mid-run for this test to mean anything"

    worker = processes.start(["worker"], env, tmp_path / "worker.log")
    try:
        processes.wait_until(lambda: all_sent(runtime), timeout=90, what="every job sent")
    finally:
        processes.stop(worker)

    ids = smtp_server.message_ids()
    duplicates = sum(ids.values()) - len(ids)
    with runtime.engine.connect() as conn:
        inbox = conn.execute(select(func.count()).select_from(inbox_messages)).scalar()
        retried = conn.execute(
            select(func.count()).select_from(delivery_jobs).where(delivery_jobs.c.attempts > 1)
        ).scalar()
    print(
        f"\nSIGKILL x{kills}: {len(ids)} distinct emails, {duplicates} re-sent after a kill, "
        f"{retried} jobs taken over after their lease ran out, {inbox} inbox messages"
    )
    assert len(ids) == EVENTS  # every message arrived, none is missing
    assert inbox == EVENTS  # in-app delivery commits with its outcome: exactly once
    # At-least-once over SMTP: only a send in flight when the worker died can repeat,
    # and it repeats with the same Message-ID, so a mail system can recognize it.
    assert duplicates <= kills * BATCH * PIPELINES  # each of its loops had a batch out


@pytest.mark.slow
def test_two_worker_processes_never_send_the_same_message_twice(
    runtime: Runtime, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    runtime.intake.accept_events(refunds(EVENTS), actor="test")
    env = worker_env(runtime, smtp_server, tmp_path)
    env["TIDINGS_WORKER_LEASE_SECONDS"] = "60"
    workers = [processes.start(["worker"], env, tmp_path / f"worker{n}.log") for n in (1, 2)]
    try:
        processes.wait_until(lambda: all_sent(runtime), timeout=90, what="every job sent")
    finally:
        for worker in workers:
            processes.stop(worker)

    ids = smtp_server.message_ids()
    assert len(ids) == EVENTS
    assert max(ids.values()) == 1, "a message was sent twice"
    with runtime.engine.connect() as conn:
        per_worker = dict(
            conn.execute(
                select(delivery_attempts.c.worker_id, func.count()).group_by(
                    delivery_attempts.c.worker_id
                )
            ).all()
        )
        attempts = conn.execute(select(func.count()).select_from(delivery_attempts)).scalar()
    print(f"\ntwo workers: attempts per worker {sorted(per_worker.values())}")
    assert attempts == 2 * EVENTS  # one attempt per message: nothing was claimed twice
    assert len(per_worker) == 2  # both workers did share the work
