"""``/healthz`` (the process answers) and ``/readyz`` (it can do its work). No credentials."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from tidings.db.engine import read_transaction
from tidings.db.migrate import current_revision, head_revision
from tidings.db.schema import workers
from tidings.db.types import utcnow

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    runtime = request.app.state.runtime
    checks: dict[str, Any] = {}
    try:
        with read_transaction(runtime.engine) as conn:
            current = current_revision(conn)
            newest = conn.execute(
                select(func.max(workers.c.heartbeat_at)).where(workers.c.stopped_at.is_(None))
            ).scalar()
        checks["database"] = {"ok": True}
        head = head_revision()
        checks["migrations"] = {"ok": current == head, "current": current, "head": head}
        stale = timedelta(seconds=runtime.settings.heartbeat_stale_seconds)
        fresh = newest is not None and utcnow() - newest <= stale
        checks["worker"] = {
            "ok": fresh,
            "last_heartbeat": newest.isoformat() if newest else None,
        }
    except SQLAlchemyError as exc:
        checks["database"] = {"ok": False, "error": type(exc).__name__}
    ready = all(check.get("ok") for check in checks.values()) and len(checks) == 3
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
    )
