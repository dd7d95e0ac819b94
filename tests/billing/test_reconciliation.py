"""The ledger against what a gateway reports for a day: matching and each difference."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.billing.support import NOW, capture, emitter, request
from tests.support.events import cloudevent
from tests.support.work import drain
from tidings.billing import service
from tidings.billing.api import PREFIX
from tidings.billing.gateways.sandbox import SandboxGateway
from tidings.billing.reconciliation import Booked, Reported, booked_on, compare
from tidings.db.types import utcnow
from tidings.runtime import Runtime

IN, OUT = "in", "out"


def test_the_same_movements_on_both_sides_reconcile() -> None:
    report = compare(
        [Booked(IN, "pi_1", 5000, "EUR", "ltx_1"), Booked(OUT, "re_1", 1250, "EUR", "ltx_2")],
        [Reported(IN, "pi_1", 5000, "EUR"), Reported(OUT, "re_1", 1250, "EUR")],
    )
    assert report.reconciled
    assert report.matched == 2


def test_each_kind_of_difference_is_named() -> None:
    report = compare(
        [
            Booked(IN, "pi_booked_only", 900, "EUR", "ltx_a"),
            Booked(IN, "pi_amount", 1000, "EUR", "ltx_b"),
            Booked(IN, "pi_currency", 1000, "EUR", "ltx_c"),
            Booked(OUT, "re_failed", 700, "EUR", "ltx_d"),
        ],
        [
            Reported(IN, "pi_gateway_only", 300, "EUR"),
            Reported(IN, "pi_amount", 990, "EUR"),
            Reported(IN, "pi_currency", 1000, "USD"),
            Reported(OUT, "re_failed", 700, "EUR", failed=True),
        ],
    )
    issues = {d.reference: (d.issue, d.ledger_amount, d.gateway_amount) for d in report.differences}
    assert issues == {
        "pi_booked_only": ("missing_at_gateway", 900, None),
        "pi_gateway_only": ("missing_in_ledger", None, 300),
        "pi_amount": ("amount_differs", 1000, 990),
        "pi_currency": ("currency_differs", 1000, 1000),
        "re_failed": ("failed_at_gateway", 700, 0),
    }
    assert report.matched == 0


def test_a_reversed_refund_that_failed_at_the_gateway_is_in_step() -> None:
    # Booked out, then reversed back in the same day: nets to zero, and the gateway says
    # the refund failed. Nothing to fix.
    report = compare(
        [Booked(OUT, "re_1", 700, "EUR", "ltx_1"), Booked(OUT, "re_1", -700, "EUR", "ltx_2")],
        [Reported(OUT, "re_1", 700, "EUR", failed=True)],
    )
    assert report.reconciled


def test_the_ledger_side_is_the_days_clearing_movements_of_that_gateway(engine: Engine) -> None:
    e = emitter()
    with engine.begin() as conn:
        capture(conn, "pay_1", amount=10_000)
        refund, _ = request(conn, amount=1250)
        service.mark_submitted(
            conn, refund_id=refund.id, gateway_refund_id="g1", actor="w", now=NOW
        )
        service.mark_authorized(conn, refund_id=refund.id, actor="w", now=NOW, emitter=e)
        service.mark_succeeded(conn, refund_id=refund.id, actor="w", now=NOW, emitter=e)
        capture(conn, "pay_other", amount=800, order_id="1099", gateway="stripe")
    with engine.connect() as conn:
        sandbox = booked_on(conn, gateway="sandbox", day=NOW.date())
        stripe = booked_on(conn, gateway="stripe", day=NOW.date())
        next_day = booked_on(conn, gateway="sandbox", day=NOW.date() + timedelta(days=1))
    assert sorted((b.direction, b.reference, b.amount) for b in sandbox) == [
        ("in", "pay_1", 10_000),
        ("out", refund.id, 1250),
    ]
    assert [(b.reference, b.amount) for b in stripe] == [("pay_other", 800)]
    assert next_day == []


def test_the_route_compares_the_ledger_with_the_gateways_report(
    runtime: Runtime, client: TestClient
) -> None:
    sandbox = runtime.billing.gateways.named("sandbox")
    assert isinstance(sandbox, SandboxGateway)
    now = utcnow()
    sandbox.add_payment("pay_r1", currency="EUR", captured=5000)
    # Taken by the gateway, never told to us: the webhook was lost.
    sandbox.add_payment("pay_r2", currency="EUR", captured=700)
    with runtime.engine.begin() as conn:
        capture(conn, "pay_r1", amount=5000, now=now)
    today = now.date().isoformat()

    report = client.get(f"{PREFIX}/reconciliation", params={"date": today})
    assert report.status_code == 200, report.text
    body = report.json()
    assert (body["gateway"], body["date"], body["matched"], body["reconciled"]) == (
        "sandbox",
        today,
        1,
        False,
    )
    assert body["differences"] == [
        {
            "issue": "missing_in_ledger",
            "direction": "in",
            "reference": "pay_r2",
            "ledger_amount": None,
            "gateway_amount": 700,
            "currency": "EUR",
            "transaction_id": None,
        }
    ]

    tomorrow = (now + timedelta(days=1)).date().isoformat()
    quiet = client.get(f"{PREFIX}/reconciliation", params={"gateway": "sandbox", "date": tomorrow})
    assert (quiet.json()["matched"], quiet.json()["reconciled"]) == (0, True)

    unknown = client.get(f"{PREFIX}/reconciliation", params={"gateway": "adyen"})
    assert unknown.status_code == 422
    assert (unknown.json()["code"], unknown.json()["field"]) == ("unknown_gateway", "gateway")


def test_the_sandbox_refunds_and_reports_what_the_stores_events_captured(
    runtime: Runtime, client: TestClient
) -> None:
    """A payment.captured event naming the sandbox is a payment the sandbox took: it can be
    refunded through it, and the day reconciles."""
    captured = cloudevent(
        "payment.captured",
        {
            "order_id": "1042",
            "payment_id": "pay_ev_1",
            "amount": 5000,
            "currency": "EUR",
            "gateway": "sandbox",
        },
        id="captured-1",
    )
    posted = client.post(
        "/api/events", json=captured, headers={"Content-Type": "application/cloudevents+json"}
    )
    assert posted.status_code == 202, posted.text
    drain(runtime)
    asked = client.post(
        f"{PREFIX}/refunds",
        json={
            "payment_id": "pay_ev_1",
            "amount": 1250,
            "currency": "EUR",
            "reason_code": "damaged",
        },
        headers={"Idempotency-Key": "r-1"},
    )
    assert asked.status_code == 201, asked.text
    drain(runtime)
    refund = client.get(f"{PREFIX}/refunds/{asked.json()['id']}").json()
    assert refund["status"] == "succeeded"

    report = client.get(f"{PREFIX}/reconciliation", params={"date": utcnow().date().isoformat()})
    assert report.json() == {
        "gateway": "sandbox",
        "date": utcnow().date().isoformat(),
        "matched": 2,
        "reconciled": True,
        "differences": [],
    }
