"""Random sequences of captures, refunds and gateway outcomes against a real SQLite database.

After every step: the books balance per currency and every account holds what a plain
model of the same steps says; a payment's live refunds equal ``payments.refunded`` and
never pass the capture (DESIGN.md invariants 5 and 6).
"""

from __future__ import annotations

import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, select

from tests.billing.support import NOW, capture, emitter, held_by_refunds, request
from tidings.billing import ledger, service
from tidings.billing.errors import BillingError
from tidings.billing.refunds import TRANSITIONS, holds_amount
from tidings.db.engine import create_db_engine
from tidings.db.schema import payments, refunds

REQUESTER = "support:requester"
MOVES = ("approve", "reject", "cancel", "submit", "authorize", "succeed", "fail")

captures = st.tuples(
    st.just("capture"),
    st.sampled_from(["EUR", "JPY"]),
    st.sampled_from(["lumen", "north"]),
    st.integers(100, 20_000),
)
steps = st.tuples(
    st.lists(captures, min_size=1, max_size=3),
    st.lists(
        st.one_of(
            captures,
            st.tuples(
                st.just("request"),
                st.integers(0, 5),
                st.one_of(st.integers(1, 15_000), st.just("full")),
                st.integers(0, 2),
            ),
            st.tuples(st.sampled_from(MOVES), st.integers(0, 20), st.integers(0, 2)),
            # A legal next move for one of the latest refunds, so sequences reach the
            # gateway's outcomes and the reversal.
            *[
                st.tuples(
                    st.just("advance"),
                    st.integers(-2, -1),
                    st.lists(st.integers(0, 5), min_size=1, max_size=6),
                )
            ]
            * 2,
            st.tuples(st.just("fee"), st.integers(0, 5), st.integers(1, 300)),
        ),
        min_size=10,
        max_size=40,
    ),
).map(lambda parts: parts[0] + parts[1])


@dataclass
class ModelRefund:
    id: str
    payment: int
    amount: int
    needed: int
    state: str
    approvers: set[str] = field(default_factory=set)


@dataclass
class Model:
    payments: list[tuple[str, str, int]] = field(default_factory=list)  # store, currency, captured
    refunds: list[ModelRefund] = field(default_factory=list)
    fees: list[tuple[int, int]] = field(default_factory=list)

    def held(self, payment: int) -> int:
        return sum(r.amount for r in self.refunds if r.payment == payment and holds_amount(r.state))

    def expected_books(self) -> dict[tuple[str, str], int]:
        books: dict[tuple[str, str], int] = defaultdict(int)

        def add(store: str, currency: str, name: str, amount: int) -> None:
            books[(f"{store}:{currency}:{name}", currency)] += amount

        for store, currency, captured in self.payments:
            add(store, currency, "gateway_clearing", captured)
            add(store, currency, "revenue", -captured)
        for payment, amount in self.fees:
            store, currency, _ = self.payments[payment]
            add(store, currency, "fees", amount)
            add(store, currency, "gateway_clearing", -amount)
        for r in self.refunds:
            store, currency, _ = self.payments[r.payment]
            if r.state in ("authorized", "succeeded"):
                add(store, currency, "refunds", r.amount)
            if r.state == "authorized":
                add(store, currency, "customer_refunds_payable", -r.amount)
            if r.state == "succeeded":
                add(store, currency, "gateway_clearing", -r.amount)
        return dict(books)


# The move that takes a refund towards the gateway's last word.
FORWARD = {
    "pending_approval": "approve",
    "approved": "submit",
    "submitted": "authorize",
    "authorized": "succeed",
    "succeeded": "fail",
}


