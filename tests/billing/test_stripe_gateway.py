"""The Stripe gateway through the real stripe library, against a stand-in API on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import pytest

from tests.support.stripe_stub import ALLOW_STRIPE_FORM_WARNING, StripeStub, parse_form
from tidings.billing.gateways.base import (
    Capture,
    GatewayError,
    GatewayRefund,
    GatewayTimeout,
    Movement,
    PaymentAttempt,
)
from tidings.billing.gateways.stripe_gateway import StripeGateway

T = TypeVar("T")
TIMEOUT = 0.5

pytestmark = ALLOW_STRIPE_FORM_WARNING


@pytest.fixture
def stub() -> Iterator[StripeStub]:
    stub = StripeStub().start()
    yield stub
    stub.stop()


def run(
    stub: StripeStub,
    scenario: Callable[[StripeGateway], Awaitable[T]],
    *,
    api_key: str | None = None,
    **options: Any,
) -> T:
    async def main() -> T:
        gateway = StripeGateway(
            api_key or stub.api_key, api_base=stub.url, timeout=TIMEOUT, **options
        )
        try:
            return await scenario(gateway)
        finally:
            await gateway.aclose()

    return asyncio.run(main())


def refund_of(payment_id: str, amount: int, key: str, currency: str = "EUR") -> Any:
    def call(gateway: StripeGateway) -> Awaitable[GatewayRefund]:
        return gateway.refund(
            payment_id=payment_id, amount=amount, currency=currency, idempotency_key=key
        )

    return call


def retry_of(payment_id: str, key: str, amount: int = 4500, currency: str = "USD") -> Any:
    def call(gateway: StripeGateway) -> Awaitable[PaymentAttempt]:
        return gateway.retry_payment(
            payment_id=payment_id, amount=amount, currency=currency, idempotency_key=key
        )

    return call


def failure(stub: StripeStub, scenario: Any, **options: Any) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        run(stub, scenario, **options)
    assert caught.value.gateway == "stripe"
    return caught.value


# ------------------------------------------------------------------ the stand-in itself


def test_bracket_notation_is_parsed_as_stripe_encodes_it() -> None:
    parsed = parse_form(
        [
            ("metadata[tidings_refund]", "rf_1"),
            ("expand[0]", "latest_charge"),
            ("expand[1]", "customer"),
            ("created[gte]", "10"),
            ("amount", "5"),
        ]
    )
    assert parsed == {
        "metadata": {"tidings_refund": "rf_1"},
        "expand": ["latest_charge", "customer"],
        "created": {"gte": "10"},
        "amount": "5",
    }
    assert parse_form([("expand[]", "a"), ("expand[]", "b")]) == {"expand": ["a", "b"]}


# ------------------------------------------------------------------ captures


def test_lookup_capture_reads_the_payment_intent_and_its_charge(stub: StripeStub) -> None:
    payment = stub.add_payment(10_000, "eur")
    run(stub, refund_of(payment, 2_500, "rf_1"))

    capture = run(stub, lambda g: g.lookup_capture(payment))

    assert capture == Capture(payment_id=payment, amount=10_000, currency="EUR", refunded=2_500)
    lookup = stub.requests("GET", f"/v1/payment_intents/{payment}")[-1]
    assert lookup.query["expand[0]"] == ["latest_charge"]
    assert lookup.headers["authorization"] == f"Bearer {stub.api_key}"
    assert lookup.headers["stripe-version"]


def test_a_payment_that_never_succeeded_has_no_capture(stub: StripeStub) -> None:
    payment = stub.add_failed_payment(4500, "usd", declines=["insufficient_funds"])

    refused = failure(stub, lambda g: g.lookup_capture(payment))

    assert refused.permanent
    assert refused.code == "payment_not_captured"


def test_an_unknown_payment_is_refused_with_stripes_code(stub: StripeStub) -> None:
    refused = failure(stub, lambda g: g.lookup_capture("pi_nope"))

    assert refused.permanent
    assert refused.code == "resource_missing"


# ------------------------------------------------------------------ refunds


def test_full_and_partial_refunds_carry_the_idempotency_key(stub: StripeStub) -> None:
    payment = stub.add_payment(10_000, "eur")

    partial = run(stub, refund_of(payment, 3_000, "rf_partial"))
    rest = run(stub, refund_of(payment, 7_000, "rf_rest"))

    assert partial.status == rest.status == "succeeded"
    assert partial.gateway_refund_id != rest.gateway_refund_id
    sent = stub.requests("POST", "/v1/refunds")
    assert [r.headers["idempotency-key"] for r in sent] == ["rf_partial", "rf_rest"]
    first = parse_form([(k, v[0]) for k, v in sent[0].form().items()])
    assert first == {
        "payment_intent": payment,
        "amount": "3000",
        "metadata": {"tidings_refund": "rf_partial"},
    }
    assert run(stub, lambda g: g.lookup_capture(payment)).refunded == 10_000


def test_a_refund_repeated_with_its_key_answers_the_same_refund(stub: StripeStub) -> None:
    payment = stub.add_payment(10_000, "eur")

    first = run(stub, refund_of(payment, 4_000, "rf_1"))
    again = run(stub, refund_of(payment, 4_000, "rf_1"))

    assert again == first
    assert len(stub.refunds) == 1
    assert run(stub, lambda g: g.lookup_capture(payment)).refunded == 4_000


def test_a_key_reused_for_another_amount_is_an_idempotency_error(stub: StripeStub) -> None:
    payment = stub.add_payment(10_000, "eur")
    run(stub, refund_of(payment, 4_000, "rf_1"))

    refused = failure(stub, refund_of(payment, 5_000, "rf_1"))

    assert refused.permanent
    assert refused.code == "idempotency_error"
    assert len(stub.refunds) == 1


def test_refunding_more_than_is_left_is_refused_permanently(stub: StripeStub) -> None:
    payment = stub.add_payment(10_000, "eur")
    run(stub, refund_of(payment, 8_000, "rf_1"))

    refused = failure(stub, refund_of(payment, 2_001, "rf_2"))

    assert refused.permanent
    assert refused.code == "amount_too_large"
    assert len(stub.refunds) == 1


def test_a_refund_in_another_currency_is_refused_before_sending(stub: StripeStub) -> None:
    payment = stub.add_payment(10_000, "eur")

    refused = failure(stub, refund_of(payment, 1_000, "rf_1", currency="USD"))

    assert refused.permanent
    assert refused.code == "currency_mismatch"
    assert stub.requests("POST", "/v1/refunds") == []


def test_a_pending_refund_later_succeeds(stub: StripeStub) -> None:
    payment = stub.add_payment(10_000, "eur")
    stub.next_refund_status = "pending"

    made = run(stub, refund_of(payment, 1_000, "rf_1"))
    before = run(stub, lambda g: g.refund_status(made.gateway_refund_id))
    stub.settle_refund(made.gateway_refund_id, "succeeded")
    after = run(stub, lambda g: g.refund_status(made.gateway_refund_id))

    assert (made.status, before.status, after.status) == ("pending", "pending", "succeeded")
    assert after.failure_reason is None


def test_a_succeeded_refund_can_fail_later_with_stripes_reason(stub: StripeStub) -> None:
    payment = stub.add_payment(10_000, "eur")

    made = run(stub, refund_of(payment, 1_000, "rf_1"))
    stub.settle_refund(made.gateway_refund_id, "failed", "expired_or_canceled_card")
    later = run(stub, lambda g: g.refund_status(made.gateway_refund_id))

    assert made.status == "succeeded"
    assert later == GatewayRefund("failed", made.gateway_refund_id, "expired_or_canceled_card")
    # The money came back to the capture.
    assert run(stub, lambda g: g.lookup_capture(payment)).refunded == 0


def test_a_canceled_refund_is_failed(stub: StripeStub) -> None:
    payment = stub.add_payment(10_000, "eur")
    made = run(stub, refund_of(payment, 1_000, "rf_1"))
    stub.settle_refund(made.gateway_refund_id, "canceled")

    later = run(stub, lambda g: g.refund_status(made.gateway_refund_id))

    assert later.status == "failed"
    assert later.failure_reason


def test_a_refund_that_hangs_times_out_and_is_found_afterwards(stub: StripeStub) -> None:
    payment = stub.add_payment(10_000, "eur")
    stub.inject("POST", "/v1/refunds", hang=TIMEOUT * 4)

    with pytest.raises(GatewayTimeout) as caught:
        run(stub, refund_of(payment, 2_000, "rf_hung"))
    found = run(stub, lambda g: g.find_refund(payment_id=payment, idempotency_key="rf_hung"))
    other = run(stub, lambda g: g.find_refund(payment_id=payment, idempotency_key="rf_never"))

    assert caught.value.operation == "refund"
    assert caught.value.idempotency_key == "rf_hung"
    assert caught.value.gateway == "stripe"
    (made,) = stub.refunds.values()
    assert found == GatewayRefund("succeeded", made["id"])
    assert other is None


def test_find_refund_pages_through_the_payments_refunds(stub: StripeStub) -> None:
    payment = stub.add_payment(100_000, "eur")
    for n in range(105):
        stub.now += 1
        stub.add_refund(payment, 10, key=f"rf_{n}")
    # Listed newest first: the oldest is on the second page.
    found = run(stub, lambda g: g.find_refund(payment_id=payment, idempotency_key="rf_0"))

    assert found is not None
    assert stub.refunds[found.gateway_refund_id]["metadata"] == {"tidings_refund": "rf_0"}
    lists = stub.requests("GET", "/v1/refunds")
    assert [r.query.get("starting_after") is not None for r in lists] == [False, True]


# ------------------------------------------------------------------ payment retries


def test_soft_declines_then_approval_carry_codes_and_network(stub: StripeStub) -> None:
    payment = stub.add_failed_payment(
        4500, "usd", brand="mastercard", declines=["insufficient_funds", "do_not_honor"]
    )

    first = run(stub, retry_of(payment, "try_1"))
    second = run(stub, retry_of(payment, "try_2"))

    assert first == PaymentAttempt("declined", decline_code="do_not_honor", network="mastercard")
    assert second == PaymentAttempt("approved", network="mastercard")
    gateway = StripeGateway(stub.api_key, api_base=stub.url)
    assert gateway.decline_category(first.decline_code) == "soft"
    confirms = stub.requests("POST", f"/v1/payment_intents/{payment}/confirm")
    assert [r.headers["idempotency-key"] for r in confirms] == ["try_1", "try_2"]
    form = parse_form([(k, v[0]) for k, v in confirms[0].form().items()])
    assert form["off_session"] == "true"
    assert form["payment_method"] == stub.intents[payment]["payment_method"]
    assert run(stub, lambda g: g.lookup_capture(payment)).amount == 4500


def test_a_retry_repeated_with_its_key_answers_the_first_outcome(stub: StripeStub) -> None:
    payment = stub.add_failed_payment(
        4500, "usd", declines=["insufficient_funds", "insufficient_funds"]
    )

    first = run(stub, retry_of(payment, "try_1"))
    again = run(stub, retry_of(payment, "try_1"))

    assert first == again == PaymentAttempt("declined", "insufficient_funds", "visa")
    # Replayed by the key, not declined a second time: the next new attempt is approved.
    assert run(stub, retry_of(payment, "try_2")).outcome == "approved"
    # Once paid, the first key still answers its decline and a new key reports the payment.
    assert run(stub, retry_of(payment, "try_1")) == first
    assert run(stub, retry_of(payment, "try_3")) == PaymentAttempt("approved", network="visa")
    assert len([c for c in stub.charges.values() if c["paid"]]) == 1


def test_a_hard_decline_is_classified_hard(stub: StripeStub) -> None:
    payment = stub.add_failed_payment(4500, "usd", declines=["insufficient_funds", "stolen_card"])

    attempt = run(stub, retry_of(payment, "try_1"))

    assert attempt.decline_code == "stolen_card"
    gateway = StripeGateway(stub.api_key, api_base=stub.url)
    assert gateway.decline_category(attempt.decline_code) == "hard"


def test_a_decline_without_decline_code_uses_the_error_code(stub: StripeStub) -> None:
    payment = stub.add_failed_payment(4500, "usd", declines=["insufficient_funds", "expired_card"])

    attempt = run(stub, retry_of(payment, "try_1"))

    assert attempt == PaymentAttempt("declined", decline_code="expired_card", network="visa")


def test_a_retry_for_another_amount_is_refused_without_charging(stub: StripeStub) -> None:
    payment = stub.add_failed_payment(4500, "usd", declines=["insufficient_funds"])

    refused = failure(stub, retry_of(payment, "try_1", amount=4000))

    assert refused.permanent
    assert refused.code == "amount_mismatch"
    assert stub.requests("POST", f"/v1/payment_intents/{payment}/confirm") == []


def test_a_retry_that_hangs_is_a_timeout_with_its_key(stub: StripeStub) -> None:
    payment = stub.add_failed_payment(4500, "usd", declines=["insufficient_funds"])
    stub.inject("POST", f"/v1/payment_intents/{payment}/confirm", hang=TIMEOUT * 4)

    with pytest.raises(GatewayTimeout) as caught:
        run(stub, retry_of(payment, "try_1"))
    again = run(stub, retry_of(payment, "try_1"))

    assert (caught.value.operation, caught.value.idempotency_key) == ("retry_payment", "try_1")
    # The hung attempt was made; asking again with the key tells its outcome.
    assert again.outcome == "approved"


# ------------------------------------------------------------------ failures


def test_a_rejected_api_key_is_permanent_and_never_repeated(stub: StripeStub) -> None:
    wrong = "sk_test_wrong_51HxYzAbCdEfGh"

    refused = failure(stub, lambda g: g.lookup_capture("pi_1"), api_key=wrong)

    assert refused.permanent
    assert stub.requests()[-1].headers["authorization"] == f"Bearer {wrong}"
    assert wrong not in str(refused)


def test_a_server_error_is_transient(stub: StripeStub) -> None:
    payment = stub.add_payment(10_000, "eur")
    stub.inject("POST", "/v1/refunds", status=500)

    refused = failure(stub, refund_of(payment, 1_000, "rf_1"))
    retried = run(stub, refund_of(payment, 1_000, "rf_1"))

    assert not refused.permanent
    assert retried.status == "succeeded"
    assert len(stub.requests("POST", "/v1/refunds")) == 2


def test_a_rate_limit_is_transient(stub: StripeStub) -> None:
    stub.inject("GET", "/v1/refunds/re_1", status=429)

    refused = failure(stub, lambda g: g.refund_status("re_1"))

    assert not refused.permanent


def test_a_read_that_hangs_is_a_transient_error(stub: StripeStub) -> None:
    payment = stub.add_payment(10_000, "eur")
    stub.inject("GET", f"/v1/payment_intents/{payment}", hang=TIMEOUT * 4)

    refused = failure(stub, lambda g: g.lookup_capture(payment))

    assert not refused.permanent


def test_an_unreachable_stripe_is_transient_even_for_a_refund(stub: StripeStub) -> None:
    payment = stub.add_payment(10_000, "eur")
    stub.stop()

    refused = failure(stub, refund_of(payment, 1_000, "rf_1"))

    assert not refused.permanent
    assert stub.refunds == {}


def test_the_api_key_is_in_no_error_message(stub: StripeStub) -> None:
    payment = stub.add_payment(10_000, "eur")
    messages: list[str] = []
    for scenario, key in [
        (lambda g: g.lookup_capture("pi_missing"), None),
        (refund_of(payment, 99_999, "rf_big"), None),
        (refund_of(payment, 1_000, "rf_x", currency="GBP"), None),
        (lambda g: g.refund_status("re_missing"), None),
        (lambda g: g.lookup_capture(payment), stub.api_key + "x"),
    ]:
        with pytest.raises(GatewayError) as caught:
            run(stub, scenario, api_key=key)
        messages.append(str(caught.value))
    stub.inject("POST", "/v1/refunds", hang=TIMEOUT * 4)
    with pytest.raises(GatewayTimeout) as timed_out:
        run(stub, refund_of(payment, 1_000, "rf_hang"))
    messages.append(str(timed_out.value))

    assert all(messages)
    assert not [m for m in messages if stub.api_key in m]


# ------------------------------------------------------------------ activity


def test_activity_lists_a_days_captures_and_refunds_across_pages(stub: StripeStub) -> None:
    day = date(2026, 3, 14)
    start = int(datetime(2026, 3, 14, tzinfo=UTC).timestamp())
    stub.now = start - 60
    before = stub.add_payment(1_111, "eur")  # the day before
    stub.now = start
    payments = []
    for n in range(150):
        stub.now = start + 60 * n
        payments.append(stub.add_payment(1_000 + n, "eur"))
    stub.now = start + 86_399
    run(stub, refund_of(payments[0], 300, "rf_kept"))
    run(stub, refund_of(payments[1], 400, "rf_failed"))
    failed_id = next(r["id"] for r in stub.refunds.values() if r["amount"] == 400)
    stub.settle_refund(failed_id, "failed", "lost_or_stolen_card")
    stub.now = start + 86_400  # the next day
    stub.add_payment(2_222, "eur")
    run(stub, refund_of(before, 500, "rf_next_day"))
    declined = stub.add_failed_payment(3_333, "eur", declines=["insufficient_funds"])

    movements = run(stub, lambda g: g.activity(day))

    ins = sorted((m for m in movements if m.direction == "in"), key=lambda m: m.amount)
    outs = sorted((m for m in movements if m.direction == "out"), key=lambda m: m.amount)
    assert ins == [Movement("in", p, 1_000 + n, "EUR") for n, p in enumerate(payments)]
    assert outs == [
        Movement("out", "rf_kept", 300, "EUR"),
        Movement("out", "rf_failed", 400, "EUR", failed=True),
    ]
    assert declined not in {m.reference for m in movements}
    charge_lists = stub.requests("GET", "/v1/charges")
    assert len(charge_lists) == 2
    assert charge_lists[0].query["created[gte]"] == [str(start)]
    assert charge_lists[0].query["created[lt]"] == [str(start + 86_400)]
