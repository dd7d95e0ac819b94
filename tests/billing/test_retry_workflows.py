"""Payment retry workflows on the database: opened from failures, attempted through the
sandbox gateway, recovered, exhausted into their final action, or stopped; the books
balance at every step and the customer's events are emitted once."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from tests.billing.support import NOW, emitter
from tidings.audit.chain import verify
from tidings.billing import ledger, payment_feed, repository, retry_runner, retry_service
from tidings.billing import retry_repository as repo
from tidings.billing.errors import BillingError
from tidings.billing.gateways.base import Gateway, GatewayTimeout, PaymentAttempt
from tidings.billing.gateways.sandbox import SandboxGateway
from tidings.billing.retry_policy import RetryPolicy
from tidings.billing.retry_repository import Workflow
from tidings.billing.retry_service import Failure, RetryContext
from tidings.db.schema import billing_inbox, events
from tidings.events.envelope import CanonicalEvent
from tidings.intake.service import ingest

HOUR = 3600
FAST = RetryPolicy(intervals=(HOUR,), max_attempts=3, max_days=10, preferred_hour=None)


def context() -> RetryContext:
    return RetryContext(
        store="lumen", emitter=emitter(), update_payment_url="https://lumen.example/pay/{order_id}"
    )


def failure(
    payment_id: str = "pay_9", decline_code: str | None = "insufficient_funds", **kw: Any
) -> Failure:
    values: dict[str, Any] = {
        "payment_id": payment_id,
        "order_id": "1043",
        "customer_id": "cus_9",
        "gateway": "sandbox",
        "amount": 4500,
        "currency": "USD",
        "decline_code": decline_code,
        "network": "visa",
        "at": NOW,
    }
    return Failure(**(values | kw))


def use_policy(engine: Engine, policy: RetryPolicy) -> None:
    with engine.begin() as conn:
        retry_service.put_policy(
            conn, name="default", values=policy.to_json(), actor="finance:bob", now=NOW
        )


def open_one(engine: Engine, f: Failure | None = None) -> Workflow:
    with engine.begin() as conn:
        workflow, created = retry_service.open_workflow(
            conn, context(), f or failure(), now=NOW, actor="billing"
        )
    assert created
    return workflow


def stored(engine: Engine, workflow_id: str) -> Workflow:
    with engine.connect() as conn:
        workflow = repo.get_workflow(conn, workflow_id)
    assert workflow is not None
    return workflow


def balances(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        balance = ledger.trial_balance(conn)
    assert ledger.is_balanced(balance)
    return {account.rsplit(":", 1)[1]: amount for (account, _), amount in balance.items()}


def emitted(engine: Engine) -> list[tuple[str, dict[str, Any]]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(events.c.type, events.c.data)
            .where(events.c.source == "tidings:billing")
            .order_by(events.c.time, events.c.id)
        ).all()
    return [(row.type, dict(row.data)) for row in rows]


def sandbox_with(card: str, payment_id: str = "pay_9") -> SandboxGateway:
    gateway = SandboxGateway()
    gateway.add_payment(payment_id, currency="USD", card=card, network="visa")
    return gateway


def run(engine: Engine, gateway: Gateway, at: datetime, **kw: Any) -> int:
    return retry_runner.run_due(engine, context(), lambda w, n: gateway, now=at, **kw)


def test_a_soft_decline_opens_a_workflow_that_owes_the_amount_and_tells_the_customer(
    engine: Engine,
) -> None:
    use_policy(engine, FAST)
    workflow = open_one(engine)
    assert workflow.status == "retry_scheduled"
    assert workflow.next_attempt_at == NOW + timedelta(hours=1)
    assert balances(engine) == {"accounts_receivable": 4500, "revenue": -4500}
    [(kind, data)] = emitted(engine)
    assert kind == "payment.failed"
    assert data["decline_category"] == "soft"
    assert data["update_payment_url"] == "https://lumen.example/pay/1043"
    assert datetime.fromisoformat(data["next_attempt_at"]) == NOW + timedelta(hours=1)
    with engine.connect() as conn:
        [first] = repo.attempts_of(conn, workflow.id)
    assert (first.number, first.outcome, first.category) == (0, "declined", "soft")


def test_a_repeated_failure_report_joins_the_open_workflow(engine: Engine) -> None:
    workflow = open_one(engine)
    with engine.begin() as conn:
        again, created = retry_service.open_workflow(
            conn, context(), failure(), now=NOW, actor="billing"
        )
    assert (again.id, created) == (workflow.id, False)
    assert balances(engine)["accounts_receivable"] == 4500
    assert len(emitted(engine)) == 1


def test_a_hard_decline_goes_straight_to_the_final_action(engine: Engine) -> None:
    workflow = open_one(engine, failure(decline_code="stolen_card"))
    assert workflow.status == "exhausted"
    assert workflow.final_action == "cancel_order"
    assert workflow.next_attempt_at is None
    assert "stolen_card" in (workflow.closed_reason or "")
    # The order is canceled: the sale and what was owed are both undone.
    assert balances(engine) == {"accounts_receivable": 0, "revenue": 0}
    kinds = [kind for kind, _ in emitted(engine)]
    assert kinds == ["payment.failed", "order.canceled", "payment.retries_exhausted"]
    failed = emitted(engine)[0][1]
    assert failed["decline_category"] == "hard"
    assert failed.get("next_attempt_at") is None


def test_soft_declines_then_an_approval_recover_the_payment(engine: Engine) -> None:
    use_policy(engine, FAST)
    gateway = sandbox_with("tok_flaky_2")
    workflow = open_one(engine)
    at = NOW
    for _ in range(3):
        at = stored(engine, workflow.id).next_attempt_at or at
        assert run(engine, gateway, at) == 1
    done = stored(engine, workflow.id)
    assert done.status == "recovered"
    assert (done.attempts, done.recovered_amount) == (3, 4500)
    with engine.connect() as conn:
        history = repo.attempts_of(conn, workflow.id)
        payment = repository.get_payment(conn, "pay_9")
    assert [(a.number, a.outcome) for a in history] == [
        (0, "declined"),
        (1, "declined"),
        (2, "declined"),
        (3, "approved"),
    ]
    # Each attempt carried its own key.
    assert len({a.idempotency_key for a in history}) == 4
    # The recovered payment can be refunded like any capture.
    assert payment is not None
    assert payment.captured == 4500
    assert balances(engine) == {
        "accounts_receivable": 0,
        "gateway_clearing": 4500,
        "revenue": -4500,
    }
    kinds = [kind for kind, _ in emitted(engine)]
    assert kinds == [
        "payment.failed",
        "payment.retry_scheduled",
        "payment.retry_scheduled",
        "payment.recovered",
    ]
    scheduled = [data for kind, data in emitted(engine) if kind == "payment.retry_scheduled"]
    assert [d["attempts_left"] for d in scheduled] == [2, 1]
    with engine.connect() as conn:
        assert verify(conn).ok


def test_nothing_is_attempted_before_it_is_due(engine: Engine) -> None:
    use_policy(engine, FAST)
    workflow = open_one(engine)
    assert run(engine, sandbox_with("tok_ok"), NOW + timedelta(minutes=59)) == 0
    assert stored(engine, workflow.id).status == "retry_scheduled"


def test_a_spent_policy_marks_the_debt_uncollectible(engine: Engine) -> None:
    use_policy(
        engine,
        RetryPolicy(
            intervals=(HOUR,),
            max_attempts=2,
            preferred_hour=None,
            final_action="mark_uncollectible",
        ),
    )
    gateway = sandbox_with("tok_insufficient_funds")
    workflow = open_one(engine)
    for _ in range(2):
        at = stored(engine, workflow.id).next_attempt_at
        assert at is not None
        run(engine, gateway, at)
    done = stored(engine, workflow.id)
    assert (done.status, done.final_action, done.attempts) == ("exhausted", "mark_uncollectible", 2)
    assert balances(engine) == {"accounts_receivable": 0, "bad_debt": 4500, "revenue": -4500}
    kinds = [kind for kind, _ in emitted(engine)]
    assert kinds == ["payment.failed", "payment.retry_scheduled", "payment.retries_exhausted"]
    assert emitted(engine)[-1][1]["final_action"] == "mark_uncollectible"


def test_repeated_do_not_honor_turns_hard(engine: Engine) -> None:
    use_policy(
        engine,
        RetryPolicy(
            intervals=(HOUR,), max_attempts=8, preferred_hour=None, final_action="escalate"
        ),
    )
    gateway = sandbox_with("tok_do_not_honor")
    workflow = open_one(engine, failure(decline_code="do_not_honor"))
    while stored(engine, workflow.id).status == "retry_scheduled":
        run(engine, gateway, stored(engine, workflow.id).next_attempt_at or NOW)
    done = stored(engine, workflow.id)
    # Attempt 0 and 1 are soft do_not_honor; the third in a row is hard (declines.py).
    assert (done.status, done.attempts, done.final_action) == ("exhausted", 2, "escalate")
    # Escalated: the amount is still owed, for the person who takes it over.
    assert balances(engine)["accounts_receivable"] == 4500


class TimesOutOnce(SandboxGateway):
    """The first charge is made but its answer is lost; every request is counted."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: Counter[str] = Counter()

    async def retry_payment(
        self, *, payment_id: str, amount: int, currency: str, idempotency_key: str
    ) -> PaymentAttempt:
        self.requests[idempotency_key] += 1
        answer = await super().retry_payment(
            payment_id=payment_id, amount=amount, currency=currency, idempotency_key=idempotency_key
        )
        if sum(self.requests.values()) == 1:
            raise GatewayTimeout(
                "no answer", operation="retry_payment", idempotency_key=idempotency_key
            )
        return answer


