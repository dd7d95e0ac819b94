"""Fifty partial refunds at once against one payment: never more than was captured.

Each request runs in its own thread, connection and transaction, released together by a
barrier. PostgreSQL serializes them on the payment row; SQLite on its one writer.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from tests.billing.support import capture, held_by_refunds, request
from tidings.billing import repository
from tidings.billing.errors import BillingError
from tidings.db.engine import create_db_engine

REQUESTS = 50
CAPTURED = 10_000
EACH = 700  # 14 fit (9 800); then only 200 is left, less than any request


@pytest.fixture
def wide_engine(db_url: str) -> Iterator[Engine]:
    """Enough pooled connections for every thread to hold its own at the barrier."""
    engine = create_db_engine(db_url, pool_size=REQUESTS)
    yield engine
    engine.dispose()


def test_simultaneous_partial_refunds_never_exceed_the_capture(
    engine: Engine, wide_engine: Engine
) -> None:
    with engine.begin() as conn:
        capture(conn, amount=CAPTURED)
    barrier = threading.Barrier(REQUESTS, timeout=30)
    outcomes: list[str | BillingError] = []
    lock = threading.Lock()

    def attempt(n: int) -> None:
        with wide_engine.connect() as conn:
            barrier.wait()
            try:
                with conn.begin():
                    refund, created = request(
                        conn, amount=EACH, idempotency_key=f"k{n}", requested_by=f"support:{n}"
                    )
                assert created
                outcome: str | BillingError = refund.id
            except BillingError as error:
                outcome = error
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(REQUESTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert len(outcomes) == REQUESTS

    accepted = [o for o in outcomes if isinstance(o, str)]
    errors = [o for o in outcomes if isinstance(o, BillingError)]
    assert len(accepted) == CAPTURED // EACH
    assert len(errors) == REQUESTS - CAPTURED // EACH
    left = CAPTURED - len(accepted) * EACH
    for error in errors:
        assert error.code == "refund_exceeds_captured"
        assert f"only {left} EUR" in error.detail
    with engine.connect() as conn:
        payment = repository.get_payment(conn, "pay_1")
        held = held_by_refunds(conn, "pay_1")
    assert payment is not None
    assert payment.refunded == held == len(accepted) * EACH <= CAPTURED


def test_simultaneous_retries_with_one_key_make_one_refund(
    engine: Engine, wide_engine: Engine
) -> None:
    with engine.begin() as conn:
        capture(conn, amount=CAPTURED)
    retries = 10
    barrier = threading.Barrier(retries, timeout=30)
    answers: list[tuple[str, bool]] = []
    lock = threading.Lock()

    def attempt() -> None:
        with wide_engine.connect() as conn:
            barrier.wait()
            with conn.begin():
                refund, created = request(conn, amount=EACH, idempotency_key="same")
        with lock:
            answers.append((refund.id, created))

    threads = [threading.Thread(target=attempt) for _ in range(retries)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(answers) == retries
    assert len({refund_id for refund_id, _ in answers}) == 1
    assert sum(created for _, created in answers) == 1
    with engine.connect() as conn:
        payment = repository.get_payment(conn, "pay_1")
    assert payment is not None
    assert payment.refunded == EACH
