"""Approved refunds sent to the sandbox gateway, and reconciled with what it reports later."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter, defaultdict
from datetime import timedelta

import pytest
from sqlalchemy import Connection, Engine, select

from tests.billing.support import LATER, NOW, capture, emitter, held_by_refunds, request
from tests.support.events import CAMILLE, order_placed
from tests.support.smtp import SmtpServer
from tests.support.work import drain
from tidings.audit.chain import verify
from tidings.billing import ledger, repository, service
from tidings.billing.approvals import ApprovalPolicy
from tidings.billing.context import Billing
from tidings.billing.gateways.base import GatewayError, GatewayRefund
from tidings.billing.gateways.routing import GatewayRouter
from tidings.billing.gateways.sandbox import SandboxGateway
from tidings.billing.repository import Refund
from tidings.billing.submission import gateway_moves, reconcile, submit_due
from tidings.db.schema import audit_log, ledger_lines, ledger_transactions, notifications
from tidings.db.types import utcnow
from tidings.events.envelope import parse_structured
from tidings.runtime import Runtime

CAPTURED = 10_000
SOON = NOW + timedelta(seconds=10)
MUCH_LATER = LATER + timedelta(minutes=5)


class CountingSandbox(SandboxGateway):
    """The sandbox, counting every refund request it is sent, per idempotency key."""

    def __init__(self) -> None:
        super().__init__()
        self.refund_requests: Counter[str] = Counter()

    async def refund(
        self, *, payment_id: str, amount: int, currency: str, idempotency_key: str
    ) -> GatewayRefund:
        self.refund_requests[idempotency_key] += 1
        return await super().refund(
            payment_id=payment_id, amount=amount, currency=currency, idempotency_key=idempotency_key
        )


class LostFirstRequest(CountingSandbox):
    """The first refund request never reaches the gateway: the connection dropped."""

    async def refund(
        self, *, payment_id: str, amount: int, currency: str, idempotency_key: str
    ) -> GatewayRefund:
        if not self.refund_requests:
            self.refund_requests[idempotency_key] += 1
            raise GatewayError("connection reset", permanent=False, gateway=self.name)
        return await super().refund(
            payment_id=payment_id, amount=amount, currency=currency, idempotency_key=idempotency_key
        )


class SlowToSettle(CountingSandbox):
    """Refunds stay pending at the gateway until ``settled`` is set."""

    settled = False

    async def refund_status(self, gateway_refund_id: str) -> GatewayRefund:
        if not self.settled:
            return GatewayRefund(status="pending", gateway_refund_id=gateway_refund_id)
        return await super().refund_status(gateway_refund_id)


def billing_with(gateway: SandboxGateway, captured: int = CAPTURED) -> Billing:
    gateway.add_payment("pay_1", currency="EUR", captured=captured)
    return Billing(
        store="lumen",
        gateways=GatewayRouter.single(gateway),
        approvals=ApprovalPolicy(),
        emitter=emitter(),
    )


def approved(engine: Engine, amount: int) -> Refund:
    with engine.begin() as conn:
        capture(conn, amount=CAPTURED)
        refund, _ = request(conn, amount=amount)
    assert refund.status == "approved"
    return refund


def stored(engine: Engine, refund_id: str) -> Refund:
    with engine.connect() as conn:
        refund = repository.get_refund(conn, refund_id)
    assert refund is not None
    return refund


def refunded(engine: Engine) -> int:
    with engine.connect() as conn:
        payment = repository.get_payment(conn, "pay_1")
        held = held_by_refunds(conn, "pay_1")
    assert payment is not None
    assert payment.refunded == held
    return payment.refunded


def balances(engine: Engine) -> dict[str, int]:
    """Account name → balance; the books must balance whenever they are looked at."""
    with engine.connect() as conn:
        balance = ledger.trial_balance(conn)
    assert ledger.is_balanced(balance)
    return {account.rsplit(":", 1)[1]: amount for (account, _), amount in balance.items()}


def postings(conn: Connection, refund_id: str) -> tuple[list[str], dict[str, int]]:
    """The kinds of the refund's journal transactions in order, and their sum per account."""
    kinds = conn.execute(
        select(ledger_transactions.c.kind)
        .where(ledger_transactions.c.reference == refund_id)
        .order_by(ledger_transactions.c.at, ledger_transactions.c.id)
    ).scalars()
    rows = conn.execute(
        select(ledger_lines.c.account, ledger_lines.c.amount)
        .join(ledger_transactions, ledger_lines.c.transaction_id == ledger_transactions.c.id)
        .where(ledger_transactions.c.reference == refund_id)
    ).all()
    totals: dict[str, int] = defaultdict(int)
    for account, amount in rows:
        totals[account.rsplit(":", 1)[1]] += amount
    return list(kinds), dict(totals)