def test_an_attempt_whose_answer_was_lost_is_asked_again_with_the_same_key(engine: Engine) -> None:
    use_policy(engine, FAST)
    gateway = TimesOutOnce()
    gateway.add_payment("pay_9", currency="USD", card="tok_ok", network="visa")
    workflow = open_one(engine)
    due = NOW + timedelta(hours=1)
    assert run(engine, gateway, due) == 1
    assert stored(engine, workflow.id).status == "retrying"
    # Not retaken while the claim is fresh ...
    assert run(engine, gateway, due + timedelta(minutes=1)) == 0
    # ... and once it is stale, the same attempt with the same key.
    assert run(engine, gateway, due + timedelta(minutes=6)) == 1
    assert stored(engine, workflow.id).status == "recovered"
    assert list(gateway.requests.values()) == [2]


def test_an_unconfigured_gateway_escalates_instead_of_canceling(engine: Engine) -> None:
    use_policy(engine, FAST)
    workflow = open_one(engine, failure(gateway="adyen"))
    retry_runner.run_due(engine, context(), lambda w, n: None, now=NOW + timedelta(hours=1))
    done = stored(engine, workflow.id)
    assert done.status == "exhausted"
    assert "gateway_not_configured" in (done.closed_reason or "")


def test_stopping_cancels_the_receivable_and_a_late_approval_still_counts(engine: Engine) -> None:
    use_policy(engine, FAST)
    workflow = open_one(engine)
    with engine.begin() as conn:
        retry_service.stop(
            conn,
            context(),
            workflow_id=workflow.id,
            reason="order canceled",
            now=NOW,
            actor="support:alice",
        )
    assert stored(engine, workflow.id).status == "canceled"
    assert balances(engine) == {"accounts_receivable": 0, "revenue": 0}
    # An attempt that was out when it stopped comes back approved: the money is real.
    with engine.begin() as conn:
        retry_service.record_attempt(
            conn,
            context(),
            workflow_id=workflow.id,
            number=1,
            outcome=retry_service.Outcome("approved", "sandbox"),
            now=NOW + timedelta(minutes=1),
            actor="billing",
        )
    assert stored(engine, workflow.id).status == "recovered"
    assert balances(engine) == {
        "accounts_receivable": 0,
        "gateway_clearing": 4500,
        "revenue": -4500,
    }


