"""Refunds and the ledger over HTTP, under ``/api/billing/refund-retry-workflows``.

Each route parses, runs one billing move in one transaction and answers; refusals are
``BillingError``s turned into RFC 9457 problem details carrying the error's code and field.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime
from sqlalchemy import Connection

from tidings.api import cursors
from tidings.api.auth import scope
from tidings.api.keys import Principal
from tidings.api.problems import ApiProblem
from tidings.billing import ledger, repository, service
from tidings.billing.context import Billing
from tidings.billing.errors import BillingError
from tidings.billing.refunds import STATES
from tidings.billing.schemas import (
    STATUSES,
    AccountBalance,
    ApproveIn,
    CancelIn,
    Problem,
    RefundIn,
    RefundOut,
    RefundPage,
    RejectIn,
    TrialBalance,
)
from tidings.db.engine import read_transaction
from tidings.db.types import utcnow

PREFIX = "/api/billing/refund-retry-workflows"
router = APIRouter(prefix=PREFIX, tags=["billing"])

_AUTH: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "No API key, or an unknown one."},
    403: {"model": Problem, "description": "The API key lacks this route's scope."},
}
# Declaring 422 also replaces FastAPI's own validation schema: every refusal is a Problem.
_INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": Problem, "description": "Invalid input; `field` names it."}
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such refund."}
}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": Problem, "description": "The refund's state does not allow this move."}
}

# The rest of BillingError's codes are invalid input (422).
_STATUS = {
    "payment_not_found": 404,
    "refund_not_found": 404,
    "retry_workflow_not_found": 404,
    "illegal_transition": 409,
    "idempotency_conflict": 409,
    "refund_exceeds_captured": 409,
    "self_approval": 409,
    "duplicate_approval": 409,
    "refundable_changed": 409,
}
# Added to details that say what happened but not what to do next (STYLE.md: every
# error a user can hit says what to do).
_NEXT_STEP = {
    "payment_not_found": "Check the payment id: a payment is refundable once its capture is "
    "recorded.",
    "refund_not_found": f"Check the id, or find the refund with GET {PREFIX}/refunds.",
    "refund_exceeds_captured": 'Ask for at most that amount, or "full" for all of it.',
    "illegal_transition": f"See its current status with GET {PREFIX}/refunds/{{id}}.",
}


def _problem(error: BillingError) -> ApiProblem:
    hint = _NEXT_STEP.get(error.code)
    detail = f"{error.detail} {hint}" if hint else error.detail
    return ApiProblem(_STATUS.get(error.code, 422), error.code, detail, field=error.field)


@contextmanager
def _answer_refusals() -> Iterator[None]:
    try:
        yield
    except BillingError as exc:
        raise _problem(exc) from exc


def _billing(request: Request) -> Billing:
    billing: Billing = request.app.state.runtime.billing
    return billing


def _approvals_needed(conn: Connection, billing: Billing, body: RefundIn) -> int:
    """What the approval policy asks for this amount; ``"full"`` is what is still
    refundable, as the service resolves it. Invalid amounts are the service's to refuse."""
    if body.amount == "full":
        payment = repository.get_payment(conn, body.payment_id)
        amount = payment.refundable if payment is not None else 0
    else:
        amount = body.amount
    return billing.approvals.approvals_needed(max(amount, 0), body.currency)


@router.post(
    "/refunds",
    status_code=201,
    response_model=RefundOut,
    responses={
        200: {"model": RefundOut, "description": "A replay: the refund this key created."},
        **_AUTH,
        404: {"model": Problem, "description": "No such payment."},
        409: {
            "model": Problem,
            "description": "Over the refundable amount, or the key was used for another refund.",
        },
        **_INVALID,
    },
)
def post_refund(
    body: RefundIn,
    request: Request,
    idempotency_key: str | None = Header(
        default=None,
        alias="Idempotency-Key",
        description="Required, 1 to 255 characters, unique per refund: a retry with the same "
        "key and body answers with the first refund instead of refunding twice.",
    ),
    principal: Principal = scope("refunds:write"),
) -> JSONResponse:
    billing = _billing(request)
    with _answer_refusals(), request.app.state.runtime.engine.begin() as conn:
        needed = _approvals_needed(conn, billing, body)
        refund, created = service.request_refund(
            conn,
            payment_id=body.payment_id,
            amount=body.amount,
            currency=body.currency,
            reason_code=body.reason_code,
            reason=body.reason,
            lines=body.lines,
            # The service refuses a missing key with idempotency_key_required.
            idempotency_key=idempotency_key or "",
            requested_by=principal.actor,
            approvals_needed=needed,
            now=utcnow(),
        )
        # "full" was resolved again inside the service: a refund released in between
        # could have raised the amount past what ``needed`` was computed for.
        if created and billing.approvals.approvals_needed(refund.amount, refund.currency) > needed:
            raise BillingError(
                "refundable_changed",
                "The refundable amount changed while this refund was requested; send the "
                "same request again.",
                "amount",
            )
    out = RefundOut.of(refund).model_dump(mode="json")
    return JSONResponse(out, status_code=201 if created else 200)


