"""Request and response bodies of the billing API, each with an example for the OpenAPI
document (``GET /openapi.json``). Amounts are integers in minor units (cents)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from tidings.billing.ledger import ACCOUNTS
from tidings.billing.refunds import REASON_CODES, STATES
from tidings.billing.repository import Refund

# Sorted: the OpenAPI document stays the same from one start to the next.
STATUSES = tuple(sorted(STATES))

_APPROVAL = {"actor": "finance:bob", "at": "2026-11-21T10:05:00+00:00"}
_REFUND = {
    "id": "re_01JDG5ZQ2W6N4T3V8K9M0PXR1S",
    "payment_id": "pay_1",
    "amount": 1250,
    "currency": "EUR",
    "status": "pending_approval",
    "reason_code": "damaged",
    "reason": "the lamp shade arrived cracked",
    "lines": [{"sku": "LAMP-01", "quantity": 1}],
    "requested_by": "support:alice",
    "approvals": [_APPROVAL],
    "approvals_needed": 2,
    "decided_reason": None,
    "gateway_refund_id": None,
    "failure_reason": None,
    "created_at": "2026-11-21T10:00:00+00:00",
    "updated_at": "2026-11-21T10:05:00+00:00",
}


def _example(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


class RefundIn(BaseModel):
    """A refund of a captured payment; send it with an ``Idempotency-Key`` header."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "payment_id": "pay_1",
                    "amount": 1250,
                    "currency": "EUR",
                    "reason_code": "damaged",
                    "reason": "the lamp shade arrived cracked",
                    "lines": [{"sku": "LAMP-01", "quantity": 1}],
                },
                {
                    "payment_id": "pay_2",
                    "amount": "full",
                    "currency": "EUR",
                    "reason_code": "order_canceled",
                },
            ]
        },
    )
    payment_id: str = Field(min_length=1, max_length=128)
    # Strict: "1250" or true is a client bug, not an amount.
    amount: StrictInt | Literal["full"] = Field(
        description='Minor units (1250 for 12.50), or "full" for all that is still refundable.'
    )
    currency: str = Field(
        pattern=r"^[A-Z]{3}$", description="ISO 4217 code; the payment's own currency."
    )
    # Checked by the billing rules, which answer with the list of codes; the enum here
    # documents the same list.
    reason_code: str = Field(json_schema_extra={"enum": list(REASON_CODES)})
    reason: str | None = Field(default=None, max_length=2000, description="Free text.")
    lines: list[dict[str, Any]] | None = Field(
        default=None, description="The line items refunded, recorded with the refund."
    )


class ApproveIn(BaseModel):
    model_config = ConfigDict(extra="forbid", **_example({"note": "checked the photos"}))
    note: str | None = Field(default=None, max_length=2000)


class RejectIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", **_example({"reason": "the item was returned unused and resold"})
    )
    reason: str = Field(max_length=2000, description="Why; kept in the audit.")


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid", **_example({"reason": "customer kept the item"}))
    reason: str | None = Field(default=None, max_length=2000)


class Approval(BaseModel):
    model_config = _example(_APPROVAL)
    actor: str
    at: datetime


class RefundOut(BaseModel):
    model_config = _example(_REFUND)
    id: str
    payment_id: str
    amount: int
    currency: str
    status: str = Field(json_schema_extra={"enum": list(STATUSES)})
    reason_code: str
    reason: str | None
    lines: list[dict[str, Any]] | None
    requested_by: str
    approvals: list[Approval] = Field(description="Who approved, in order.")
    approvals_needed: int = Field(description="Distinct approvers the policy asked for.")
    decided_reason: str | None = Field(description="Why it was rejected or canceled.")
    gateway_refund_id: str | None
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, refund: Refund) -> RefundOut:
        values = {name: getattr(refund, name) for name in cls.model_fields}
        return cls.model_validate(values)


class RefundPage(BaseModel):
    model_config = _example({"items": [_REFUND], "next_cursor": "cmVfMDFKREc1WlEyVzZONFQz"})
    items: list[RefundOut]
    next_cursor: str | None = Field(
        description="Pass as ``cursor`` for the next page; null on the last page."
    )


class AccountBalance(BaseModel):
    model_config = _example(
        {"account": "lumen:EUR:gateway_clearing", "currency": "EUR", "balance": 8750}
    )
    account: str = Field(description=f"<store>:<currency>:<name>, name one of {list(ACCOUNTS)}.")
    currency: str
    balance: int = Field(description="Debits minus credits, in minor units.")


class TrialBalance(BaseModel):
    model_config = _example(
        {
            "accounts": [
                {"account": "lumen:EUR:customer_refunds_payable", "currency": "EUR", "balance": 0},
                {"account": "lumen:EUR:gateway_clearing", "currency": "EUR", "balance": 8750},
                {"account": "lumen:EUR:refunds", "currency": "EUR", "balance": 1250},
                {"account": "lumen:EUR:revenue", "currency": "EUR", "balance": -10000},
            ],
            "totals": {"EUR": 0},
            "balanced": True,
        }
    )
    accounts: list[AccountBalance]
    totals: dict[str, int] = Field(description="Per currency; zero when the books balance.")
    balanced: bool


class Problem(BaseModel):
    """RFC 9457 problem details, served as ``application/problem+json``."""

    model_config = _example(
        {
            "type": "/problems/refund-exceeds-captured",
            "title": "Refund exceeds captured",
            "status": 409,
            "detail": "A refund of 9000 would exceed what payment pay_1 captured: only 8750 "
            "EUR (minor units) can still be refunded. Ask for at most that amount.",
            "code": "refund_exceeds_captured",
            "field": "amount",
        }
    )
    type: str
    title: str
    status: int
    detail: str
    code: str = Field(description="Stable, for programs.")
    field: str | None = Field(default=None, description="The input at fault, if one is.")