def test_retry_now_brings_the_attempt_forward_only_when_scheduled(engine: Engine) -> None:
    use_policy(engine, FAST)
    workflow = open_one(engine)
    later = NOW + timedelta(minutes=3)
    with engine.begin() as conn:
        moved = retry_service.retry_now(
            conn, workflow_id=workflow.id, now=later, actor="support:alice"
        )
    assert moved.next_attempt_at == later
    assert run(engine, sandbox_with("tok_ok"), later) == 1
    with engine.begin() as conn, pytest.raises(BillingError) as refused:
        retry_service.retry_now(conn, workflow_id=workflow.id, now=later, actor="support:alice")
    assert refused.value.code == "illegal_transition"


# --- the events billing acts on ------------------------------------------------------------


def event(
    event_type: str, event_id: str, data: dict[str, Any], source: str = "https://shop.example"
) -> CanonicalEvent:
    order_id = data.get("order_id")
    return CanonicalEvent(
        source=source,
        id=event_id,
        type=event_type,
        subject=f"order/{order_id}" if order_id else None,
        time=NOW,
        data=data,
    )


def post(engine: Engine, *batch: CanonicalEvent) -> None:
    e = emitter()
    with engine.begin() as conn:
        ingest(conn, list(batch), rules=e.rules, delivery=e.delivery, now=NOW, actor="shop")


