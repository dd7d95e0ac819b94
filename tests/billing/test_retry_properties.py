"""Random sequences of failed payments, attempts, stops and recoveries on a real SQLite
database. After every step the books balance, and what the ledger says is owed,
collected and written off is exactly what the workflows say (DESIGN.md invariant 6)."""

from __future__ import annotations

import shutil
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from tests.billing.support import NOW, emitter
from tidings.billing import ledger, retry_service
from tidings.billing import retry_repository as repo
from tidings.billing.errors import BillingError
from tidings.billing.repository import get_payment
from tidings.billing.retries import OPEN, TRANSITIONS
from tidings.billing.retry_policy import RetryPolicy
from tidings.billing.retry_service import Failure, Outcome, RetryContext
from tidings.db.engine import create_db_engine
from tidings.db.schema import payment_retry_workflows

CODES = ["insufficient_funds", "do_not_honor", "processing_error", "stolen_card", None]
CONTEXT = RetryContext(store="lumen", emitter=emitter())

steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("open"), st.integers(0, 3), st.sampled_from(CODES), st.integers(1, 9_000)
        ),
        st.tuples(
            st.just("attempt"),
            st.integers(0, 3),
            st.sampled_from(["approved", "declined", "unknown", "refused"]),
            st.sampled_from(CODES),
        ),
        st.tuples(st.sampled_from(["stop", "recover", "retry_now"]), st.integers(0, 3)),
    ),
    min_size=5,
    max_size=30,
)


def apply(engine: Engine, step: tuple[Any, ...], at: Any) -> None:
    kind, n = step[0], step[1]
    with engine.begin() as conn:
        if kind == "open":
            collected = get_payment(conn, f"pay_{n}") is not None
            failure = Failure(
                payment_id=f"pay_{n}",
                order_id=f"order_{n}",
                customer_id=None,
                gateway="sandbox",
                amount=step[3],
                currency="EUR",
                decline_code=step[2],
                network="mastercard",
                at=at,
            )
            if collected:
                # Collected already: a later failure report must not charge again.
                with pytest.raises(BillingError, match="is captured"):
                    retry_service.open_workflow(conn, CONTEXT, failure, now=at, actor="billing")
            else:
                retry_service.open_workflow(conn, CONTEXT, failure, now=at, actor="billing")
            return
        workflow = repo.latest_workflow_for_payment(conn, f"pay_{n}")
        if workflow is None:
            return
        if kind == "attempt":
            if workflow.status != "retry_scheduled":
                return
            repo.update_workflow(conn, workflow.id, "retry_scheduled", status="retrying")
            outcome = (
                Outcome("declined", "sandbox", decline_code="gateway_refused", permanent=True)
                if step[2] == "refused"
                else Outcome(step[2], "sandbox", decline_code=step[3])
            )
            retry_service.record_attempt(
                conn,
                CONTEXT,
                workflow_id=workflow.id,
                number=workflow.attempts + 1,
                outcome=outcome,
                now=at,
                actor="billing",
            )
            return
        expected = TRANSITIONS.get((workflow.status, "stop" if kind == "stop" else "recover"))
        try:
            if kind == "stop":
                retry_service.stop(
                    conn, CONTEXT, workflow_id=workflow.id, reason="test", now=at, actor="a"
                )
            elif kind == "recover":
                retry_service.recover(conn, CONTEXT, workflow_id=workflow.id, now=at, actor="a")
            else:
                expected = "ok" if workflow.status == "retry_scheduled" else None
                retry_service.retry_now(conn, workflow_id=workflow.id, now=at, actor="a")
        except BillingError as refused:
            code: str | None = refused.code
        else:
            code = None
        # Refused exactly when the state machine has no such move.
        assert code == (None if expected is not None else "illegal_transition"), step


def check(engine: Engine, policy: RetryPolicy) -> None:
    with engine.connect() as conn:
        balance = ledger.trial_balance(conn)
        rows = conn.execute(select(payment_retry_workflows)).mappings().all()
        history = repo.attempts_of_many(conn, [r["id"] for r in rows])
    assert ledger.is_balanced(balance)
    books = {account.rsplit(":", 1)[1]: amount for (account, _), amount in balance.items()}
    owed = sum(
        r["amount"]
        for r in rows
        if r["status"] in OPEN or (r["status"] == "exhausted" and r["final_action"] == "escalate")
    )
    collected = sum(r["recovered_amount"] or 0 for r in rows if r["status"] == "recovered")
    written_off = sum(
        r["amount"]
        for r in rows
        if r["status"] == "exhausted" and r["final_action"] == "mark_uncollectible"
    )
    assert books.get("accounts_receivable", 0) == owed
    assert books.get("gateway_clearing", 0) == collected
    assert books.get("bad_debt", 0) == written_off
    assert books.get("revenue", 0) == -(owed + collected + written_off)
    for row in rows:
        attempts = history[row["id"]]
        # The opening failure plus at most the policy's attempts, numbered in order.
        assert [a.number for a in attempts] == list(range(len(attempts)))
        assert row["attempts"] <= policy.attempt_limit(row["network"])
        approved = [a for a in attempts if a.outcome == "approved"]
        assert len(approved) <= 1
        if approved:
            assert row["status"] == "recovered"
        if row["status"] == "retry_scheduled":
            assert row["next_attempt_at"] is not None
    # Never two open workflows for one payment.
    open_payments = [r["payment_id"] for r in rows if r["status"] in OPEN]
    assert len(open_payments) == len(set(open_payments))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=steps,
    final_action=st.sampled_from(["cancel_order", "mark_uncollectible", "escalate"]),
    max_attempts=st.integers(0, 3),
)
def test_random_recoveries_keep_the_books_and_the_policy(
    sqlite_template_path: Path, steps: list[tuple[Any, ...]], final_action: str, max_attempts: int
) -> None:
    policy = RetryPolicy(
        intervals=(3600,),
        max_attempts=max_attempts,
        preferred_hour=None,
        network_caps={"mastercard": 2},
        final_action=final_action,  # type: ignore[arg-type]
    )
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "tidings.db"
        shutil.copyfile(sqlite_template_path, path)
        engine = create_db_engine(f"sqlite:///{path}", pool_size=1)
        try:
            with engine.begin() as conn:
                retry_service.put_policy(
                    conn, name="default", values=policy.to_json(), actor="t", now=NOW
                )
            for i, step in enumerate(steps):
                apply(engine, step, NOW + timedelta(minutes=i))
                check(engine, policy)
        finally:
            engine.dispose()
