"""Billing through the Stripe adapter: refunds and payment retries sent by the worker's
sync code, over one pooled client, to a stand-in Stripe API on loopback; then the day
reconciled against what that API reports."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine

from tests.billing.support import emitter, request
from tests.support.stripe_stub import ALLOW_STRIPE_FORM_WARNING, StripeStub
from tidings.billing import repository, retry_repository, retry_runner, retry_service, service
from tidings.billing.approvals import ApprovalPolicy
from tidings.billing.context import Billing
from tidings.billing.gateways import loop as gateway_loop
from tidings.billing.gateways.routing import GatewayRouter
from tidings.billing.gateways.stripe_gateway import StripeGateway
from tidings.billing.reconciliation import reconcile_day
from tidings.billing.retry_policy import RetryPolicy
from tidings.billing.retry_service import Failure
from tidings.billing.submission import submit_due
from tidings.db.types import utcnow

pytestmark = ALLOW_STRIPE_FORM_WARNING


@pytest.fixture
def stub() -> Iterator[StripeStub]:
    stub = StripeStub().start()
    yield stub
    stub.stop()


@pytest.fixture
def billing(stub: StripeStub) -> Iterator[Billing]:
    gateway = StripeGateway(stub.api_key, api_base=stub.url, timeout=2.0)
    yield Billing(
        store="lumen",
        gateways=GatewayRouter([gateway]),
        approvals=ApprovalPolicy(),
        emitter=emitter(),
    )
    gateway_loop.call(gateway.aclose())


def test_refunds_reach_stripe_with_their_keys_and_the_day_reconciles(
    engine: Engine, stub: StripeStub, billing: Billing
) -> None:
    now = utcnow()
    intent = stub.add_payment(10_000, "eur")
    with engine.begin() as conn:
        service.record_capture(
            conn,
            payment_id="pay_1",
            store="lumen",
            order_id="1042",
            customer_id=None,
            gateway="stripe",
            gateway_payment_id=intent,
            currency="EUR",
            amount=10_000,
            method="card",
            now=now,
            actor="gateway:stripe",
        )
        first, _ = request(conn, amount=2500, idempotency_key="k1", now=now)
        second, _ = request(conn, amount=1250, idempotency_key="k2", now=now)

    # Two ticks, two calls from sync code on the same pooled client.
    assert submit_due(engine, billing, now=now, limit=1) == 1
    assert submit_due(engine, billing, now=now, limit=1) == 1
    with engine.connect() as conn:
        states = {r.id: repository.get_refund(conn, r.id) for r in (first, second)}
    assert {rid: r.status for rid, r in states.items() if r} == {
        first.id: "succeeded",
        second.id: "succeeded",
    }
    sent = stub.requests("POST", "/v1/refunds")
    assert sorted(r.headers["idempotency-key"] for r in sent) == sorted([first.id, second.id])

    gateway = billing.gateways.named("stripe")
    assert gateway is not None
    reported = gateway_loop.call(gateway.activity(now.date()))
    with engine.connect() as conn:
        report = reconcile_day(conn, gateway="stripe", day=now.date(), reported=reported)
    assert report.reconciled, report.differences
    assert report.matched == 3  # the capture and both refunds


def test_a_failed_payment_is_retried_through_stripe_until_it_is_collected(
    engine: Engine, stub: StripeStub, billing: Billing
) -> None:
    now = utcnow()
    intent = stub.add_failed_payment(4500, "usd", declines=["insufficient_funds", "card_declined"])
    policy = RetryPolicy(intervals=(3600,), max_attempts=3, max_days=10, preferred_hour=None)
    with engine.begin() as conn:
        retry_service.put_policy(
            conn, name="default", values=policy.to_json(), actor="finance:bob", now=now
        )
        workflow, _ = retry_service.open_workflow(
            conn,
            billing.retries,
            Failure(
                payment_id=intent,
                order_id="1043",
                customer_id=None,
                gateway="stripe",
                amount=4500,
                currency="USD",
                decline_code="insufficient_funds",
                network="visa",
                at=now,
            ),
            now=now,
            actor="billing",
        )
    at = now
    for _ in range(2):
        at += timedelta(hours=1, seconds=1)
        assert retry_runner.run_due(engine, billing.retries, billing.retry_gateway, now=at) == 1

    with engine.connect() as conn:
        done = retry_repository.get_workflow(conn, workflow.id)
        attempts = retry_repository.attempts_of(conn, workflow.id)
    assert done is not None
    assert done.status == "recovered"
    assert [(a.number, a.outcome, a.decline_code) for a in attempts] == [
        (0, "declined", "insufficient_funds"),
        (1, "declined", "card_declined"),
        (2, "approved", None),
    ]
    confirms = stub.requests("POST", f"/v1/payment_intents/{intent}/confirm")
    assert len({r.headers["idempotency-key"] for r in confirms}) == len(confirms) == 2
