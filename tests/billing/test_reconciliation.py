"""The ledger against what a gateway reports for a day: matching and each difference."""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import Engine

from tests.billing.support import NOW, capture, emitter, request
from tidings.billing import service
from tidings.billing.reconciliation import Booked, Reported, booked_on, compare

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
        service.record_capture(
            conn,
            payment_id="pay_other",
            store="lumen",
            order_id="1099",
            customer_id=None,
            gateway="stripe",
            currency="EUR",
            amount=800,
            method="card",
            now=NOW,
            actor="t",
        )
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
    assert isinstance(NOW.date(), date)
