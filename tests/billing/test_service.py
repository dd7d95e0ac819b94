"""Refund moves against a real database: reservations, approvals, postings, events, audit."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Connection, Engine, select

from tests.billing.support import LATER, NOW, capture, emitter, held_by_refunds, request
from tidings.audit.chain import verify
from tidings.billing import ledger, repository, service
from tidings.billing.errors import BillingError
from tidings.billing.repository import Refund
from tidings.db.schema import audit_log, events, ledger_transactions


def refunded(engine: Engine, payment_id: str = "pay_1") -> int:
    with engine.connect() as conn:
        payment = repository.get_payment(conn, payment_id)
    assert payment is not None
    return payment.refunded


def refused(engine: Engine, move: Any, **kwargs: Any) -> BillingError:
    """Run a move in its own transaction, expect a BillingError, and let it roll back."""
    with pytest.raises(BillingError) as raised, engine.begin() as conn:
        move(conn, **kwargs)
    return raised.value


def to_submitted(conn: Connection, refund: Refund) -> Refund:
    return service.mark_submitted(
        conn, refund_id=refund.id, gateway_refund_id="gw_re_1", actor="worker", now=NOW
    )


def test_a_capture_is_recorded_once_and_posted(engine: Engine) -> None:
    with engine.begin() as conn:
        first = capture(conn)
        again = capture(conn)
    assert again == first
    assert (first.captured, first.refunded) == (10_000, 0)
    error = refused(engine, capture, amount=9_000)
    assert error.code == "payment_exists"
    with engine.connect() as conn:
        balance = ledger.trial_balance(conn)
    assert balance == {
        ("lumen:EUR:gateway_clearing", "EUR"): 10_000,
        ("lumen:EUR:revenue", "EUR"): -10_000,
    }


def test_the_same_key_returns_the_first_refund_and_another_body_is_a_conflict(
    engine: Engine,
) -> None:
    with engine.begin() as conn:
        capture(conn)
        first, created = request(conn)
        again, created_again = request(conn)
    assert (created, created_again) == (True, False)
    assert again.id == first.id
    assert refunded(engine) == 1250
    error = refused(engine, request, amount=1300)
    assert error.code == "idempotency_conflict"
    assert "amount" in error.detail
    assert error.field == "idempotency_key"
    error = refused(engine, request, reason_code="duplicate", lines=None)
    assert error.code == "idempotency_conflict"
    assert "reason_code" in error.detail
    assert "lines" in error.detail
    # The key belongs to its requester: someone else's same key is a new request.
    with engine.begin() as conn:
        other, created = request(conn, requested_by="support:bob")
    assert created
    assert other.id != first.id
    assert refunded(engine) == 2500


def test_full_refunds_what_is_left_and_a_retry_of_full_is_the_same_refund(engine: Engine) -> None:
    with engine.begin() as conn:
        capture(conn)
        request(conn, amount=3000, idempotency_key="part")
        full, _ = request(conn, amount="full", idempotency_key="rest")
        again, created = request(conn, amount="full", idempotency_key="rest")
    assert full.amount == 7000
    assert (again.id, created) == (full.id, False)
    assert refunded(engine) == 10_000
    error = refused(engine, request, amount="full", idempotency_key="more")
    assert error.code == "refund_exceeds_captured"


def test_a_refund_in_another_currency_is_refused(engine: Engine) -> None:
    with engine.begin() as conn:
        capture(conn)
    error = refused(engine, request, currency="USD")
    assert (error.code, error.field) == ("currency_mismatch", "currency")
    assert "EUR" in error.detail
    assert refunded(engine) == 0


def test_over_refund_is_refused_saying_what_is_left(engine: Engine) -> None:
    with engine.begin() as conn:
        capture(conn)
        request(conn, amount=9_000)
    error = refused(engine, request, amount=1_001, idempotency_key="key-2")
    assert error.code == "refund_exceeds_captured"
    assert "only 1000 EUR" in error.detail
    assert refunded(engine) == 9_000


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"reason_code": "changed_mind"}, "invalid_reason_code"),
        ({"amount": 0}, "invalid_amount"),
        ({"amount": 12.5}, "invalid_amount"),
        ({"idempotency_key": ""}, "idempotency_key_required"),
        ({"payment_id": "pay_missing"}, "payment_not_found"),
    ],
)
def test_bad_requests_are_refused_with_a_code(
    engine: Engine, overrides: dict[str, Any], code: str
) -> None:
    with engine.begin() as conn:
        capture(conn)
    assert refused(engine, request, **overrides).code == code


def test_two_distinct_approvers_other_than_the_requester(engine: Engine) -> None:
    with engine.begin() as conn:
        capture(conn)
        refund, _ = request(conn, approvals_needed=2)
    assert refund.status == "pending_approval"
    approve = service.approve
    error = refused(engine, approve, refund_id=refund.id, actor="support:alice", now=NOW)
    assert error.code == "self_approval"
    with engine.begin() as conn:
        once = approve(conn, refund_id=refund.id, actor="lead:bob", now=NOW, note="photo checked")
    assert once.status == "pending_approval"
    error = refused(engine, approve, refund_id=refund.id, actor="lead:bob", now=NOW)
    assert error.code == "duplicate_approval"
    with engine.begin() as conn:
        twice = approve(conn, refund_id=refund.id, actor="finance:carol", now=LATER)
    assert twice.status == "approved"
    assert [a["actor"] for a in twice.approvals] == ["lead:bob", "finance:carol"]
    error = refused(engine, approve, refund_id=refund.id, actor="finance:dan", now=LATER)
    assert error.code == "illegal_transition"


def test_reject_gives_the_amount_back(engine: Engine) -> None:
    with engine.begin() as conn:
        capture(conn)
        refund, _ = request(conn, amount=8_000, approvals_needed=1)
    assert refunded(engine) == 8_000
    error = refused(engine, request, amount=5_000, idempotency_key="key-2")
    assert error.code == "refund_exceeds_captured"
    error = refused(
        engine, service.reject, refund_id=refund.id, actor="lead:bob", reason=" ", now=NOW
    )
    assert error.code == "reason_required"
    with engine.begin() as conn:
        rejected = service.reject(
            conn, refund_id=refund.id, actor="lead:bob", reason="item not returned", now=NOW
        )
        assert held_by_refunds(conn, "pay_1") == 0
    assert (rejected.status, rejected.decided_reason) == ("rejected", "item not returned")
    assert refunded(engine) == 0
    with engine.begin() as conn:
        request(conn, amount=5_000, idempotency_key="key-2")
    assert refunded(engine) == 5_000


def test_cancel_before_submission_only(engine: Engine) -> None:
    with engine.begin() as conn:
        capture(conn)
        early, _ = request(conn, amount=1000, idempotency_key="a")
        late, _ = request(conn, amount=2000, idempotency_key="b")
        to_submitted(conn, late)
        canceled = service.cancel(conn, refund_id=early.id, actor="support:alice", now=NOW)
    assert canceled.status == "canceled"
    error = refused(engine, service.cancel, refund_id=late.id, actor="support:alice", now=NOW)
    assert error.code == "illegal_transition"
    assert "submitted" in error.detail
    assert refunded(engine) == 2000


def test_illegal_moves_change_nothing(engine: Engine) -> None:
    with engine.begin() as conn:
        capture(conn)
        refund, _ = request(conn, approvals_needed=1)
    gateway = {"refund_id": refund.id, "actor": "worker", "now": NOW, "emitter": emitter()}
    assert refused(engine, service.mark_authorized, **gateway).code == "illegal_transition"
    assert refused(engine, service.mark_succeeded, **gateway).code == "illegal_transition"
    error = refused(
        engine,
        service.mark_submitted,
        refund_id=refund.id,
        gateway_refund_id="g",
        actor="w",
        now=NOW,
    )
    assert error.code == "illegal_transition"
    error = refused(engine, service.approve, refund_id="re_missing", actor="lead:bob", now=NOW)
    assert error.code == "refund_not_found"
    with engine.connect() as conn:
        assert repository.get_refund(conn, refund.id) == refund
        assert conn.execute(select(ledger_transactions.c.kind)).scalars().all() == ["capture"]


def test_success_then_late_failure_reverses_the_refund_in_the_ledger(engine: Engine) -> None:
    with engine.begin() as conn:
        capture(conn)
        refund, _ = request(conn)
        to_submitted(conn, refund)
        gateway = {"refund_id": refund.id, "actor": "worker", "emitter": emitter()}
        service.mark_authorized(conn, now=NOW, **gateway)
        service.mark_succeeded(conn, now=NOW, **gateway)
        succeeded = ledger.trial_balance(conn)
        reversed_ = service.mark_failed(conn, now=LATER, reason="card closed", **gateway)
        balance = ledger.trial_balance(conn)
        kinds = conn.execute(select(ledger_transactions.c.kind)).scalars().all()
        emitted = conn.execute(select(events.c.source, events.c.type, events.c.data)).all()
    assert succeeded[("lumen:EUR:refunds", "EUR")] == 1250
    assert succeeded[("lumen:EUR:gateway_clearing", "EUR")] == 10_000 - 1250
    assert reversed_.status == "reversed"
    assert reversed_.failure_reason == "card closed"
    assert balance[("lumen:EUR:refunds", "EUR")] == 0
    assert balance[("lumen:EUR:customer_refunds_payable", "EUR")] == 0
    assert balance[("lumen:EUR:gateway_clearing", "EUR")] == 10_000
    assert ledger.is_balanced(balance)
    assert sorted(kinds) == [
        "capture",
        "refund_authorized",
        "refund_reversed",
        "refund_succeeded",
    ]
    assert refunded(engine) == 0
    assert sorted((source, kind) for source, kind, _ in emitted) == [
        ("tidings:billing", "refund.authorized"),
        ("tidings:billing", "refund.failed"),
        ("tidings:billing", "refund.succeeded"),
    ]
    authorized = next(data for _, kind, data in emitted if kind == "refund.authorized")
    assert authorized["refund_id"] == refund.id
    assert (authorized["order_id"], authorized["payment_id"]) == ("1042", "pay_1")
    assert (authorized["amount"], authorized["currency"], authorized["method"]) == (
        1250,
        "EUR",
        "card",
    )
    assert authorized["reason_code"] == "damaged"
    assert authorized["authorized_at"].startswith("2026-11-21T10:00:00")


@pytest.mark.parametrize(
    ("authorize", "kinds"), [(False, []), (True, ["refund_authorized", "refund_released"])]
)
def test_failure_before_success_undoes_only_what_was_posted(
    engine: Engine, authorize: bool, kinds: list[str]
) -> None:
    with engine.begin() as conn:
        capture(conn)
        refund, _ = request(conn)
        to_submitted(conn, refund)
        gateway = {"refund_id": refund.id, "actor": "worker", "now": NOW, "emitter": emitter()}
        if authorize:
            service.mark_authorized(conn, **gateway)
        failed = service.mark_failed(conn, reason="insufficient balance", **gateway)
        posted = conn.execute(
            select(ledger_transactions.c.kind).where(ledger_transactions.c.reference == refund.id)
        )
        assert sorted(posted.scalars()) == sorted(kinds)
        balance = ledger.trial_balance(conn)
    assert failed.status == "failed"
    assert refunded(engine) == 0
    assert balance.get(("lumen:EUR:refunds", "EUR"), 0) == 0
    assert balance[("lumen:EUR:gateway_clearing", "EUR")] == 10_000
    assert (
        refused(engine, service.mark_failed, reason="again", **gateway).code == "illegal_transition"
    )


def test_every_move_is_in_the_audit_chain_with_who_and_why(engine: Engine) -> None:
    with engine.begin() as conn:
        capture(conn)
        refund, _ = request(conn, approvals_needed=1)
        service.approve(conn, refund_id=refund.id, actor="lead:bob", now=NOW, note="receipt seen")
        to_submitted(conn, refund)
        service.mark_failed(
            conn, refund_id=refund.id, actor="worker", reason="timeout", now=NOW, emitter=emitter()
        )
    with engine.connect() as conn:
        rows = conn.execute(
            select(audit_log.c.actor, audit_log.c.action, audit_log.c.detail)
            .where(audit_log.c.subject_id.in_(["pay_1", refund.id]))
            .order_by(audit_log.c.seq)
        ).all()
        chain = verify(conn)
    assert [(actor, action) for actor, action, _ in rows] == [
        ("gateway:sandbox", "payment.captured"),
        ("support:alice", "refund.requested"),
        ("lead:bob", "refund.approved"),
        ("worker", "refund.submitted"),
        ("worker", "refund.failed"),
    ]
    assert "the lamp shade arrived cracked" in rows[1][2]
    assert "receipt seen" in rows[2][2]
    assert "timeout" in rows[4][2]
    assert chain.ok
