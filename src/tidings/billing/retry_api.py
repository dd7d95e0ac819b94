"""Payment retries over HTTP, under ``/api/billing/refund-retry-workflows``: the policies,
the workflows with their attempt history, and the two moves a person makes (try now,
stop). Each route runs one billing move in one transaction."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Query, Request

from tidings.api import cursors
from tidings.api.auth import scope
from tidings.api.keys import Principal
from tidings.api.problems import ApiProblem
from tidings.billing import retry_repository as repo
from tidings.billing import retry_service
from tidings.billing.api import _AUTH, _CONFLICT, _INVALID, PREFIX, _answer_refusals, _billing
from tidings.billing.retries import STATES
from tidings.billing.retry_policy import DEFAULT_POLICY_NAME, RetryPolicy
from tidings.billing.retry_schemas import (
    WORKFLOW_STATUSES,
    AttemptOut,
    RetryNowIn,
    RetryPolicyIn,
    RetryPolicyList,
    RetryPolicyOut,
    StopIn,
    WorkflowDetail,
    WorkflowOut,
    WorkflowPage,
)
from tidings.billing.schemas import Problem
from tidings.db.engine import read_transaction
from tidings.db.types import utcnow

router = APIRouter(prefix=PREFIX, tags=["billing"])

_WORKFLOW_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such retry workflow."}
}
_MOVE = {**_AUTH, **_CONFLICT, **_INVALID, **_WORKFLOW_NOT_FOUND}
_CURSOR = re.compile(r"rw_[0-9A-Z]{26}")


@router.get("/retry-policies", response_model=RetryPolicyList, responses=_AUTH)
def list_policies(request: Request, _: Principal = scope("billing:read")) -> RetryPolicyList:
    """The stored policies; ``default`` is shown with its built-in values until one is
    stored. A workflow uses the policy named after its store, else ``default``."""
    with read_transaction(request.app.state.runtime.engine) as conn:
        stored = repo.list_policies(conn)
    items = [
        RetryPolicyOut(name=name, policy=policy, updated_by=by, updated_at=at)
        for name, policy, by, at in stored
    ]
    if not any(item.name == DEFAULT_POLICY_NAME for item in items):
        items.insert(
            0,
            RetryPolicyOut(
                name=DEFAULT_POLICY_NAME, policy=RetryPolicy().to_json(), updated_by=None
            ),
        )
    return RetryPolicyList(items=items)


@router.put(
    "/retry-policies/{name}", response_model=RetryPolicyOut, responses={**_AUTH, **_INVALID}
)
def put_policy(
    name: str, body: RetryPolicyIn, request: Request, principal: Principal = scope("billing:write")
) -> RetryPolicyOut:
    """Store a policy. Workflows already open keep the policy they opened under."""
    values = body.model_dump(exclude_none=True)
    if "preferred_hour" in body.model_fields_set and body.preferred_hour is None:
        values["preferred_hour"] = None
    now = utcnow()
    with _answer_refusals(), request.app.state.runtime.engine.begin() as conn:
        policy = retry_service.put_policy(
            conn, name=name, values=values, actor=principal.actor, now=now
        )
    return RetryPolicyOut(
        name=name, policy=policy.to_json(), updated_by=principal.actor, updated_at=now
    )


@router.get("/retry-workflows", response_model=WorkflowPage, responses={**_AUTH, **_INVALID})
def list_workflows(
    request: Request,
    status: str | None = Query(default=None, json_schema_extra={"enum": list(WORKFLOW_STATUSES)}),
    payment_id: str | None = Query(default=None, max_length=128),
    order_id: str | None = Query(default=None, max_length=128),
    limit: int = Query(default=50, ge=1, le=100),
    cursor: str | None = Query(default=None, description="next_cursor of the previous page."),
    _: Principal = scope("retries:read"),
) -> WorkflowPage:
    if status is not None and status not in STATES:
        raise ApiProblem(
            422,
            "invalid_status",
            f"'{status}' is not a retry workflow status; use one of: "
            f"{', '.join(WORKFLOW_STATUSES)}.",
            field="status",
        )
    after = cursors.decode(cursor, _CURSOR) if cursor is not None else None
    with read_transaction(request.app.state.runtime.engine) as conn:
        found = repo.list_workflows(
            conn,
            status=status,
            payment_id=payment_id,
            order_id=order_id,
            after=after,
            limit=limit + 1,
        )
    page, more = found[:limit], len(found) > limit
    return WorkflowPage(
        items=[WorkflowOut.of(w) for w in page],
        next_cursor=cursors.encode(page[-1].id) if more else None,
    )


def _not_found(workflow_id: str) -> ApiProblem:
    return ApiProblem(
        404,
        "retry_workflow_not_found",
        f"No retry workflow with id {workflow_id}. Find it with GET {PREFIX}/retry-workflows.",
        field="workflow_id",
    )


@router.get(
    "/retry-workflows/{workflow_id}",
    response_model=WorkflowDetail,
    responses={**_AUTH, **_WORKFLOW_NOT_FOUND, **_INVALID},
)
def get_workflow(
    workflow_id: str, request: Request, _: Principal = scope("retries:read")
) -> WorkflowDetail:
    """The workflow with every attempt, its decline code and whether it was hard or soft."""
    with read_transaction(request.app.state.runtime.engine) as conn:
        workflow = repo.get_workflow(conn, workflow_id)
        history = repo.attempts_of(conn, workflow_id) if workflow is not None else []
    if workflow is None:
        raise _not_found(workflow_id)
    return WorkflowDetail(
        **WorkflowOut.of(workflow).model_dump(), history=[AttemptOut.of(a) for a in history]
    )


@router.post(
    "/retry-workflows/{workflow_id}/retry-now", response_model=WorkflowOut, responses=_MOVE
)
def retry_now(
    workflow_id: str,
    request: Request,
    body: RetryNowIn | None = None,
    principal: Principal = scope("retries:write"),
) -> WorkflowOut:
    """Bring the next attempt forward to now; the worker makes it within seconds."""
    why = (body.reason if body else None) or "asked for an attempt now"
    with _answer_refusals(), request.app.state.runtime.engine.begin() as conn:
        workflow = retry_service.retry_now(
            conn, workflow_id=workflow_id, now=utcnow(), actor=principal.actor, why=why
        )
    return WorkflowOut.of(workflow)


@router.post("/retry-workflows/{workflow_id}/cancel", response_model=WorkflowOut, responses=_MOVE)
def cancel(
    workflow_id: str, body: StopIn, request: Request, principal: Principal = scope("retries:write")
) -> WorkflowOut:
    """Stop retrying; the amount no longer counts as receivable."""
    billing = _billing(request)
    with _answer_refusals(), request.app.state.runtime.engine.begin() as conn:
        workflow = retry_service.stop(
            conn,
            billing.retries,
            workflow_id=workflow_id,
            reason=body.reason,
            now=utcnow(),
            actor=principal.actor,
        )
    return WorkflowOut.of(workflow)