_CURSOR = re.compile(r"re_[0-9A-Z]{26}")


@router.get("/refunds", response_model=RefundPage, responses={**_AUTH, **_INVALID})
def list_refunds(
    request: Request,
    status: str | None = Query(default=None, json_schema_extra={"enum": list(STATUSES)}),
    payment_id: str | None = Query(default=None, max_length=128),
    created_from: AwareDatetime | None = Query(
        default=None, description="Created at or after this time (with a UTC offset)."
    ),
    created_to: AwareDatetime | None = Query(
        default=None, description="Created before this time (with a UTC offset)."
    ),
    limit: int = Query(default=50, ge=1, le=100),
    cursor: str | None = Query(default=None, description="next_cursor of the previous page."),
    _: Principal = scope("refunds:read"),
) -> RefundPage:
    if status is not None and status not in STATES:
        raise ApiProblem(
            422,
            "invalid_status",
            f"'{status}' is not a refund status; use one of: {', '.join(STATUSES)}.",
            field="status",
        )
    if created_from is not None and created_to is not None and created_to <= created_from:
        raise ApiProblem(
            422,
            "invalid_window",
            "created_to must be later than created_from; swap them or widen the window.",
            field="created_to",
        )
    after = cursors.decode(cursor, _CURSOR) if cursor is not None else None
    with read_transaction(request.app.state.runtime.engine) as conn:
        found = repository.list_refunds(
            conn,
            status=status,
            payment_id=payment_id,
            created_from=created_from,
            created_to=created_to,
            after=after,
            limit=limit + 1,
        )
    refunds, more = found[:limit], len(found) > limit
    next_cursor = cursors.encode(refunds[-1].id) if more else None
    return RefundPage(items=[RefundOut.of(r) for r in refunds], next_cursor=next_cursor)


@router.get(
    "/refunds/{refund_id}", response_model=RefundOut, responses={**_AUTH, **_NOT_FOUND, **_INVALID}
)
def get_refund(refund_id: str, request: Request, _: Principal = scope("refunds:read")) -> RefundOut:
    with read_transaction(request.app.state.runtime.engine) as conn:
        refund = repository.get_refund(conn, refund_id)
    if refund is None:
        raise _problem(
            BillingError("refund_not_found", f"No refund with id {refund_id}.", "refund_id")
        )
    return RefundOut.of(refund)


_MOVE_RESPONSES = {**_AUTH, **_NOT_FOUND, **_CONFLICT, **_INVALID}


@router.post("/refunds/{refund_id}/approve", response_model=RefundOut, responses=_MOVE_RESPONSES)
def approve_refund(
    refund_id: str,
    request: Request,
    body: ApproveIn | None = None,
    principal: Principal = scope("refunds:approve"),
) -> RefundOut:
    """Count the key's actor as one approver; never the refund's own requester."""
    with _answer_refusals(), request.app.state.runtime.engine.begin() as conn:
        refund = service.approve(
            conn,
            refund_id=refund_id,
            actor=principal.actor,
            now=utcnow(),
            note=body.note if body else None,
        )
    return RefundOut.of(refund)


@router.post("/refunds/{refund_id}/reject", response_model=RefundOut, responses=_MOVE_RESPONSES)
def reject_refund(
    refund_id: str,
    body: RejectIn,
    request: Request,
    principal: Principal = scope("refunds:approve"),
) -> RefundOut:
    with _answer_refusals(), request.app.state.runtime.engine.begin() as conn:
        refund = service.reject(
            conn, refund_id=refund_id, actor=principal.actor, reason=body.reason, now=utcnow()
        )
    return RefundOut.of(refund)


@router.post("/refunds/{refund_id}/cancel", response_model=RefundOut, responses=_MOVE_RESPONSES)
def cancel_refund(
    refund_id: str,
    request: Request,
    body: CancelIn | None = None,
    principal: Principal = scope("refunds:write"),
) -> RefundOut:
    """Withdraw a refund not yet sent to the gateway; its amount is refundable again."""
    with _answer_refusals(), request.app.state.runtime.engine.begin() as conn:
        refund = service.cancel(
            conn,
            refund_id=refund_id,
            actor=principal.actor,
            now=utcnow(),
            reason=body.reason if body else None,
        )
    return RefundOut.of(refund)


@router.get("/ledger/trial-balance", response_model=TrialBalance, responses=_AUTH)
def trial_balance(request: Request, _: Principal = scope("billing:read")) -> TrialBalance:
    """Every account's balance; per currency they sum to zero (DESIGN.md invariant 6)."""
    with read_transaction(request.app.state.runtime.engine) as conn:
        balance = ledger.trial_balance(conn)
    return TrialBalance(
        accounts=[
            AccountBalance(account=account, currency=currency, balance=amount)
            for (account, currency), amount in balance.items()
        ],
        totals=ledger.totals_by_currency(balance),
        balanced=ledger.is_balanced(balance),
    )
