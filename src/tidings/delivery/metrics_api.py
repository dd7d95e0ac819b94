"""Delivery metrics route: ``GET /api/metrics/delivery``."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from tidings.api.auth import scope
from tidings.api.keys import Principal
from tidings.api.problems import ApiProblem
from tidings.db.engine import read_transaction
from tidings.db.types import utcnow
from tidings.delivery import metrics

router = APIRouter(tags=["metrics"])


class Counters(BaseModel):
    sent: int
    delivered: int
    failed: int
    bounced: int
    complained: int
    acknowledged: int
    delivery_rate: float | None
    acknowledgment_rate: float | None
    attempts: int
    transient_failures: int


class ChannelCounters(Counters):
    channel: str
    provider: str


class DeliveryMetrics(BaseModel):
    since: datetime
    until: datetime
    channels: list[ChannelCounters]
    totals: Counters


@router.get(
    "/api/metrics/delivery",
    response_model=DeliveryMetrics,
    summary="Delivery metrics per channel and provider",
    description=metrics.__doc__,
)
def get_delivery_metrics(
    request: Request,
    since: str | None = Query(
        None, description="RFC 3339 with an offset; inclusive. Default: 24 hours before until."
    ),
    until: str | None = Query(
        None, description="RFC 3339 with an offset; exclusive. Default: now. At most 31 days."
    ),
    _: Principal = scope("metrics:read"),
) -> DeliveryMetrics:
    try:
        start, end = metrics.parse_window(since=since, until=until, now=utcnow())
    except metrics.WindowError as exc:
        raise ApiProblem(422, exc.code, exc.detail, field=exc.field) from exc
    with read_transaction(request.app.state.runtime.engine) as conn:
        report = metrics.delivery_report(conn, since=start, until=end)
    return DeliveryMetrics(
        since=report.since,
        until=report.until,
        channels=[
            ChannelCounters(channel=row.channel, provider=row.provider, **asdict(row.counters))
            for row in report.channels
        ],
        totals=Counters(**asdict(report.totals)),
    )
