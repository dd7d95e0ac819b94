"""`tidings demo`: the whole pipeline on a throw-away database, start to finish."""

from __future__ import annotations

import asyncio
import socket
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import func, select

from tidings.config import Settings
from tidings.db.engine import create_disposable_engine
from tidings.db.migrate import upgrade
from tidings.db.schema import delivery_jobs, events, notifications
from tidings.db.types import utcnow
from tidings.delivery.sink import MailSink
from tidings.demo import demo_events
from tidings.runtime import Runtime, build_runtime

BATCH = 200
DEADLINE_SECONDS = 300


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def percentile(sorted_values: list[float], share: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return 0.0
    rank = max(1, round(share * len(sorted_values) + 0.5))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def run_demo(*, orders: int, seed: int, console: Console) -> int:
    with tempfile.TemporaryDirectory(prefix="tidings-demo-") as tmp:
        sink = MailSink(port=free_port())
        sink.start()
        settings = Settings(
            var_dir=Path(tmp),
            database_url=f"sqlite:///{tmp}/demo.db",
            smtp_url=f"smtp://127.0.0.1:{sink.port}",
            worker_poll_interval=0.05,
        )
        engine = create_disposable_engine(settings.database_url)
        upgrade(engine)
        engine.dispose()
        runtime = build_runtime(settings)
        try:
            stream = demo_events(orders, seed=seed)
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("events in", total=len(stream))
                for start in range(0, len(stream), BATCH):
                    chunk = stream[start : start + BATCH]
                    runtime.intake.accept_events(chunk, actor="demo")
                    progress.advance(task, len(chunk))
            finished = asyncio.run(_deliver(runtime, console))
            return _summary(runtime, sink, console, finished=finished)
        finally:
            runtime.close()
            sink.stop()


def _active(runtime: Runtime) -> tuple[int, int]:
    """All jobs, and those still to run now. A job waiting for a later time (a held
    in-transit scan, quiet hours, a digest) is in its final state for this run."""
    with runtime.engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(delivery_jobs)).scalar() or 0
        active = (
            conn.execute(
                select(func.count()).where(
                    (delivery_jobs.c.status == "leased")
                    | ((delivery_jobs.c.status == "queued") & (delivery_jobs.c.run_at <= utcnow()))
                )
            ).scalar()
            or 0
        )
    return int(total), int(active)


async def _deliver(runtime: Runtime, console: Console) -> bool:
    worker = runtime.new_worker()
    running = asyncio.create_task(worker.run())
    total, active = _active(runtime)
    deadline = time.monotonic() + DEADLINE_SECONDS
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("delivering", total=total)
        while active and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            total, active = await asyncio.to_thread(_active, runtime)
            progress.update(task, completed=total - active)
    worker.stop()
    await running
    return active == 0


def _summary(runtime: Runtime, sink: MailSink, console: Console, *, finished: bool) -> int:
    with runtime.engine.connect() as conn:
        event_count = conn.execute(select(func.count()).select_from(events)).scalar() or 0
        by_state = conn.execute(
            select(notifications.c.channel, notifications.c.status, func.count())
            .group_by(notifications.c.channel, notifications.c.status)
            .order_by(notifications.c.channel, notifications.c.status)
        ).all()
        timings = conn.execute(
            select(notifications.c.created_at, notifications.c.sent_at).where(
                notifications.c.sent_at.is_not(None)
            )
        ).all()
    latencies = sorted((sent - created).total_seconds() * 1000 for created, sent in timings)
    table = Table("channel", "state", "notifications", title="Tidings demo")
    for channel, status, count in by_state:
        table.add_row(channel, status, str(count))
    console.print(table)
    console.print(f"events stored           {event_count}")
    console.print(f"mail received by SMTP   {len(sink.messages())}")
    console.print(
        f"event → sent latency    p50 {percentile(latencies, 0.50):.0f} ms, "
        f"p99 {percentile(latencies, 0.99):.0f} ms"
    )
    if not finished:
        console.print("[red]some messages did not reach a final state in time[/]")
        return 1
    return 0
