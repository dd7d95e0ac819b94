"""Running the delivery worker in a test until the queue settles."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import Engine, func, select

from tidings.db.schema import delivery_jobs, workers
from tidings.runtime import Runtime


def in_flight(engine: Engine, pid: int) -> set[str]:
    """The notifications leased to the worker process ``pid``: what it was sending."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(delivery_jobs.c.notification_id)
            .join(workers, workers.c.id == delivery_jobs.c.worker_id)
            .where(workers.c.pid == pid, delivery_jobs.c.status == "leased")
        ).all()
    return {str(row.notification_id) for row in rows}


def active_jobs(runtime: Runtime) -> int:
    with runtime.engine.connect() as conn:
        count = conn.execute(
            select(func.count()).where(delivery_jobs.c.status.in_(("queued", "leased")))
        ).scalar()
    return int(count or 0)


def drain(runtime: Runtime, *, timeout: float = 20.0) -> None:
    """Run one worker until no job is queued or leased (retries included)."""

    async def run() -> None:
        worker = runtime.new_worker()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if await worker.run_once() == 0:
                    if await asyncio.to_thread(active_jobs, runtime) == 0:
                        return
                    await asyncio.sleep(0.02)
            raise AssertionError(f"{active_jobs(runtime)} jobs still active after {timeout}s")
        finally:
            await worker.close()

    asyncio.run(run())
