"""The baseline for single-event intake: the least a FastAPI service must do for the same job.

``POST /api/events`` reads a structured CloudEvent (``application/cloudevents+json``),
validates it with pydantic against the same shape as Tidings' ``refund.authorized``, inserts
one row with stdlib sqlite3 and answers 202. Durability matches Tidings' SQLite defaults
(src/tidings/db/engine.py): WAL, ``synchronous=FULL``, foreign keys on, a 30 s busy
timeout and ``BEGIN IMMEDIATE`` write transactions; uvicorn runs as ``tidings serve``
runs it (one process, ``log_level="info"`` with its access log), and the handler runs in
the thread pool as Tidings' intake does.

Run as ``python -m bench.baseline_app --db PATH --port N``.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import threading
from datetime import UTC, datetime
from typing import Annotated, Literal

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, Field, StrictInt

Id = Annotated[str, Field(min_length=1, max_length=128)]

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    source TEXT NOT NULL,
    ce_id TEXT NOT NULL,
    type TEXT NOT NULL,
    time TEXT,
    data TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (source, ce_id)
)
"""


class Customer(BaseModel):
    id: Id
    name: str | None = None
    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$", max_length=320)
    locale: str | None = Field(default=None, max_length=35)
    time_zone: str | None = None


class RefundData(BaseModel):
    order_id: Id
    refund_id: Id
    payment_id: Id | None = None
    amount: Annotated[StrictInt, Field(ge=0)]
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    reason_code: str | None = None
    method: str | None = None
    customer: Customer | None = None


class CloudEvent(BaseModel):
    specversion: Literal["1.0"]
    id: Id
    source: str = Field(min_length=1, max_length=512)
    type: Literal["refund.authorized"]
    time: AwareDatetime | None = None
    data: RefundData


def connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def create_app(path: str) -> FastAPI:
    connect(path).execute(SCHEMA)
    local = threading.local()
    app = FastAPI()

    @app.post("/api/events", status_code=202)
    def post_event(event: CloudEvent) -> JSONResponse:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = connect(path)
        conn.execute("BEGIN IMMEDIATE")
        try:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?)",
                (
                    event.source,
                    event.id,
                    event.type,
                    event.time.isoformat() if event.time else None,
                    json.dumps(event.data.model_dump(mode="json")),
                    datetime.now(UTC).isoformat(),
                ),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        status = "accepted" if cursor.rowcount else "duplicate"
        return JSONResponse(
            {"status": status, "event_id": event.id}, status_code=202 if cursor.rowcount else 200
        )

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = create_app(args.db)
    uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="info")).run()


if __name__ == "__main__":
    main()
