"""Shared builders for billing tests: a fixed clock, the emitter, captured payments."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Connection, func, select

from tidings.billing import service
from tidings.billing.repository import Payment, Refund
from tidings.billing.service import Emitter
from tidings.db.schema import refunds
from tidings.engine.rules import load_rules
from tidings.intake.service import DeliveryDefaults

NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)


@cache
def emitter() -> Emitter:
    return Emitter(load_rules(), DeliveryDefaults(max_attempts=3))


def capture(
    conn: Connection,
    payment_id: str = "pay_1",
    *,
    amount: int = 10_000,
    currency: str = "EUR",
    order_id: str = "1042",
    customer_id: str | None = "cus_camille",
    store: str = "lumen",
    gateway: str = "sandbox",
    now: datetime = NOW,
) -> Payment:
    return service.record_capture(
        conn,
        payment_id=payment_id,
        store=store,
        order_id=order_id,
        customer_id=customer_id,
        gateway=gateway,
        currency=currency,
        amount=amount,
        method="card",
        now=now,
        actor=f"gateway:{gateway}",
    )


def request(conn: Connection, **overrides: Any) -> tuple[Refund, bool]:
    values: dict[str, Any] = {
        "payment_id": "pay_1",
        "amount": 1250,
        "currency": "EUR",
        "reason_code": "damaged",
        "reason": "the lamp shade arrived cracked",
        "lines": [{"sku": "LAMP-01", "quantity": 1}],
        "idempotency_key": "key-1",
        "requested_by": "support:alice",
        "approvals_needed": 0,
        "now": NOW,
    }
    return service.request_refund(conn, **(values | overrides))


def held_by_refunds(conn: Connection, payment_id: str) -> int:
    """What the payment's live refunds add up to, counted from the refund rows."""
    total = conn.execute(
        select(func.coalesce(func.sum(refunds.c.amount), 0)).where(
            refunds.c.payment_id == payment_id,
            refunds.c.status.not_in(("rejected", "canceled", "failed", "reversed")),
        )
    ).scalar_one()
    return int(total)
