"""BraintreeGateway against a loopback stand-in for Braintree's GraphQL endpoint.

The stand-in (tests/support/braintree_stub.py) checks the documented request shape and
answers with the documented response shapes; these tests check the adapter's mapping of
amounts, statuses, decline codes and errors onto the Gateway interface.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, date, datetime
from typing import TypeVar

import pytest

from tests.support.braintree_stub import BraintreeApi, graphql_error
from tests.support.http_stub import HttpStub, Reply
from tidings.billing.gateways.base import (
    GatewayError,
    GatewayRefund,
    GatewayTimeout,
    Movement,
    PaymentAttempt,
)
from tidings.billing.gateways.braintree import BraintreeGateway
from tidings.delivery.providers.http import new_client

PUBLIC_KEY = "v4ndq314c2s5c28r"
PRIVATE_KEY = "93b78bc88be90d93ac282e50ae569fdd"
TIMEOUT = 0.3
HANG = 1.0

T = TypeVar("T")


@pytest.fixture
def api() -> BraintreeApi:
    return BraintreeApi(PUBLIC_KEY, PRIVATE_KEY)


@pytest.fixture
def stub(api: BraintreeApi) -> Iterator[HttpStub]:
    server = HttpStub(api).start()
    yield server
    server.stop()


def run(
    stub: HttpStub,
    call: Callable[[BraintreeGateway], Awaitable[T]],
    *,
    private_key: str = PRIVATE_KEY,
) -> T:
    async def go() -> T:
        async with new_client(timeout=TIMEOUT) as client:
            gateway = BraintreeGateway(
                PUBLIC_KEY,
                private_key,
                endpoint=f"{stub.url}/graphql",
                timeout=TIMEOUT,
                client=client,
            )
            return await call(gateway)

    return asyncio.run(go())


def refund(stub: HttpStub, payment_id: str, amount: int, currency: str, key: str) -> GatewayRefund:
    return run(
        stub,
        lambda gw: gw.refund(
            payment_id=payment_id, amount=amount, currency=currency, idempotency_key=key
        ),
    )


# ------------------------------------------------------------------ requests


def test_requests_carry_basic_auth_the_version_date_and_json(
    stub: HttpStub, api: BraintreeApi
) -> None:
    tx = api.add_transaction("12.50", "EUR")
    run(stub, lambda gw: gw.lookup_capture(tx))
    (request,) = stub.taken()
    token = base64.b64decode(request.headers["authorization"].removeprefix("Basic ")).decode()
    assert token == f"{PUBLIC_KEY}:{PRIVATE_KEY}"
    assert request.headers["braintree-version"] == "2019-01-01"
    assert request.headers["content-type"] == "application/json"
    assert request.json()["variables"] == {"id": tx}
    assert "node(id: $id)" in request.json()["query"]


def test_a_gateway_without_a_client_makes_and_closes_its_own(
    stub: HttpStub, api: BraintreeApi
) -> None:
    tx = api.add_transaction("3.00", "USD")

    async def go() -> int:
        gateway = BraintreeGateway(
            PUBLIC_KEY, PRIVATE_KEY, endpoint=f"{stub.url}/graphql", timeout=TIMEOUT
        )
        try:
            return (await gateway.lookup_capture(tx)).amount
        finally:
            await gateway.aclose()

    assert asyncio.run(go()) == 300


# ------------------------------------------------------------------ captures


@pytest.mark.parametrize(
    ("value", "currency", "minor"),
    [("12.50", "USD", 1250), ("1500", "JPY", 1500), ("12.345", "KWD", 12345)],
)
def test_the_captured_amount_is_in_minor_units_of_the_currency_exponent(
    stub: HttpStub, api: BraintreeApi, value: str, currency: str, minor: int
) -> None:
    tx = api.add_transaction(value, currency)
    capture = run(stub, lambda gw: gw.lookup_capture(tx))
    assert (capture.payment_id, capture.amount, capture.currency) == (tx, minor, currency)
    assert capture.refunded == 0


def test_refunded_counts_refunds_that_did_not_fail(stub: HttpStub, api: BraintreeApi) -> None:
    tx = api.add_transaction("40.00", "EUR")
    api.add_refund(tx, "5.00", status="SETTLED", order_id="r1")
    api.add_refund(tx, "7.25", status="SUBMITTED_FOR_SETTLEMENT", order_id="r2")
    api.add_refund(tx, "9.00", status="SETTLEMENT_DECLINED", order_id="r3")
    assert run(stub, lambda gw: gw.lookup_capture(tx)).refunded == 1225


@pytest.mark.parametrize("status", ["AUTHORIZED", "PROCESSOR_DECLINED", "VOIDED"])
def test_a_transaction_not_submitted_for_settlement_is_not_a_capture(
    stub: HttpStub, api: BraintreeApi, status: str
) -> None:
    tx = api.add_transaction("10.00", "EUR", status=status)
    with pytest.raises(GatewayError) as caught:
        run(stub, lambda gw: gw.lookup_capture(tx))
    assert (caught.value.permanent, caught.value.code) == (True, "payment_not_captured")
    assert caught.value.gateway == "braintree"


def test_an_unknown_transaction_is_resource_missing(stub: HttpStub) -> None:
    with pytest.raises(GatewayError) as caught:
        run(stub, lambda gw: gw.lookup_capture("dHJhbnNhY3Rpb25fbm9uZQ"))
    assert (caught.value.permanent, caught.value.code) == (True, "resource_missing")


# ------------------------------------------------------------------ refunds


def test_partial_then_full_refund(stub: HttpStub, api: BraintreeApi) -> None:
    tx = api.add_transaction("12.50", "USD")
    first = refund(stub, tx, 500, "USD", "ref_1")
    second = refund(stub, tx, 750, "usd", "ref_2")
    assert [r.status for r in (first, second)] == ["pending", "pending"]
    made = [api.refunds[r.gateway_refund_id] for r in (first, second)]
    assert [(str(r.amount), r.order_id) for r in made] == [("5.00", "ref_1"), ("7.50", "ref_2")]
    assert run(stub, lambda gw: gw.lookup_capture(tx)).refunded == 1250
    # Nothing is left: Braintree refuses with a validation error, which is permanent.
    with pytest.raises(GatewayError) as caught:
        refund(stub, tx, 1, "USD", "ref_3")
    assert (caught.value.permanent, caught.value.code) == (True, "91521")
    assert caught.value.gateway == "braintree"


@pytest.mark.parametrize(
    ("capture", "currency", "minor", "sent"),
    [("5000", "JPY", 1200, "1200"), ("20.000", "KWD", 1005, "1.005"), ("9.99", "EUR", 5, "0.05")],
)
def test_refund_amounts_are_sent_in_major_units(
    stub: HttpStub, api: BraintreeApi, capture: str, currency: str, minor: int, sent: str
) -> None:
    tx = api.add_transaction(capture, currency)
    refund(stub, tx, minor, currency, "ref_x")
    mutation = stub.taken()[-1].json()
    assert "refundTransaction(input: $input)" in mutation["query"]
    assert mutation["variables"]["input"] == {
        "transactionId": tx,
        "refund": {"amount": sent, "orderId": "ref_x"},
    }


def test_a_refund_in_another_currency_is_refused_before_anything_is_sent(
    stub: HttpStub, api: BraintreeApi
) -> None:
    tx = api.add_transaction("10.00", "EUR")
    with pytest.raises(GatewayError) as caught:
        refund(stub, tx, 100, "USD", "ref_1")
    assert (caught.value.permanent, caught.value.code) == (True, "currency_mismatch")
    assert "refundTransaction" not in api.calls


def test_a_refund_repeated_with_its_key_answers_the_first_one(
    stub: HttpStub, api: BraintreeApi
) -> None:
    tx = api.add_transaction("10.00", "EUR")
    first = refund(stub, tx, 300, "EUR", "ref_1")
    again = refund(stub, tx, 300, "EUR", "ref_1")
    assert again == first
    assert api.calls.count("refundTransaction") == 1
    with pytest.raises(GatewayError) as caught:
        refund(stub, tx, 400, "EUR", "ref_1")
    assert (caught.value.permanent, caught.value.code) == (True, "idempotency_error")


def test_a_hung_refund_times_out_and_find_refund_finds_what_it_made(
    stub: HttpStub, api: BraintreeApi
) -> None:
    tx = api.add_transaction("30.00", "EUR")
    assert run(stub, lambda gw: gw.find_refund(payment_id=tx, idempotency_key="ref_9")) is None
    api.hang_next("refundTransaction", HANG)
    with pytest.raises(GatewayTimeout) as caught:
        refund(stub, tx, 1000, "EUR", "ref_9")
    assert (caught.value.operation, caught.value.idempotency_key) == ("refund", "ref_9")
    assert caught.value.gateway == "braintree"
    (made,) = api.refunds.values()
    found = run(stub, lambda gw: gw.find_refund(payment_id=tx, idempotency_key="ref_9"))
    assert found is not None
    assert (found.gateway_refund_id, found.status) == (made.id, "pending")
    # Submitting again with the same key answers the refund already made.
    assert refund(stub, tx, 1000, "EUR", "ref_9") == found
    assert len(api.refunds) == 1
    assert run(stub, lambda gw: gw.find_refund(payment_id=tx, idempotency_key="other")) is None


@pytest.mark.parametrize(
    ("later", "expected"),
    [("SETTLED", "succeeded"), ("SETTLEMENT_DECLINED", "failed"), ("FAILED", "failed")],
)
def test_refund_status_follows_braintree(
    stub: HttpStub, api: BraintreeApi, later: str, expected: str
) -> None:
    tx = api.add_transaction("10.00", "EUR")
    made = refund(stub, tx, 250, "EUR", "ref_1")
    refund_id = made.gateway_refund_id
    assert run(stub, lambda gw: gw.refund_status(refund_id)).status == "pending"
    api.set_status(refund_id, "SETTLING")
    assert run(stub, lambda gw: gw.refund_status(refund_id)).status == "pending"
    api.set_status(refund_id, later)
    now = run(stub, lambda gw: gw.refund_status(refund_id))
    assert (now.status, now.gateway_refund_id) == (expected, refund_id)
    assert (now.failure_reason is None) == (expected == "succeeded")
    refunded = run(stub, lambda gw: gw.lookup_capture(tx)).refunded
    assert refunded == (250 if expected == "succeeded" else 0)


def test_refund_status_of_an_unknown_refund_is_resource_missing(
    stub: HttpStub, api: BraintreeApi
) -> None:
    tx = api.add_transaction("10.00", "EUR")
    with pytest.raises(GatewayError) as caught:
        run(stub, lambda gw: gw.refund_status("cmVmdW5kX25vbmU"))
    assert caught.value.code == "resource_missing"
    # A transaction id is not a refund id either.
    with pytest.raises(GatewayError) as caught:
        run(stub, lambda gw: gw.refund_status(tx))
    assert caught.value.code == "resource_missing"


# ------------------------------------------------------------------ retries


def retry(
    stub: HttpStub, payment_id: str, amount: int, key: str, currency: str = "EUR"
) -> PaymentAttempt:
    return run(
        stub,
        lambda gw: gw.retry_payment(
            payment_id=payment_id, amount=amount, currency=currency, idempotency_key=key
        ),
    )


def test_a_retry_declined_for_funds_then_approved(stub: HttpStub, api: BraintreeApi) -> None:
    tx = api.add_transaction("25.00", "EUR", status="PROCESSOR_DECLINED", payment_method_id="pm_7")
    api.decline("pm_7", "2001")
    first = retry(stub, tx, 2500, "try_1")
    assert (first.outcome, first.decline_code, first.network) == (
        "declined",
        "insufficient_funds",
        "visa",
    )
    gateway = BraintreeGateway(PUBLIC_KEY, PRIVATE_KEY)
    assert gateway.decline_category(first.decline_code) == "soft"
    second = retry(stub, tx, 2500, "try_2")
    assert (second.outcome, second.decline_code, second.network) == (
        "approved",
        None,
        "visa",
    )
    charge = next(
        r.json() for r in reversed(stub.taken()) if "chargePaymentMethod" in r.json()["query"]
    )
    transaction = charge["variables"]["input"]["transaction"]
    assert charge["variables"]["input"]["paymentMethodId"] == "pm_7"
    assert (transaction["amount"], transaction["orderId"]) == ("25.00", "try_2")
    approved = next(t for t in api.transactions.values() if t.order_id == "try_2")
    assert approved.status == "SUBMITTED_FOR_SETTLEMENT"


def test_a_retry_repeated_with_its_key_answers_the_first_outcome(
    stub: HttpStub, api: BraintreeApi
) -> None:
    tx = api.add_transaction("8.00", "EUR", status="PROCESSOR_DECLINED", payment_method_id="pm_2")
    api.decline("pm_2", "2000")
    first = retry(stub, tx, 800, "try_1")
    again = retry(stub, tx, 800, "try_1")
    assert first == again
    assert again.decline_code == "do_not_honor"
    assert api.calls.count("chargePaymentMethod") == 1


@pytest.mark.parametrize("style", ["transaction", "error"])
def test_a_stolen_card_decline_is_hard(stub: HttpStub, api: BraintreeApi, style: str) -> None:
    api.decline_style = style  # type: ignore[assignment]
    tx = api.add_transaction(
        "8.00",
        "EUR",
        status="PROCESSOR_DECLINED",
        payment_method_id="pm_3",
        brand_code="MASTERCARD",
    )
    api.decline("pm_3", "2013")
    attempt = retry(stub, tx, 800, "try_1")
    assert (attempt.outcome, attempt.decline_code, attempt.network) == (
        "declined",
        "stolen_card",
        "mastercard",
    )
    gateway = BraintreeGateway(PUBLIC_KEY, PRIVATE_KEY)
    assert gateway.decline_category(attempt.decline_code) == "hard"
    # The declined transaction is stored; the same key finds it instead of charging again.
    assert retry(stub, tx, 800, "try_1") == attempt
    assert api.calls.count("chargePaymentMethod") == 1


@pytest.mark.parametrize(
    ("legacy", "decline"),
    [
        ("2002", "card_velocity_exceeded"),
        ("2004", "expired_card"),
        ("2014", "fraudulent"),
        ("3000", "processing_error"),
        ("2999", "generic_decline"),
    ],
)
def test_processor_response_codes_map_to_stripe_codes(
    stub: HttpStub, api: BraintreeApi, legacy: str, decline: str
) -> None:
    tx = api.add_transaction(
        "8.00", "EUR", status="SETTLED", payment_method_id="pm_4", brand_code="AMERICAN_EXPRESS"
    )
    api.decline("pm_4", legacy)
    attempt = retry(stub, tx, 800, "try_1")
    assert (attempt.decline_code, attempt.network) == (decline, "amex")


def test_a_retry_without_a_vaulted_payment_method_is_refused(
    stub: HttpStub, api: BraintreeApi
) -> None:
    tx = api.add_transaction("8.00", "EUR", payment_method_id=None)
    with pytest.raises(GatewayError) as caught:
        retry(stub, tx, 800, "try_1")
    assert (caught.value.permanent, caught.value.code) == (True, "payment_method_missing")


def test_a_hung_charge_times_out_and_the_retry_finds_its_outcome(
    stub: HttpStub, api: BraintreeApi
) -> None:
    tx = api.add_transaction("8.00", "EUR", status="PROCESSOR_DECLINED", payment_method_id="pm_5")
    api.hang_next("chargePaymentMethod", HANG)
    with pytest.raises(GatewayTimeout) as caught:
        retry(stub, tx, 800, "try_1")
    assert (caught.value.operation, caught.value.idempotency_key) == ("retry_payment", "try_1")
    assert retry(stub, tx, 800, "try_1").outcome == "approved"
    assert api.calls.count("chargePaymentMethod") == 1


# ------------------------------------------------------------------ errors


def test_refused_keys_are_permanent_and_not_in_the_message(
    stub: HttpStub, api: BraintreeApi
) -> None:
    tx = api.add_transaction("10.00", "EUR")
    with pytest.raises(GatewayError) as caught:
        run(stub, lambda gw: gw.lookup_capture(tx), private_key="wrong-private-key")
    assert (caught.value.permanent, caught.value.code) == (True, "authentication")
    assert "wrong-private-key" not in str(caught.value)
    assert PUBLIC_KEY not in str(caught.value)


@pytest.mark.parametrize(
    ("reply", "permanent", "code"),
    [
        (Reply(500, "Internal Server Error"), False, None),
        (Reply(503, {"errors": [graphql_error("down", "SERVICE_AVAILABILITY")]}), False, None),
        (Reply(429, "Too Many Requests"), False, None),
        (Reply(200, {"data": None, "errors": [graphql_error("oops", "INTERNAL")]}), False, None),
        (Reply(403, "Forbidden"), True, "authorization"),
        (Reply(200, {"errors": [graphql_error("no", "AUTHORIZATION")]}), True, "authorization"),
        (
            Reply(200, {"data": None, "errors": [graphql_error("bad", "VALIDATION", "81503")]}),
            True,
            "81503",
        ),
    ],
)
def test_errors_are_permanent_or_transient_by_status_and_error_class(
    stub: HttpStub, api: BraintreeApi, reply: Reply, permanent: bool, code: str | None
) -> None:
    tx = api.add_transaction("10.00", "EUR")
    api.fail_next("node", reply)
    with pytest.raises(GatewayError) as caught:
        run(stub, lambda gw: gw.lookup_capture(tx))
    assert (caught.value.permanent, caught.value.code) == (permanent, code)
    assert caught.value.gateway == "braintree"
    # The fault was one reply: the next request is answered.
    assert run(stub, lambda gw: gw.lookup_capture(tx)).amount == 1000


def test_a_500_on_the_refund_itself_is_transient_and_made_nothing(
    stub: HttpStub, api: BraintreeApi
) -> None:
    tx = api.add_transaction("10.00", "EUR")
    api.fail_next("refundTransaction", Reply(500, "Internal Server Error"))
    with pytest.raises(GatewayError) as caught:
        refund(stub, tx, 100, "EUR", "ref_1")
    assert caught.value.permanent is False
    assert api.refunds == {}
    assert refund(stub, tx, 100, "EUR", "ref_1").status == "pending"


def test_a_read_that_hangs_is_a_transient_error_not_a_timeout(
    stub: HttpStub, api: BraintreeApi
) -> None:
    tx = api.add_transaction("10.00", "EUR")
    api.hang_next("node", HANG)
    with pytest.raises(GatewayError) as caught:
        run(stub, lambda gw: gw.lookup_capture(tx))
    assert caught.value.permanent is False


def test_an_unreachable_gateway_is_transient_even_for_a_refund(
    stub: HttpStub, api: BraintreeApi
) -> None:
    tx = api.add_transaction("10.00", "EUR")
    stub.down()
    try:
        with pytest.raises(GatewayError) as caught:
            refund(stub, tx, 100, "EUR", "ref_1")
        assert caught.value.permanent is False
    finally:
        stub.up()


# ------------------------------------------------------------------ activity


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, second, tzinfo=UTC)


def test_activity_reads_every_page_of_the_day_and_nothing_else(
    stub: HttpStub, api: BraintreeApi
) -> None:
    api.page_limit = 2
    day_txs = [api.add_transaction(f"{n}.00", "EUR", created_at=at(14, 0, n)) for n in range(1, 6)]
    api.add_transaction("1500", "JPY", created_at=at(14, 23, 59, 59))
    api.add_transaction("9.00", "EUR", status="PROCESSOR_DECLINED", created_at=at(14, 9))
    api.add_transaction("7.00", "EUR", status="AUTHORIZED", created_at=at(14, 10))
    api.add_transaction("8.00", "EUR", created_at=at(13, 23, 59, 59))
    # Within the minute Braintree adds to the upper bound, yet another day.
    api.add_transaction("6.00", "EUR", created_at=at(15, 0, 0, 30))
    api.now = at(14, 11)
    refunded = api.add_refund(day_txs[0], "0.50", status="SETTLED", order_id="ref_a")
    failed = api.add_refund(day_txs[1], "1.25", status="SETTLEMENT_DECLINED", order_id="ref_b")
    api.now = at(15, 0, 0, 10)
    api.add_refund(day_txs[2], "1.00", status="SETTLED", order_id="ref_next_day")

    moved = run(stub, lambda gw: gw.activity(date(2026, 3, 14)))

    jpy = next(t.id for t in api.transactions.values() if t.currency == "JPY")
    expected_in = [Movement("in", tx, n * 100, "EUR") for n, tx in enumerate(day_txs, 1)]
    assert moved == [
        *expected_in,
        Movement("in", jpy, 1500, "JPY"),
        Movement("out", "ref_a", 50, "EUR"),
        Movement("out", "ref_b", 125, "EUR", failed=True),
    ]
    assert api.refunds[refunded].order_id == "ref_a"
    assert api.refunds[failed].status == "SETTLEMENT_DECLINED"
    searches = [r.json()["variables"] for r in stub.taken()]
    assert api.calls.count("transactions") == 5  # 9 in the window (with 00:00:30), 2 a page
    assert api.calls.count("refunds") == 2
    assert searches[0]["input"]["createdAt"] == {
        "greaterThanOrEqualTo": "2026-03-14T00:00:00Z",
        "lessThanOrEqualTo": "2026-03-15T00:00:00Z",
    }
    assert searches[0]["after"] is None
    assert searches[1]["after"] is not None


def test_activity_of_a_quiet_day_is_empty(stub: HttpStub, api: BraintreeApi) -> None:
    api.add_transaction("5.00", "EUR", created_at=at(14, 8))
    assert run(stub, lambda gw: gw.activity(date(2026, 3, 20))) == []
