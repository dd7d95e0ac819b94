"""``POST /api/intake/{source}``: provider webhooks, proven by their signature, not an API key."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tidings.api.problems import ApiProblem
from tidings.intake.api import item_result
from tidings.intake.webhooks import WebhookError

router = APIRouter(tags=["intake"])


@router.post(
    "/api/intake/{source}",
    summary="Receive a provider webhook",
    description=(
        "Shopify, Stripe, AfterShip, EasyPost and returns-platform webhooks. The request is "
        "verified with the provider's own signature scheme and the secret in "
        "TIDINGS_<SOURCE>_WEBHOOK_SECRET; it needs no API key. A redelivered webhook "
        "changes nothing."
    ),
    responses={401: {"description": "Bad or missing signature"}},
)
async def receive_webhook(source: str, request: Request) -> JSONResponse:
    runtime = request.app.state.runtime
    body = await request.body()
    try:
        outcomes = await run_in_threadpool(
            runtime.webhooks.receive,
            source,
            dict(request.headers),
            body,
            query=dict(request.query_params),
        )
    except WebhookError as error:
        raise ApiProblem(
            error.status, error.code, error.detail, field=error.field, reject_id=error.reject_id
        ) from error
    admission = runtime.intake.admission
    wait = admission.retry_after if admission is not None else None
    results: list[dict[str, Any]] = [item_result(outcome, wait) for outcome in outcomes]
    summary = {
        status: sum(1 for r in results if r["status"] == status)
        for status in ("accepted", "duplicate", "rejected", "deferred")
    }
    if summary["deferred"]:
        # The provider sends the webhook again later; what was stored now is then a duplicate.
        return JSONResponse(
            {**summary, "results": results},
            status_code=429,
            headers={"Retry-After": str(wait)},
        )
    return JSONResponse({**summary, "results": results}, status_code=200)
