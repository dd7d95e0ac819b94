"""``POST /api/events``: CloudEvents in structured, batch or binary mode."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tidings.api.auth import scope
from tidings.api.keys import Principal
from tidings.api.problems import PROBLEM_JSON, ApiProblem, problem_body
from tidings.events.envelope import EventError
from tidings.intake.cloudevents_http import RequestError
from tidings.intake.intake import ItemOutcome

router = APIRouter(tags=["intake"])


def item_result(outcome: ItemOutcome, retry_after: int | None = None) -> dict[str, Any]:
    if outcome.deferred:
        return {"index": outcome.item.index, "status": "deferred", "retry_after": retry_after}
    if outcome.accepted is not None:
        return {
            "index": outcome.item.index,
            "status": "duplicate" if outcome.accepted.duplicate else "accepted",
            "id": outcome.accepted.id,
            "source": outcome.accepted.source,
            "event_id": outcome.accepted.event_id,
            "notifications": outcome.accepted.notifications,
        }
    error = outcome.item.error or EventError("invalid_request", "The request was not read.")
    return {
        "index": outcome.item.index,
        "status": "rejected",
        "problem": problem_body(
            422, error.code, error.detail, field=error.field, reject_id=outcome.reject_id
        ),
    }


@router.post(
    "/api/events",
    status_code=202,
    summary="Submit CloudEvents",
    description=(
        "Structured mode (application/cloudevents+json), batch mode "
        "(application/cloudevents-batch+json, each event accepted or rejected on its own) "
        "or binary mode (ce-* headers, JSON body). An event already received from the same "
        "source with the same id is answered as a duplicate and changes nothing. While "
        "deliveries are backed up past TIDINGS_BACKLOG_HIGH_WATER, events whose messages "
        "are all bulk are not stored: 429 with Retry-After (batch: status deferred)."
    ),
)
async def post_events(
    request: Request, principal: Principal = scope("events:write")
) -> JSONResponse:
    runtime = request.app.state.runtime
    body = await request.body()
    try:
        outcome = await run_in_threadpool(
            runtime.intake.submit,
            request.headers.get("content-type"),
            dict(request.headers),
            body,
            actor=principal.actor,
        )
    except RequestError as error:
        raise ApiProblem(
            error.status, error.code, error.detail, field=error.field, reject_id=error.reject_id
        ) from error
    admission = runtime.intake.admission
    wait = admission.retry_after if admission is not None else None
    results = [item_result(item, wait) for item in outcome.items]
    deferred = any(item.deferred for item in outcome.items)
    headers = {"Retry-After": str(wait)} if deferred else None
    if outcome.is_batch:
        summary = {
            status: sum(1 for r in results if r["status"] == status)
            for status in ("accepted", "duplicate", "rejected", "deferred")
        }
        everything_waits = deferred and summary["deferred"] == len(results)
        return JSONResponse(
            {**summary, "results": results},
            status_code=429 if everything_waits else 200,
            headers=headers,
        )
    result = results[0]
    if result["status"] == "deferred":
        raise ApiProblem(
            429,
            "backlog_full",
            "Deliveries are backed up, so bulk events wait: send this event again after "
            f"{wait} seconds. Critical and transactional events are accepted meanwhile.",
            headers=headers,
        )
    if result["status"] == "rejected":
        return JSONResponse(result["problem"], status_code=422, media_type=PROBLEM_JSON)
    return JSONResponse(result, status_code=200 if result["status"] == "duplicate" else 202)