FAILED_DATA = {
    "order_id": "1043",
    "payment_id": "pay_9",
    "amount": 4500,
    "currency": "USD",
    "gateway": "sandbox",
    "decline_code": "insufficient_funds",
    "network": "visa",
    "customer": {"id": "cus_9"},
}


def test_a_failed_payment_event_opens_one_workflow_however_often_it_is_applied(
    engine: Engine,
) -> None:
    post(engine, event("payment.failed", "pf-1", FAILED_DATA))
    assert payment_feed.apply_pending(engine, context(), now=NOW) == 1
    assert payment_feed.apply_pending(engine, context(), now=NOW) == 0
    with engine.connect() as conn:
        [workflow] = repo.list_workflows(conn)
        outcome = conn.execute(select(billing_inbox.c.outcome)).scalars().all()
    assert (workflow.customer_id, workflow.network, workflow.status) == (
        "cus_9",
        "visa",
        "retry_scheduled",
    )
    # Billing's own payment.failed (the customer's message) is not a new failure; an
    # applied event is marked with what came of it.
    assert len(outcome) == 1
    assert outcome[0].startswith("opened ")


def test_an_order_canceled_elsewhere_stops_its_retries(engine: Engine) -> None:
    post(engine, event("payment.failed", "pf-1", FAILED_DATA))
    payment_feed.apply_pending(engine, context(), now=NOW)
    post(engine, event("order.canceled", "oc-1", {"order_id": "1043", "reason": "customer asked"}))
    payment_feed.apply_pending(engine, context(), now=NOW)
    with engine.connect() as conn:
        [workflow] = repo.list_workflows(conn)
    assert workflow.status == "canceled"
    assert workflow.closed_reason == "the order was canceled"


def test_a_capture_recovers_an_open_workflow_and_records_other_payments(engine: Engine) -> None:
    post(engine, event("payment.failed", "pf-1", FAILED_DATA))
    payment_feed.apply_pending(engine, context(), now=NOW)
    captured = {
        k: FAILED_DATA[k] for k in ("order_id", "payment_id", "amount", "currency", "gateway")
    }
    other = captured | {"payment_id": "pay_10", "order_id": "1044", "amount": 9900}
    post(
        engine,
        event("payment.captured", "pc-1", captured),
        event("payment.captured", "pc-2", other),
    )
    assert payment_feed.apply_pending(engine, context(), now=NOW) == 2
    with engine.connect() as conn:
        [workflow] = repo.list_workflows(conn)
        paid = repository.get_payment(conn, "pay_10")
    assert workflow.status == "recovered"
    assert paid is not None
    assert paid.captured == 9900
    assert balances(engine) == {
        "accounts_receivable": 0,
        "gateway_clearing": 4500 + 9900,
        "revenue": -(4500 + 9900),
    }


