"""The billing analytics response, with an example for the OpenAPI document.

Field names follow tidings.billing.analytics, whose module docstring defines each figure.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tidings.billing.analytics import GROUPINGS, Report


def _example(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


# One gateway, so its group is the overall figures: 3 first-time successes and 1 failure
# (3 / 4 = 0.75); that failure's workflow recovered after 2 retries (1 / (1 + 0) = 1.0).
_PAYMENTS = {"first_time_successes": 3, "failed": 1, "success_rate": 0.75}
_RECOVERY = {
    "opened": 1,
    "recovered": 1,
    "exhausted": 0,
    "canceled": 0,
    "open": 0,
    "recovery_rate": 1.0,
    "recovered_revenue": {"USD": 4500},
    "attempts_per_recovery": 2.0,
}
_REFUNDS = {
    "requested": {"count": 2, "volume": {"EUR": 1250, "USD": 3000}},
    "succeeded": {"count": 1, "volume": {"EUR": 1250}},
    "approval_time": {"count": 1, "median_seconds": 300.0, "mean_seconds": 300.0},
    "time_to_refund": {"count": 1, "median_seconds": 7200.0, "mean_seconds": 7200.0},
}
_EXAMPLE: dict[str, Any] = {
    "from": "2026-10-22T00:00:00+00:00",
    "to": "2026-11-21T00:00:00+00:00",
    "group_by": "gateway",
    "overall": {"payments": _PAYMENTS, "recovery": _RECOVERY, "refunds": _REFUNDS},
    "groups": [
        {"key": "stripe", "payments": _PAYMENTS, "recovery": _RECOVERY, "refunds": _REFUNDS}
    ],
}


class PaymentsOut(BaseModel):
    model_config = _example(_PAYMENTS)
    first_time_successes: int = Field(description="Captured without a retry workflow.")
    failed: int = Field(description="Retry workflows opened: one per failed payment.")
    success_rate: float | None = Field(
        description="first_time_successes / (first_time_successes + failed); null when both are 0."
    )


class RecoveryOut(BaseModel):
    model_config = _example(_RECOVERY)
    opened: int = Field(description="Workflows opened in the window; the four below sum to it.")
    recovered: int
    exhausted: int
    canceled: int = Field(description="Stopped (order canceled, refund, dispute), not lost.")
    open: int = Field(description="Still failed, scheduled or retrying.")
    recovery_rate: float | None = Field(
        description="recovered / (recovered + exhausted): canceled ones were stopped, not "
        "lost, and are left out; null when none recovered or exhausted."
    )
    recovered_revenue: dict[str, int] = Field(
        description="Recovered amounts per ISO 4217 currency, in minor units."
    )
    attempts_per_recovery: float | None = Field(
        description="Mean retries a recovered workflow made; null when none recovered."
    )


class VolumeOut(BaseModel):
    count: int
    volume: dict[str, int] = Field(description="Per ISO 4217 currency, in minor units.")


class DurationOut(BaseModel):
    count: int = Field(description="Refunds the figures are computed over.")
    median_seconds: float | None
    mean_seconds: float | None


class RefundsOut(BaseModel):
    model_config = _example(_REFUNDS)
    requested: VolumeOut = Field(description="Neither rejected nor canceled.")
    succeeded: VolumeOut = Field(description="Those requested that succeeded.")
    approval_time: DurationOut = Field(
        description="From request to approval, over refunds that needed an approver."
    )
    time_to_refund: DurationOut = Field(description="From request to success.")


class FiguresOut(BaseModel):
    payments: PaymentsOut
    recovery: RecoveryOut
    refunds: RefundsOut


class GroupOut(BaseModel):
    key: str | None = Field(
        description="The gateway, the UTC day (YYYY-MM-DD), or the first decline code "
        "(null when unknown)."
    )
    payments: PaymentsOut | None = Field(description="Null in decline_code groups.")
    recovery: RecoveryOut
    refunds: RefundsOut | None = Field(description="Null in decline_code groups.")


class BillingAnalytics(BaseModel):
    model_config = ConfigDict(populate_by_name=True, json_schema_extra={"examples": [_EXAMPLE]})
    from_: datetime = Field(alias="from", description="Inclusive.")
    to: datetime = Field(description="Exclusive.")
    group_by: str | None = Field(json_schema_extra={"enum": [*GROUPINGS, None]})
    overall: FiguresOut
    groups: list[GroupOut] = Field(description="Empty without group_by.")

    @classmethod
    def of(cls, report: Report) -> BillingAnalytics:
        return cls.model_validate(
            {
                "from": report.window.start,
                "to": report.window.end,
                "group_by": report.group_by,
                "overall": asdict(report.overall),
                "groups": [asdict(group) for group in report.groups],
            }
        )
