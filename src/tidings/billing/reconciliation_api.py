"""``GET .../reconciliation``: the ledger's day against what one gateway reports for it."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from tidings.api.auth import scope
from tidings.api.keys import Principal
from tidings.api.problems import ApiProblem
from tidings.billing import reconciliation
from tidings.billing.api import _AUTH, _INVALID, PREFIX
from tidings.billing.context import Billing
from tidings.billing.gateways import loop as gateway_loop
from tidings.billing.gateways.base import Gateway, GatewayError, GatewayTimeout
from tidings.billing.schemas import Problem
from tidings.db.engine import read_transaction
from tidings.db.types import utcnow

router = APIRouter(prefix=PREFIX, tags=["billing"])

_DIFFERENCE: dict[str, Any] = {
    "issue": "missing_in_ledger",
    "direction": "in",
    "reference": "pi_3QkZ2bLkdIwHu7ix0Tgg4cNS",
    "ledger_amount": None,
    "gateway_amount": 4990,
    "currency": "EUR",
    "transaction_id": None,
}


class DifferenceOut(BaseModel):
    """One movement the two sides disagree on; amounts in minor units, None where a side
    has nothing."""

    model_config = ConfigDict(json_schema_extra={"examples": [_DIFFERENCE]})

    issue: Literal[
        "missing_at_gateway",
        "missing_in_ledger",
        "amount_differs",
        "currency_differs",
        "failed_at_gateway",
    ]
    direction: Literal["in", "out"]
    reference: str
    ledger_amount: int | None
    gateway_amount: int | None
    currency: str
    transaction_id: str | None


class ReconciliationOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "gateway": "stripe",
                    "date": "2026-12-01",
                    "matched": 41,
                    "reconciled": False,
                    "differences": [_DIFFERENCE],
                }
            ]
        }
    )

    gateway: str
    date: date
    matched: int
    reconciled: bool
    differences: list[DifferenceOut]


def _gateway(billing: Billing, name: str | None) -> Gateway:
    names = billing.gateways.names
    if name is None:
        if len(names) == 1:
            return billing.gateways.gateways[names[0]]
        raise ApiProblem(
            422,
            "gateway_required",
            f"Several gateways are configured; name one with ?gateway= ({', '.join(names)}).",
            field="gateway",
        )
    gateway = billing.gateways.named(name)
    if gateway is None:
        raise ApiProblem(
            422,
            "unknown_gateway",
            f"No gateway named '{name}' is configured; use one of: {', '.join(names)}.",
            field="gateway",
        )
    return gateway


@router.get(
    "/reconciliation",
    response_model=ReconciliationOut,
    responses={
        **_AUTH,
        **_INVALID,
        502: {"model": Problem, "description": "The gateway could not be asked."},
    },
    summary="Differences between the ledger and a gateway's report of one UTC day",
    description=reconciliation.__doc__,
)
async def get_reconciliation(
    request: Request,
    gateway: str | None = Query(
        default=None, description="Gateway name; optional when only one is configured."
    ),
    day: date | None = Query(
        default=None, alias="date", description="UTC day, YYYY-MM-DD. Default: yesterday."
    ),
    _: Principal = scope("billing:read"),
) -> ReconciliationOut:
    runtime = request.app.state.runtime
    chosen = _gateway(runtime.billing, gateway)
    wanted = day or (utcnow() - timedelta(days=1)).date()
    try:
        reported = await gateway_loop.call_async(chosen.activity(wanted))
    except (GatewayError, GatewayTimeout) as exc:
        raise ApiProblem(
            502,
            "gateway_unavailable",
            f"Gateway '{chosen.name}' could not report {wanted.isoformat()}: {exc}. "
            "Try again later.",
        ) from exc

    def compare() -> reconciliation.Report:
        with read_transaction(runtime.engine) as conn:
            return reconciliation.reconcile_day(
                conn, gateway=chosen.name, day=wanted, reported=reported
            )

    report = await run_in_threadpool(compare)
    return ReconciliationOut(
        gateway=chosen.name,
        date=wanted,
        matched=report.matched,
        reconciled=report.reconciled,
        differences=[DifferenceOut(**asdict(d)) for d in report.differences],
    )
