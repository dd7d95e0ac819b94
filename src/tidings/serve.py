"""`tidings serve`: API, delivery worker, mail sink and pages in one process."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from rich.console import Console
from sqlalchemy import func, select

from tidings.api.app import create_app
from tidings.api.keys import create_key
from tidings.config import Settings
from tidings.db.schema import events
from tidings.db.types import utcnow
from tidings.delivery.sink import MailSink
from tidings.demo import demo_events
from tidings.runtime import Runtime, build_runtime

console = Console()
DEMO_KEY_FILE = "demo-api-key"


def serve(settings: Settings, *, host: str, port: int, with_worker: bool, demo: bool) -> None:
    runtime = build_runtime(settings)
    if settings.uses_embedded_sink:
        runtime.sink = MailSink(port=settings.smtp_sink_port)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if runtime.sink is not None:
            runtime.sink.start()
        task = asyncio.create_task(runtime.new_worker().run()) if with_worker else None
        try:
            yield
        finally:
            for worker in runtime.workers:
                worker.stop()
            if task is not None:
                await task
            if runtime.sink is not None:
                runtime.sink.stop()

    app = create_app(runtime, lifespan=lifespan)
    if demo:
        key = ensure_demo_key(runtime, Path(settings.var_dir))
        seeded = seed_demo_data(runtime)
        console.rule("[bold]Tidings[/]")
        console.print(f"API        http://{host}:{port}/docs")
        if runtime.sink is not None:
            console.print(
                f"Mailbox    http://{host}:{port}/dev/mailbox "
                f"(SMTP sink on 127.0.0.1:{settings.smtp_sink_port})"
            )
        console.print(f"Demo key   [bold green]{key}[/]")
        if seeded:
            console.print(f"Demo data  {seeded} events queued for delivery")
        console.print(
            "Try        curl -s -H 'Authorization: Bearer <key>' "
            f"http://{host}:{port}/api/customers/cus_0/inbox"
        )
        console.rule()
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info")).run()
    runtime.close()


def ensure_demo_key(runtime: Runtime, var_dir: Path) -> str:
    """A full-access key for local use, kept in var/ so the same key works across restarts."""
    path = var_dir / DEMO_KEY_FILE
    if path.exists():
        key = path.read_text().strip()
        if runtime.keys.verify(key) is not None:
            return key
    with runtime.engine.begin() as conn:
        _, key = create_key(conn, name="demo", scopes=["admin"], actor="demo", now=utcnow())
    var_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(key + "\n")
    os.chmod(path, 0o600)
    return key


def seed_demo_data(runtime: Runtime, orders: int = 120) -> int:
    """Fill an empty database with a day of orders and refunds; returns events added."""
    with runtime.engine.connect() as conn:
        if conn.execute(select(func.count()).select_from(events)).scalar():
            return 0
    batch = demo_events(orders)
    runtime.intake.accept_events(batch, actor="demo")
    return len(batch)