def test_an_updated_payment_method_brings_the_next_attempt_forward(engine: Engine) -> None:
    use_policy(engine, FAST)
    post(engine, event("payment.failed", "pf-1", FAILED_DATA))
    payment_feed.apply_pending(engine, context(), now=NOW)
    moment = NOW + timedelta(minutes=2)
    post(
        engine, event("payment.method_updated", "pm-1", {"order_id": "1043", "payment_id": "pay_9"})
    )
    payment_feed.apply_pending(engine, context(), now=moment)
    with engine.connect() as conn:
        [workflow] = repo.list_workflows(conn)
    assert workflow.next_attempt_at == moment


def test_a_refused_event_is_kept_with_its_reason_and_not_tried_forever(engine: Engine) -> None:
    bad = FAILED_DATA | {"amount": 0, "payment_id": "pay_zero"}
    post(engine, event("payment.failed", "pf-0", bad))
    assert payment_feed.apply_pending(engine, context(), now=NOW) == 1
    with engine.connect() as conn:
        outcome = conn.execute(select(billing_inbox.c.outcome)).scalar_one()
        workflows = conn.execute(select(func.count()).select_from(repo.workflows)).scalar_one()
    assert outcome == "refused: invalid_amount"
    assert workflows == 0


def test_two_workers_attempt_each_due_workflow_once(engine: Engine) -> None:
    use_policy(engine, FAST)
    gateway = SandboxGateway()
    ids = []
    for n in range(12):
        payment_id = f"pay_c{n}"
        gateway.add_payment(payment_id, currency="USD", card="tok_ok", network="visa")
        ids.append(open_one(engine, failure(payment_id=payment_id)).id)
    due = NOW + timedelta(hours=1)
    counts: list[int] = []
    barrier = threading.Barrier(2)

    def worker() -> None:
        barrier.wait()
        total = 0
        while (n := run(engine, gateway, due, limit=3)) > 0:
            total += n
        counts.append(total)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 12
    with engine.connect() as conn:
        done = [repo.get_workflow(conn, i) for i in ids]
        attempts = repo.attempts_of_many(conn, ids)
    assert {w.status for w in done if w} == {"recovered"}
    assert all(len(a) == 2 for a in attempts.values())


def test_an_event_that_cannot_be_applied_waits_longer_each_time_and_blocks_nothing(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = payment_feed._apply
    broken = {"pay_9"}

    def apply_unless_broken(conn: Any, ctx: Any, stored: Any, **kw: Any) -> str:
        if stored.data.get("payment_id") in broken:
            raise RuntimeError("the database went away")
        return real(conn, ctx, stored, **kw)

    monkeypatch.setattr(payment_feed, "_apply", apply_unless_broken)
    post(engine, event("payment.failed", "pf-bad", FAILED_DATA))
    post(engine, event("payment.failed", "pf-ok", FAILED_DATA | {"payment_id": "pay_10"}))

    def inbox(ce_id: str) -> Any:
        with engine.connect() as conn:
            return conn.execute(
                select(billing_inbox)
                .join(events, events.c.id == billing_inbox.c.event_id)
                .where(events.c.ce_id == ce_id)
            ).one()

    # The good event behind the broken one is applied; the broken one waits 5 s, then 10.
    assert payment_feed.apply_pending(engine, context(), now=NOW) == 1
    first = inbox("pf-bad")
    assert (first.attempts, first.retry_at, first.applied_at) == (
        1,
        NOW + timedelta(seconds=5),
        None,
    )
    assert "the database went away" in first.last_error
    assert payment_feed.apply_pending(engine, context(), now=NOW + timedelta(seconds=4)) == 0
    assert inbox("pf-bad").attempts == 1
    payment_feed.apply_pending(engine, context(), now=NOW + timedelta(seconds=5))
    assert (inbox("pf-bad").attempts, inbox("pf-bad").retry_at) == (
        2,
        NOW + timedelta(seconds=15),
    )
    # Fixed (a deploy): the next try after the wait applies it, once.
    broken.clear()
    assert payment_feed.apply_pending(engine, context(), now=NOW + timedelta(seconds=15)) == 1
    assert inbox("pf-bad").outcome.startswith("opened ")
    with engine.connect() as conn:
        assert len(repo.list_workflows(conn)) == 2