def refund_actions(conn: Connection, refund_id: str) -> list[str]:
    return list(
        conn.execute(
            select(audit_log.c.action)
            .where(audit_log.c.subject_type == "refund", audit_log.c.subject_id == refund_id)
            .order_by(audit_log.c.seq)
        ).scalars()
    )


@pytest.mark.parametrize(
    ("status", "gateway_status", "pending_authorizes", "moves"),
    [
        ("submitted", "pending", False, []),
        ("submitted", "pending", True, ["authorize"]),
        ("submitted", "succeeded", False, ["authorize", "succeed"]),
        ("submitted", "failed", False, ["fail"]),
        ("authorized", "pending", True, []),
        ("authorized", "succeeded", True, ["succeed"]),
        ("authorized", "failed", True, ["fail"]),
        ("succeeded", "succeeded", True, []),
        ("succeeded", "failed", True, ["fail"]),
        ("failed", "failed", True, []),
        ("reversed", "failed", True, []),
    ],
)
def test_what_the_gateway_says_moves_the_refund(
    status: str, gateway_status: str, pending_authorizes: bool, moves: list[str]
) -> None:
    assert gateway_moves(status, gateway_status, pending_authorizes=pending_authorizes) == moves


def test_a_refund_goes_through_the_gateway_and_the_customer_is_told_of_each_step_once(
    runtime: Runtime, smtp_server: SmtpServer
) -> None:
    runtime.intake.accept_events([parse_structured(order_placed("1042", CAMILLE))], actor="shop")
    sandbox = runtime.billing.gateways.named("sandbox")
    assert isinstance(sandbox, SandboxGateway)
    sandbox.add_payment("pay_1042", currency="EUR", captured=CAPTURED)
    now = utcnow()
    with runtime.engine.begin() as conn:
        service.record_capture(
            conn,
            payment_id="pay_1042",
            store="lumen",
            order_id="1042",
            customer_id=CAMILLE["id"],
            gateway="sandbox",
            currency="EUR",
            amount=CAPTURED,
            method="card",
            now=now,
            actor="gateway:sandbox",
        )
        refund, _ = request(conn, payment_id="pay_1042", amount=1250, approvals_needed=1, now=now)
        service.approve(conn, refund_id=refund.id, actor="lead:bob", now=now)

    # The worker's tick submits it; its batches deliver what that emitted.
    drain(runtime)

    done = stored(runtime.engine, refund.id)
    assert done.status == "succeeded"
    assert done.gateway_refund_id is not None
    with runtime.engine.connect() as conn:
        actions = refund_actions(conn, refund.id)
        kinds, totals = postings(conn, refund.id)
        sent = conn.execute(
            select(notifications.c.kind).where(
                notifications.c.channel == "email", notifications.c.status == "sent"
            )
        ).scalars()
        refund_mail = [kind for kind in sent if kind.startswith("refund_")]
        assert verify(conn).ok
    moves = [a for a in actions if a.split(".")[1] in ("submitted", "authorized", "succeeded")]
    assert moves == ["refund.submitted", "refund.authorized", "refund.succeeded"]
    assert kinds == ["refund_authorized", "refund_succeeded"]
    # Owed at authorization, paid at success: the payable nets out.
    assert totals == {"refunds": 1250, "customer_refunds_payable": 0, "gateway_clearing": -1250}
    assert balances(runtime.engine)["gateway_clearing"] == CAPTURED - 1250
    # The confirmation goes out at authorization; the builtin rules tell the success too.
    # Each once: a move the worker recorded is never told twice.
    assert sorted(refund_mail) == ["refund_authorized", "refund_succeeded"]
    mail = [m for m in smtp_server.parsed() if m["To"] == CAMILLE["email"]]
    refund_emails = [m for m in mail if "12,50" in m.get_body(("plain",)).get_content()]
    assert len(refund_emails) == len(refund_mail)
    assert set(smtp_server.message_ids().values()) == {1}