def expand(model: Model, step: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
    """("advance", refund, picks) is one move per pick, each legal for that refund when it
    runs: mostly the forward one, sometimes a cancel, reject or failure; a refund in a
    final state is asked to fail (and must be refused)."""
    if step[0] != "advance":
        yield step
        return
    _, index, picks = step
    for pick in picks:
        r = model.refunds[index % len(model.refunds)]
        legal = sorted(a for (state, a) in TRANSITIONS if state == r.state and a in MOVES)
        forward = FORWARD.get(r.state, "fail")
        action = forward if pick < 4 or not legal else legal[pick % len(legal)]
        yield (action, index, len(r.approvers) if action == "approve" else 0)


def expectation(model: Model, step: tuple[Any, ...]) -> str | None:
    """The error code the model expects from this step; None when it must succeed."""
    kind = step[0]
    if kind in ("capture", "fee"):
        return None
    if kind == "request":
        _, index, amount, _ = step
        payment = index % len(model.payments)
        left = model.payments[payment][2] - model.held(payment)
        value = left if amount == "full" else amount
        return "refund_exceeds_captured" if value <= 0 or value > left else None
    r = model.refunds[step[1] % len(model.refunds)]
    if (r.state, kind) not in TRANSITIONS:
        return "illegal_transition"
    if kind == "approve" and f"approver:{step[2]}" in r.approvers:
        return "duplicate_approval"
    return None


def apply(conn: Connection, model: Model, step: tuple[Any, ...]) -> None:
    """Run one step, then record it in the model (only reached when it did not raise)."""
    kind = step[0]
    if kind == "capture":
        _, currency, store, amount = step
        n = len(model.payments)
        capture(conn, f"pay_{n}", amount=amount, currency=currency, store=store, order_id=f"o{n}")
        model.payments.append((store, currency, amount))
        return
    if kind == "fee":
        payment = step[1] % len(model.payments)
        store, currency, _ = model.payments[payment]
        lines = ledger.fee(store, currency, step[2])
        ledger.post(conn, kind="fee", reference=f"pay_{payment}", lines=lines, at=NOW)
        model.fees.append((payment, step[2]))
        return
    if kind == "request":
        _, index, amount, needed = step
        payment = index % len(model.payments)
        refund, _ = request(
            conn,
            payment_id=f"pay_{payment}",
            amount=amount,
            currency=model.payments[payment][1],
            idempotency_key=f"key-{len(model.refunds)}",
            requested_by=REQUESTER,
            approvals_needed=needed,
        )
        if amount != "full":
            assert refund.amount == amount
        assert refund.status == ("approved" if needed == 0 else "pending_approval")
        model.refunds.append(ModelRefund(refund.id, payment, refund.amount, needed, refund.status))
        return
    r = model.refunds[step[1] % len(model.refunds)]
    gateway = {"refund_id": r.id, "actor": "worker", "now": NOW, "emitter": emitter()}
    if kind == "approve":
        approver = f"approver:{step[2]}"
        done = service.approve(conn, refund_id=r.id, actor=approver, now=NOW)
        r.approvers.add(approver)
        assert done.status == ("approved" if len(r.approvers) >= r.needed else r.state)
    elif kind == "reject":
        done = service.reject(
            conn, refund_id=r.id, actor="approver:0", reason="no receipt", now=NOW
        )
    elif kind == "cancel":
        done = service.cancel(conn, refund_id=r.id, actor=REQUESTER, now=NOW)
    elif kind == "submit":
        done = service.mark_submitted(
            conn, refund_id=r.id, gateway_refund_id="g", actor="w", now=NOW
        )
    elif kind == "authorize":
        done = service.mark_authorized(conn, **gateway)
    elif kind == "succeed":
        done = service.mark_succeeded(conn, **gateway)
    else:
        done = service.mark_failed(conn, reason="gateway said no", **gateway)
    if kind != "approve":
        assert done.status == TRANSITIONS[(r.state, kind)]
    r.state = done.status


def check(engine: Engine, model: Model) -> None:
    with engine.connect() as conn:
        balance = ledger.trial_balance(conn)
        assert all(total == 0 for total in ledger.totals_by_currency(balance).values())
        assert {k: v for k, v in balance.items() if v} == {
            k: v for k, v in model.expected_books().items() if v
        }
        stored = dict(conn.execute(select(payments.c.id, payments.c.refunded)).all())
        statuses = dict(conn.execute(select(refunds.c.id, refunds.c.status)).all())
        for n, (_, _, captured) in enumerate(model.payments):
            live = held_by_refunds(conn, f"pay_{n}")
            assert stored[f"pay_{n}"] == live == model.held(n) <= captured
    assert statuses == {r.id: r.state for r in model.refunds}


def outcome(engine: Engine, model: Model, step: tuple[Any, ...]) -> str | None:
    """Run the step in its own transaction; the error code it was refused with, if any."""
    try:
        with engine.begin() as conn:
            apply(conn, model, step)
    except BillingError as error:
        return error.code
    return None


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(steps=steps)
def test_random_sequences_keep_the_books_and_the_refund_limit(
    sqlite_template_path: Path, steps: list[tuple[Any, ...]]
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "tidings.db"
        shutil.copyfile(sqlite_template_path, path)
        engine = create_db_engine(f"sqlite:///{path}", pool_size=1)
        try:
            model = Model()
            for step in steps:
                if step[0] in (*MOVES, "advance") and not model.refunds:
                    continue
                for one in expand(model, step):
                    expected = expectation(model, one)
                    label = f"{one[0]}: {expected or 'ok'}"
                    assert outcome(engine, model, one) == expected, one
                    if one[0] in MOVES and expected is None:
                        label += f" -> {model.refunds[one[1] % len(model.refunds)].state}"
                    event(label)
                    check(engine, model)
        finally:
            engine.dispose()
