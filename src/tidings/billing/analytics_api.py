"""Billing analytics over HTTP: ``GET .../analytics``, figures computed from stored facts."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from pydantic import AwareDatetime

from tidings.api.auth import scope
from tidings.api.keys import Principal
from tidings.api.problems import ApiProblem
from tidings.billing import analytics
from tidings.billing.analytics_schemas import BillingAnalytics
from tidings.billing.api import _AUTH, _INVALID, PREFIX, _answer_refusals
from tidings.db.engine import read_transaction
from tidings.db.types import utcnow

router = APIRouter(prefix=PREFIX, tags=["billing"])


def _grouping(value: str | None) -> analytics.GroupBy | None:
    if value is None:
        return None
    for grouping in analytics.GROUPINGS:
        if value == grouping:
            return grouping
    raise ApiProblem(
        422,
        "invalid_group_by",
        f"'{value}' is not a grouping; use one of: {', '.join(analytics.GROUPINGS)}, or leave "
        "group_by out for the overall figures only.",
        field="group_by",
    )


@router.get(
    "/analytics",
    response_model=BillingAnalytics,
    responses={**_AUTH, **_INVALID},
    summary="Payment success, recovery and refund figures over a window",
    description=analytics.__doc__,
)
def get_analytics(
    request: Request,
    start: AwareDatetime | None = Query(
        default=None,
        alias="from",
        description="Inclusive, with a UTC offset. Default: 30 days before to.",
    ),
    end: AwareDatetime | None = Query(
        default=None, alias="to", description="Exclusive, with a UTC offset. Default: now."
    ),
    group_by: str | None = Query(
        default=None, json_schema_extra={"enum": list(analytics.GROUPINGS)}
    ),
    _: Principal = scope("billing:read"),
) -> BillingAnalytics:
    grouping = _grouping(group_by)
    with _answer_refusals():
        window = analytics.window(start, end, now=utcnow())
    with read_transaction(request.app.state.runtime.engine) as conn:
        report = analytics.billing_report(conn, window, grouping)
    return BillingAnalytics.of(report)