def test_a_timed_out_refund_is_found_by_the_reconciler_not_sent_again(engine: Engine) -> None:
    sandbox = CountingSandbox()
    billing = billing_with(sandbox)
    refund = approved(engine, 1213)

    assert submit_due(engine, billing, now=NOW) == 1
    waiting = stored(engine, refund.id)
    assert (waiting.status, waiting.gateway_refund_id) == ("submitted", None)
    # Nothing left to claim, and too recent for the reconciler to ask about.
    assert submit_due(engine, billing, now=SOON) == 0
    assert reconcile(engine, billing, now=SOON, older_than=timedelta(minutes=2)) == 0
    assert stored(engine, refund.id).status == "submitted"

    assert reconcile(engine, billing, now=LATER, older_than=timedelta(minutes=2)) == 1
    done = stored(engine, refund.id)
    assert done.status == "succeeded"
    assert done.gateway_refund_id is not None
    assert sandbox.refund_requests == Counter({refund.id: 1})
    assert refunded(engine) == 1213
    assert balances(engine)["refunds"] == 1213
    with engine.connect() as conn:
        assert "refund.outcome_unknown" in refund_actions(conn, refund.id)


def test_a_request_that_never_arrived_is_sent_again_with_the_same_key(engine: Engine) -> None:
    sandbox = LostFirstRequest()
    billing = billing_with(sandbox)
    refund = approved(engine, 1250)

    submit_due(engine, billing, now=NOW)
    assert stored(engine, refund.id).status == "submitted"
    assert reconcile(engine, billing, now=LATER, older_than=timedelta(minutes=2)) == 1
    assert stored(engine, refund.id).status == "succeeded"
    assert sandbox.refund_requests == Counter({refund.id: 2})
    # Both requests carried the refund's id, and the gateway made one refund of it.
    assert asyncio.run(sandbox.lookup_capture("pay_1")).refunded == 1250


def test_a_pending_refund_is_authorized_then_succeeds(engine: Engine) -> None:
    sandbox = SlowToSettle()
    billing = billing_with(sandbox)
    refund = approved(engine, 1242)

    submit_due(engine, billing, now=NOW)
    first = stored(engine, refund.id)
    assert first.status == "submitted"
    assert first.gateway_refund_id is not None
    assert balances(engine).get("refunds", 0) == 0

    assert reconcile(engine, billing, now=LATER, older_than=timedelta(minutes=2)) == 1
    assert stored(engine, refund.id).status == "authorized"
    owed = balances(engine)
    assert (owed["refunds"], owed["customer_refunds_payable"]) == (1242, -1242)
    # Still pending: nothing changes, however often it is asked.
    assert reconcile(engine, billing, now=MUCH_LATER, older_than=timedelta(minutes=2)) == 0

    sandbox.settled = True
    assert reconcile(engine, billing, now=MUCH_LATER, older_than=timedelta(minutes=2)) == 1
    assert stored(engine, refund.id).status == "succeeded"
    paid = balances(engine)
    assert paid.get("customer_refunds_payable", 0) == 0
    assert paid["gateway_clearing"] == CAPTURED - 1242
    assert sandbox.refund_requests == Counter({refund.id: 1})


def test_a_refund_failed_after_success_is_reversed(engine: Engine) -> None:
    sandbox = CountingSandbox()
    billing = billing_with(sandbox)
    refund = approved(engine, 1266)

    submit_due(engine, billing, now=NOW)
    assert stored(engine, refund.id).status == "succeeded"
    assert refunded(engine) == 1266
    # The sandbox reports success to the first status query, failure after it.
    assert reconcile(engine, billing, now=LATER, older_than=timedelta(minutes=2)) == 0
    assert stored(engine, refund.id).status == "succeeded"
    assert reconcile(engine, billing, now=MUCH_LATER, older_than=timedelta(minutes=2)) == 1

    reversed_ = stored(engine, refund.id)
    assert reversed_.status == "reversed"
    assert reversed_.failure_reason is not None
    assert refunded(engine) == 0
    with engine.connect() as conn:
        kinds, totals = postings(conn, refund.id)
    assert kinds == ["refund_authorized", "refund_succeeded", "refund_reversed"]
    assert set(totals.values()) == {0}
    # Only the capture is left on the books.
    capture_only = {"gateway_clearing": CAPTURED, "revenue": -CAPTURED}
    assert balances(engine) == dict.fromkeys(totals, 0) | capture_only
    # Reversed is final: asking again changes nothing.
    later = MUCH_LATER + timedelta(minutes=5)
    assert reconcile(engine, billing, now=later, older_than=timedelta(minutes=2)) == 0


