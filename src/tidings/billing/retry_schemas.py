"""Bodies of the payment retry API, each with an example for the OpenAPI document."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tidings.billing.retries import STATES
from tidings.billing.retry_policy import FINAL_ACTIONS, RetryPolicy
from tidings.billing.retry_repository import Attempt, Workflow

WORKFLOW_STATUSES = tuple(sorted(STATES))

_POLICY: dict[str, Any] = RetryPolicy().to_json()
_ATTEMPT = {
    "number": 1,
    "at": "2026-11-22T09:00:00+00:00",
    "gateway": "stripe",
    "outcome": "declined",
    "decline_code": "insufficient_funds",
    "category": "soft",
    "network": "visa",
    "amount": 4500,
    "currency": "USD",
}
_WORKFLOW = {
    "id": "rw_01JDG5ZQ2W6N4T3V8K9M0PXR1S",
    "payment_id": "pi_3PkR2m",
    "order_id": "1043",
    "customer_id": "cus_9",
    "gateway": "stripe",
    "amount": 4500,
    "currency": "USD",
    "status": "retry_scheduled",
    "policy": {"name": "default", **_POLICY},
    "attempts": 1,
    "network": "visa",
    "decline_code": "insufficient_funds",
    "next_attempt_at": "2026-11-25T09:00:00-05:00",
    "final_action": None,
    "closed_reason": None,
    "recovered_amount": None,
    "created_at": "2026-11-21T14:02:00+00:00",
    "updated_at": "2026-11-22T09:00:03+00:00",
    "closed_at": None,
}


def _example(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


class RetryPolicyIn(BaseModel):
    """A retry policy; every field may be left out for its default."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "intervals": [86400, 259200, 432000],
                    "max_attempts": 3,
                    "max_days": 14,
                    "preferred_hour": 10,
                    "network_caps": {"visa": 15, "mastercard": 10},
                    "final_action": "mark_uncollectible",
                }
            ]
        },
    )
    intervals: list[int] | None = Field(
        default=None, description="Seconds to wait before attempt 1, 2, ...; the last repeats."
    )
    max_attempts: int | None = None
    max_days: int | None = Field(default=None, description="No attempt later than this.")
    preferred_hour: int | None = Field(
        default=None, description="Local hour (0-23, customer's zone) attempts move to."
    )
    time_zone: str | None = Field(default=None, description="Zone when the customer's is unknown.")
    network_caps: dict[str, int] | None = Field(
        default=None, description="Most attempts per card network."
    )
    final_action: str | None = Field(default=None, json_schema_extra={"enum": list(FINAL_ACTIONS)})
    use_secondary_gateway: bool | None = None


class RetryPolicyOut(BaseModel):
    model_config = _example({"name": "default", "policy": _POLICY, "updated_by": "finance:bob"})
    name: str
    policy: dict[str, Any]
    updated_by: str | None = Field(description="Null for the built-in default.")
    updated_at: datetime | None = None


class RetryPolicyList(BaseModel):
    model_config = _example(
        {"items": [{"name": "default", "policy": _POLICY, "updated_by": None, "updated_at": None}]}
    )
    items: list[RetryPolicyOut]


class AttemptOut(BaseModel):
    model_config = _example(_ATTEMPT)
    number: int = Field(description="0 is the failure that opened the workflow.")
    at: datetime
    gateway: str
    outcome: str = Field(json_schema_extra={"enum": ["approved", "declined", "unknown"]})
    decline_code: str | None
    category: str | None = Field(json_schema_extra={"enum": ["hard", "soft", None]})
    network: str | None
    amount: int
    currency: str

    @classmethod
    def of(cls, attempt: Attempt) -> AttemptOut:
        return cls.model_validate({n: getattr(attempt, n) for n in cls.model_fields})


class WorkflowOut(BaseModel):
    model_config = _example(_WORKFLOW)
    id: str
    payment_id: str
    order_id: str | None
    customer_id: str | None
    gateway: str
    amount: int
    currency: str
    status: str = Field(json_schema_extra={"enum": list(WORKFLOW_STATUSES)})
    policy: dict[str, Any] = Field(description="The policy as it was when the workflow opened.")
    attempts: int = Field(description="Attempts made after the failure that opened it.")
    network: str | None
    decline_code: str | None = Field(description="The latest decline code.")
    next_attempt_at: datetime | None
    final_action: str | None
    closed_reason: str | None
    recovered_amount: int | None
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None

    @classmethod
    def of(cls, workflow: Workflow) -> WorkflowOut:
        return cls.model_validate({n: getattr(workflow, n) for n in cls.model_fields})


class WorkflowDetail(WorkflowOut):
    model_config = _example({**_WORKFLOW, "history": [_ATTEMPT]})
    history: list[AttemptOut] = Field(description="Every attempt with its outcome, in order.")


class WorkflowPage(BaseModel):
    model_config = _example({"items": [_WORKFLOW], "next_cursor": None})
    items: list[WorkflowOut]
    next_cursor: str | None


class StopIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", **_example({"reason": "customer paid by bank transfer"})
    )
    reason: str = Field(min_length=1, max_length=2000, description="Why; kept in the audit.")


class RetryNowIn(BaseModel):
    model_config = ConfigDict(extra="forbid", **_example({"reason": "customer updated the card"}))
    reason: str | None = Field(default=None, max_length=2000)
