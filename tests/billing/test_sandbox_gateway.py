"""The sandbox gateway: outcomes from card tokens and refund amounts, held in memory."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import pytest

from tidings.billing.gateways.base import (
    GatewayError,
    GatewayRefund,
    GatewayTimeout,
    Movement,
    PaymentAttempt,
)
from tidings.billing.gateways.sandbox import SandboxGateway

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def captured(amount: int = 10_000, **options: Any) -> SandboxGateway:
    gateway = SandboxGateway(**options)
    gateway.add_payment("pay_1", currency="EUR", captured=amount)
    return gateway


def refund(gateway: SandboxGateway, amount: int, key: str = "k1") -> GatewayRefund:
    return run(
        gateway.refund(payment_id="pay_1", amount=amount, currency="EUR", idempotency_key=key)
    )


def attempt(
    gateway: SandboxGateway, payment_id: str, key: str, amount: int = 4500
) -> PaymentAttempt:
    return run(
        gateway.retry_payment(
            payment_id=payment_id, amount=amount, currency="USD", idempotency_key=key
        )
    )


def refused(call: Callable[[], object], code: str) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        call()
    assert caught.value.permanent
    assert caught.value.code == code
    assert caught.value.gateway == "sandbox"
    return caught.value


# ------------------------------------------------------------------ payment retries


def test_an_approved_retry_captures_the_amount_on_the_cards_network() -> None:
    gateway = SandboxGateway()
    gateway.add_payment("pay_9", currency="USD", card="tok_ok", network="mastercard")
    result = attempt(gateway, "pay_9", "a1")
    assert result == PaymentAttempt(outcome="approved", decline_code=None, network="mastercard")
    capture = run(gateway.lookup_capture("pay_9"))
    assert (capture.amount, capture.currency, capture.refunded) == (4500, "USD", 0)


@pytest.mark.parametrize(
    ("token", "code", "category"),
    [
        ("tok_insufficient_funds", "insufficient_funds", "soft"),
        ("tok_processing_error", "processing_error", "soft"),
        ("tok_do_not_honor", "do_not_honor", "soft"),
        ("tok_stolen", "stolen_card", "hard"),
        ("tok_lost", "lost_card", "hard"),
        ("tok_fraudulent", "fraudulent", "hard"),
        ("tok_expired", "expired_card", "hard"),
    ],
)
def test_a_declining_token_declines_every_attempt_with_its_code(
    token: str, code: str, category: str
) -> None:
    gateway = SandboxGateway()
    gateway.add_payment("pay_9", currency="USD", card=token)
    for key in ("a1", "a2", "a3"):
        result = attempt(gateway, "pay_9", key)
        assert (result.outcome, result.decline_code, result.network) == ("declined", code, "visa")
        assert gateway.decline_category(result.decline_code) == category
    refused(lambda: run(gateway.lookup_capture("pay_9")), "payment_not_captured")


@pytest.mark.parametrize(
    ("token", "options", "declines"),
    [
        ("tok_flaky", {}, 2),
        ("tok_flaky", {"flaky_declines": 4}, 4),
        ("tok_flaky", {"flaky_declines": 0}, 0),
        ("tok_flaky_3", {"flaky_declines": 1}, 3),
    ],
)
def test_a_flaky_card_soft_declines_its_first_attempts_then_approves(
    token: str, options: dict[str, Any], declines: int
) -> None:
    gateway = SandboxGateway(**options)
    gateway.add_payment("pay_9", currency="USD", card=token)
    outcomes = [attempt(gateway, "pay_9", f"a{n}") for n in range(declines + 2)]
    for declined in outcomes[:declines]:
        assert declined.outcome == "declined"
        assert declined.decline_code is not None
        assert gateway.decline_category(declined.decline_code) == "soft"
    assert [o.outcome for o in outcomes[declines:]] == ["approved", "approved"]


def test_an_attempt_repeated_with_its_key_answers_the_first_outcome_and_is_not_counted() -> None:
    gateway = SandboxGateway()
    gateway.add_payment("pay_9", currency="USD", card="tok_flaky")
    first = attempt(gateway, "pay_9", "a1")
    assert first.outcome == "declined"
    assert attempt(gateway, "pay_9", "a1") == first
    assert attempt(gateway, "pay_9", "a1") == first
    # Only the second distinct attempt: still within the two declines.
    assert attempt(gateway, "pay_9", "a2").outcome == "declined"
    assert attempt(gateway, "pay_9", "a3").outcome == "approved"
    # An approved attempt repeated does not capture twice.
    assert attempt(gateway, "pay_9", "a3").outcome == "approved"
    assert run(gateway.lookup_capture("pay_9")).amount == 4500


def test_an_attempt_key_reused_for_another_amount_is_refused() -> None:
    gateway = SandboxGateway()
    gateway.add_payment("pay_9", currency="USD", card="tok_ok")
    attempt(gateway, "pay_9", "a1", amount=4500)
    refused(lambda: attempt(gateway, "pay_9", "a1", amount=4600), "idempotency_error")


def test_a_new_card_replaces_the_old_one_and_its_attempts_count_from_zero() -> None:
    gateway = SandboxGateway()
    gateway.add_payment("pay_9", currency="USD", card="tok_stolen")
    assert attempt(gateway, "pay_9", "a1").decline_code == "stolen_card"
    gateway.update_card("pay_9", card="tok_flaky_1", network="amex")
    declined = attempt(gateway, "pay_9", "a2")
    assert (declined.outcome, declined.network) == ("declined", "amex")
    assert attempt(gateway, "pay_9", "a3").outcome == "approved"


def test_a_payment_never_added_can_be_retried_when_its_id_ends_in_a_token() -> None:
    gateway = SandboxGateway()
    assert attempt(gateway, "pay_42_tok_stolen", "a1").decline_code == "stolen_card"
    assert attempt(gateway, "pay_43_tok_flaky_1", "a1").outcome == "declined"
    assert attempt(gateway, "pay_43_tok_flaky_1", "a2").outcome == "approved"
    refused(lambda: attempt(gateway, "pay_44", "a1"), "resource_missing")
    refused(lambda: attempt(gateway, "pay_45_tok_nonsense", "a1"), "resource_missing")


def test_a_retry_in_another_currency_than_the_payments_is_refused() -> None:
    gateway = SandboxGateway()
    gateway.add_payment("pay_9", currency="EUR", card="tok_ok")
    refused(lambda: attempt(gateway, "pay_9", "a1"), "currency_mismatch")


def test_set_up_mistakes_are_told_at_once() -> None:
    gateway = SandboxGateway()
    with pytest.raises(ValueError, match="unknown sandbox card token 'tok_gold'"):
        gateway.add_payment("pay_1", currency="EUR", card="tok_gold")
    gateway.add_payment("pay_1", currency="EUR")
    with pytest.raises(ValueError, match="already exists"):
        gateway.add_payment("pay_1", currency="EUR")
    with pytest.raises(ValueError, match="unknown sandbox card token"):
        gateway.update_card("pay_1", card="visa")
    with pytest.raises(ValueError, match="whole minor units"):
        attempt(gateway, "pay_1", "a1", amount=0)


# ------------------------------------------------------------------ refunds


def test_an_ordinary_refund_succeeds_and_counts_against_the_capture() -> None:
    gateway = captured()
    result = refund(gateway, 1250)
    assert result.status == "succeeded"
    assert result.failure_reason is None
    assert run(gateway.refund_status(result.gateway_refund_id)) == result
    capture = run(gateway.lookup_capture("pay_1"))
    assert (capture.amount, capture.refunded, capture.currency) == (10_000, 1250, "EUR")


def test_a_refund_ending_in_13_times_out_yet_is_made() -> None:
    gateway = captured()
    with pytest.raises(GatewayTimeout) as caught:
        refund(gateway, 1213, key="k-timeout")
    assert caught.value.operation == "refund"
    assert caught.value.idempotency_key == "k-timeout"
    # A timeout is not a refusal: code catching GatewayError must not take it for one.
    assert not isinstance(caught.value, GatewayError)
    found = run(gateway.find_refund(payment_id="pay_1", idempotency_key="k-timeout"))
    assert found is not None
    assert found.status == "succeeded"
    assert run(gateway.refund_status(found.gateway_refund_id)).status == "succeeded"
    assert run(gateway.lookup_capture("pay_1")).refunded == 1213


def test_a_refund_the_gateway_never_received_is_not_found() -> None:
    gateway = captured()
    refund(gateway, 500, key="k1")
    assert run(gateway.find_refund(payment_id="pay_1", idempotency_key="k2")) is None


def test_a_refund_ending_in_42_is_pending_until_asked_about() -> None:
    gateway = captured()
    result = refund(gateway, 2042)
    assert result.status == "pending"
    assert run(gateway.refund_status(result.gateway_refund_id)).status == "succeeded"
    assert run(gateway.lookup_capture("pay_1")).refunded == 2042


@pytest.mark.parametrize("reported_ok", [0, 1, 3])
def test_a_refund_ending_in_66_fails_after_it_was_reported_succeeded(reported_ok: int) -> None:
    gateway = captured(late_failure_after=reported_ok)
    result = refund(gateway, 3066)
    assert result.status == "succeeded"
    assert run(gateway.lookup_capture("pay_1")).refunded == 3066
    for _ in range(reported_ok):
        assert run(gateway.refund_status(result.gateway_refund_id)).status == "succeeded"
    late = run(gateway.refund_status(result.gateway_refund_id))
    assert late.status == "failed"
    assert late.failure_reason
    assert run(gateway.refund_status(result.gateway_refund_id)).status == "failed"
    # The failed refund's amount is the capture's again.
    assert run(gateway.lookup_capture("pay_1")).refunded == 0


def test_the_default_late_failure_reports_success_once_then_failure() -> None:
    gateway = captured()
    result = refund(gateway, 66)
    assert run(gateway.refund_status(result.gateway_refund_id)).status == "succeeded"
    assert run(gateway.refund_status(result.gateway_refund_id)).status == "failed"


def test_a_refund_ending_in_99_fails_at_once_and_takes_nothing() -> None:
    gateway = captured(amount=1000)
    result = refund(gateway, 999)
    assert result.status == "failed"
    assert result.failure_reason
    assert run(gateway.lookup_capture("pay_1")).refunded == 0
    assert refund(gateway, 1000, key="k2").status == "succeeded"


def test_a_refund_above_what_is_left_of_the_capture_is_refused() -> None:
    gateway = captured(amount=1000)
    refund(gateway, 600, key="k1")
    refused(lambda: refund(gateway, 401, key="k2"), "amount_too_large")
    assert refund(gateway, 400, key="k3").status == "succeeded"
    refused(lambda: refund(gateway, 1, key="k4"), "amount_too_large")
    assert run(gateway.lookup_capture("pay_1")).refunded == 1000


def test_a_refund_repeated_with_its_key_is_the_same_refund() -> None:
    gateway = captured(amount=1000)
    first = refund(gateway, 700, key="k1")
    assert refund(gateway, 700, key="k1") == first
    assert run(gateway.lookup_capture("pay_1")).refunded == 700
    refused(lambda: refund(gateway, 300, key="k1"), "idempotency_error")


def test_refunds_of_unknown_uncaptured_or_other_currency_payments_are_refused() -> None:
    gateway = captured()
    gateway.add_payment("pay_failed", currency="EUR")

    def other_currency() -> object:
        return run(
            gateway.refund(payment_id="pay_1", amount=100, currency="USD", idempotency_key="k")
        )

    def unknown() -> object:
        return run(
            gateway.refund(payment_id="pay_x", amount=100, currency="EUR", idempotency_key="k")
        )

    def uncaptured() -> object:
        return run(
            gateway.refund(payment_id="pay_failed", amount=100, currency="EUR", idempotency_key="k")
        )

    refused(other_currency, "currency_mismatch")
    refused(unknown, "resource_missing")
    refused(uncaptured, "amount_too_large")
    refused(lambda: run(gateway.refund_status("re_nope")), "resource_missing")
    with pytest.raises(ValueError, match="whole minor units"):
        refund(gateway, 0)


def test_instances_share_nothing() -> None:
    one = captured(amount=1000)
    two = captured(amount=1000)
    refund(one, 1000)
    assert run(two.lookup_capture("pay_1")).refunded == 0


# ------------------------------------------------------------------ threads


@pytest.fixture
def eager_thread_switches() -> Iterator[None]:
    # Switch threads as often as the interpreter can, so that an unguarded read-then-write
    # of the gateway's state is interleaved and shows.
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


@pytest.mark.usefixtures("eager_thread_switches")
def test_concurrent_refunds_from_many_threads_never_pass_the_capture() -> None:
    gateway = captured(amount=5_000)
    outcomes: list[str] = []
    record = threading.Lock()
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        start.wait()
        for i in range(20):
            try:
                # 100 minor units each: no magic ending; 160 tries for 50 slots.
                refund(gateway, 100, key=f"t{n}-{i}")
                outcome = "ok"
            except GatewayError as exc:
                outcome = exc.code or "?"
            with record:
                outcomes.append(outcome)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("ok") == 50
    assert outcomes.count("amount_too_large") == 110
    assert run(gateway.lookup_capture("pay_1")).refunded == 5_000


@pytest.mark.usefixtures("eager_thread_switches")
def test_one_key_sent_from_many_threads_makes_one_refund() -> None:
    gateway = captured(amount=5_000)
    seen: list[str] = []
    record = threading.Lock()
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        result = refund(gateway, 700, key="same")
        with record:
            seen.append(result.gateway_refund_id)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 8
    assert len(set(seen)) == 1
    assert run(gateway.lookup_capture("pay_1")).refunded == 700


def test_activity_reports_a_days_captures_approved_retries_and_refunds() -> None:
    clock = iter(
        [
            datetime(2026, 12, 1, 23, 59, tzinfo=UTC),  # pay_1 captured
            datetime(2026, 12, 2, 0, 1, tzinfo=UTC),  # refund k1
            datetime(2026, 12, 2, 8, 0, tzinfo=UTC),  # refund k2 (fails: ends in 99)
            datetime(2026, 12, 2, 9, 0, tzinfo=UTC),  # the retry of pay_2 approved
        ]
    )
    gateway = SandboxGateway(clock=lambda: next(clock))
    gateway.add_payment("pay_1", currency="EUR", captured=10_000)
    gateway.add_payment("pay_2", currency="USD", card="tok_ok")
    refund(gateway, 1250, key="k1")
    refund(gateway, 599, key="k2")
    approved = attempt(gateway, "pay_2", "a1")
    assert approved.outcome == "approved"

    first = run(gateway.activity(date(2026, 12, 1)))
    second = run(gateway.activity(date(2026, 12, 2)))
    assert first == [Movement("in", "pay_1", 10_000, "EUR")]
    assert sorted(second, key=lambda m: m.reference) == [
        Movement("out", "k1", 1250, "EUR"),
        Movement("out", "k2", 599, "EUR", failed=True),
        Movement("in", "pay_2", 4500, "USD"),
    ]