def test_a_refund_the_gateway_fails_releases_its_amount(engine: Engine) -> None:
    billing = billing_with(CountingSandbox())
    refund = approved(engine, 1299)
    assert refunded(engine) == 1299

    submit_due(engine, billing, now=NOW)
    failed = stored(engine, refund.id)
    assert failed.status == "failed"
    assert failed.failure_reason is not None
    assert "99" in failed.failure_reason
    assert refunded(engine) == 0
    with engine.connect() as conn:
        assert postings(conn, refund.id) == ([], {})


def test_a_refund_the_gateway_refuses_fails_with_its_message(engine: Engine) -> None:
    # The gateway holds less than the store recorded: it refuses the refund outright.
    billing = billing_with(CountingSandbox(), captured=1000)
    refund = approved(engine, 1250)

    submit_due(engine, billing, now=NOW)
    failed = stored(engine, refund.id)
    assert failed.status == "failed"
    assert failed.failure_reason is not None
    assert "exceeds" in failed.failure_reason
    assert refunded(engine) == 0


def test_concurrent_submitters_send_each_refund_once(engine: Engine) -> None:
    sandbox = CountingSandbox()
    billing = billing_with(sandbox)
    with engine.begin() as conn:
        capture(conn, amount=CAPTURED)
        ids = [request(conn, amount=500 + n, idempotency_key=f"k{n}")[0].id for n in range(12)]
    barrier = threading.Barrier(2, timeout=30)
    claimed: list[int] = []
    lock = threading.Lock()

    def submitter() -> None:
        barrier.wait()
        total = 0
        while (count := submit_due(engine, billing, now=NOW, limit=2)) > 0:
            total += count
        with lock:
            claimed.append(total)

    threads = [threading.Thread(target=submitter) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)

    assert sum(claimed) == len(ids)
    assert sandbox.refund_requests == Counter(dict.fromkeys(ids, 1))
    assert {stored(engine, refund_id).status for refund_id in ids} == {"succeeded"}
    assert balances(engine)["refunds"] == sum(500 + n for n in range(12))


class OtherGateway(CountingSandbox):
    name = "stripe"


def test_a_refund_goes_to_the_gateway_that_took_its_payment(engine: Engine) -> None:
    first, own = OtherGateway(), CountingSandbox()
    own.add_payment("pay_1", currency="EUR", captured=CAPTURED)
    billing = Billing(
        store="lumen",
        gateways=GatewayRouter([first, own]),
        approvals=ApprovalPolicy(),
        emitter=emitter(),
    )
    refund = approved(engine, 2500)
    assert submit_due(engine, billing, now=SOON) == 1
    assert stored(engine, refund.id).status == "succeeded"
    assert (dict(own.refund_requests), dict(first.refund_requests)) == ({refund.id: 1}, {})


def test_a_refund_whose_gateway_is_not_configured_fails_saying_so(engine: Engine) -> None:
    billing = Billing(
        store="lumen",
        gateways=GatewayRouter([OtherGateway()]),
        approvals=ApprovalPolicy(),
        emitter=emitter(),
    )
    refund = approved(engine, 2500)
    submit_due(engine, billing, now=SOON)
    failed = stored(engine, refund.id)
    assert failed.status == "failed"
    assert "'sandbox', which is not configured" in (failed.failure_reason or "")
    assert refunded(engine) == 0


def test_a_claim_moves_at_most_its_limit(engine: Engine) -> None:
    with engine.begin() as conn:
        capture(conn, amount=CAPTURED)
        for n in range(3):
            request(conn, amount=1000, idempotency_key=f"k{n}")
    moved = []
    for _ in range(3):
        with engine.begin() as conn:
            claimed = repository.claim_refunds(
                conn, status="approved", new_status="submitted", now=SOON, limit=1
            )
        assert len(claimed) == 1
        moved.extend(r.id for r in claimed)
    assert len(set(moved)) == 3
