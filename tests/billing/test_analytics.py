"""Billing analytics: figures from payments, retry workflows and refunds stored directly.

Every expected figure is worked out by hand from the facts in the test; the arithmetic
is in the comment next to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Connection

from tidings.api.app import create_app
from tidings.api.keys import create_key
from tidings.billing import analytics
from tidings.billing.analytics import PaymentTally, RefundFact, Window, WorkflowFact
from tidings.billing.api import PREFIX
from tidings.db.schema import payment_retry_attempts, payment_retry_workflows, payments, refunds
from tidings.db.types import utcnow
from tidings.runtime import Runtime

ANALYTICS = f"{PREFIX}/analytics"
FROM = datetime(2026, 11, 1, tzinfo=UTC)
TO = datetime(2026, 11, 8, tzinfo=UTC)
WINDOW = {"from": FROM.isoformat(), "to": TO.isoformat()}
HOUR = timedelta(hours=1)

Headers = dict[str, str]


# --- plain factories over the tables ----------------------------------------------------


def payment(
    conn: Connection,
    payment_id: str,
    *,
    at: datetime,
    gateway: str = "stripe",
    currency: str = "EUR",
    captured: int = 10_000,
) -> str:
    conn.execute(
        payments.insert().values(
            id=payment_id,
            store="lumen",
            order_id=f"order-{payment_id}",
            gateway=gateway,
            currency=currency,
            captured=captured,
            refunded=0,
            created_at=at,
            updated_at=at,
        )
    )
    return payment_id


def workflow(
    conn: Connection,
    workflow_id: str,
    *,
    at: datetime,
    status: str,
    gateway: str = "stripe",
    currency: str = "USD",
    amount: int = 4_500,
    attempts: int = 0,
    first_decline: str | None = "insufficient_funds",
    last_decline: str | None = None,
) -> str:
    """A workflow for payment ``pay_<workflow_id>`` with its attempt 0 (the reported
    failure); a recovered one also gets the payment row recovery writes."""
    payment_id = f"pay_{workflow_id}"
    closed = at + 2 * HOUR if status in ("recovered", "exhausted", "canceled") else None
    conn.execute(
        payment_retry_workflows.insert().values(
            id=workflow_id,
            store="lumen",
            payment_id=payment_id,
            gateway=gateway,
            amount=amount,
            currency=currency,
            status=status,
            policy={"name": "default"},
            attempts=attempts,
            decline_code=last_decline or first_decline,
            recovered_amount=amount if status == "recovered" else None,
            created_at=at,
            updated_at=closed or at,
            closed_at=closed,
        )
    )
    conn.execute(
        payment_retry_attempts.insert().values(
            workflow_id=workflow_id,
            number=0,
            at=at,
            gateway=gateway,
            outcome="declined",
            decline_code=first_decline,
            category="soft",
            amount=amount,
            currency=currency,
            idempotency_key=f"{workflow_id}:0",
        )
    )
    if status == "recovered" and closed is not None:
        payment(conn, payment_id, at=closed, gateway=gateway, currency=currency, captured=amount)
    return workflow_id


def refund(
    conn: Connection,
    refund_id: str,
    *,
    payment_id: str,
    at: datetime,
    status: str,
    amount: int,
    currency: str = "EUR",
    approvals_needed: int = 0,
    approved_after: float | None = None,
    succeeded_after: float | None = None,
) -> str:
    def later(seconds: float | None) -> datetime | None:
        return at + timedelta(seconds=seconds) if seconds is not None else None

    conn.execute(
        refunds.insert().values(
            id=refund_id,
            payment_id=payment_id,
            amount=amount,
            currency=currency,
            status=status,
            reason_code="damaged",
            idempotency_key=refund_id,
            requested_by="support:alice",
            approvals=[],
            approvals_needed=approvals_needed,
            created_at=at,
            updated_at=at,
            approved_at=later(approved_after),
            succeeded_at=later(succeeded_after),
        )
    )
    return refund_id


@pytest.fixture
def api(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime)) as test_client:
        yield test_client


def bearer(runtime: Runtime, *scopes: str) -> Headers:
    with runtime.engine.begin() as conn:
        _, key = create_key(conn, name="analyst", scopes=scopes, actor="finance:dana", now=utcnow())
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def reader(runtime: Runtime) -> Headers:
    return bearer(runtime, "billing:read")


def figures(api: TestClient, headers: Headers, **params: str) -> Any:
    answer = api.get(ANALYTICS, params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def facts(runtime: Runtime) -> None:
    """Two gateways over three UTC days (times are UTC unless said otherwise).

    Payments: stripe p1 (Nov 1), p2 (Nov 1), p3 (Nov 2); adyen p4 at 01:30+02:00 on
    Nov 3, which is 23:30 UTC on Nov 2. Recovered workflows add payments on Nov 1 and 2
    that are not first-time successes.

    Workflows: stripe w_rec (Nov 1, recovered USD 4500 after 2 retries; first decline
    insufficient_funds, last do_not_honor), stripe w_exh (Nov 1, exhausted after 3;
    first do_not_honor), adyen w_can (Nov 2, canceled; expired_card), adyen w_open
    (Nov 2, retry_scheduled; insufficient_funds), adyen w_rec2 (Nov 2, recovered EUR 2000
    after 1 retry; no decline code reported).

    Refunds: r1 on p1 (Nov 1, succeeded EUR 1000, 1 approver after 600 s, succeeded after
    3600 s), r2 on p1 (Nov 1, rejected EUR 500), r4 on p2 (Nov 2, succeeded EUR 300,
    no approver, succeeded after 7200 s), r5 on p3 (Nov 2, canceled EUR 700 after its
    approver took 4200 s), r3 on p4 (Nov 3, approved USD 2000, 2 approvers after 1800 s).
    """
    with runtime.engine.begin() as conn:
        payment(conn, "p1", at=at(1, 9))
        payment(conn, "p2", at=at(1, 10))
        payment(conn, "p3", at=at(2, 9))
        payment(
            conn,
            "p4",
            at=datetime(2026, 11, 3, 1, 30, tzinfo=timezone(timedelta(hours=2))),
            gateway="adyen",
            currency="USD",
        )
        workflow(
            conn,
            "w_rec",
            at=at(1, 12),
            status="recovered",
            attempts=2,
            first_decline="insufficient_funds",
            last_decline="do_not_honor",
        )
        workflow(
            conn,
            "w_exh",
            at=at(1, 13),
            status="exhausted",
            attempts=3,
            first_decline="do_not_honor",
        )
        workflow(
            conn,
            "w_can",
            at=at(2, 12),
            status="canceled",
            gateway="adyen",
            first_decline="expired_card",
        )
        workflow(
            conn, "w_open", at=at(2, 13), status="retry_scheduled", gateway="adyen", attempts=1
        )
        workflow(
            conn,
            "w_rec2",
            at=at(2, 14),
            status="recovered",
            gateway="adyen",
            currency="EUR",
            amount=2_000,
            attempts=1,
            first_decline=None,
        )
        refund(
            conn,
            "r1",
            payment_id="p1",
            at=at(1, 11),
            status="succeeded",
            amount=1_000,
            approvals_needed=1,
            approved_after=600,
            succeeded_after=3600,
        )
        refund(
            conn,
            "r2",
            payment_id="p1",
            at=at(1, 11, 30),
            status="rejected",
            amount=500,
            approvals_needed=1,
        )
        refund(
            conn,
            "r4",
            payment_id="p2",
            at=at(2, 10),
            status="succeeded",
            amount=300,
            approved_after=0,
            succeeded_after=7200,
        )
        refund(
            conn,
            "r5",
            payment_id="p3",
            at=at(2, 11),
            status="canceled",
            amount=700,
            approvals_needed=1,
            approved_after=4200,
        )
        refund(
            conn,
            "r3",
            payment_id="p4",
            at=at(3, 8),
            status="approved",
            amount=2_000,
            currency="USD",
            approvals_needed=2,
            approved_after=1800,
        )


def durations(count: int, median: float | None, mean: float | None) -> dict[str, Any]:
    return {"count": count, "median_seconds": median, "mean_seconds": mean}


def volume(count: int, **amounts: int) -> dict[str, Any]:
    return {"count": count, "volume": amounts}


@pytest.mark.usefixtures("facts")
def test_overall_figures(api: TestClient, reader: Headers) -> None:
    body = figures(api, reader, **WINDOW)
    assert (datetime.fromisoformat(body["from"]), datetime.fromisoformat(body["to"])) == (FROM, TO)
    assert (body["group_by"], body["groups"]) == (None, [])
    overall = body["overall"]
    # p1, p2, p3, p4 are first-time; the two recovered payments are not; 5 workflows.
    # 4 / (4 + 5) = 0.444...
    assert overall["payments"]["first_time_successes"] == 4
    assert overall["payments"]["failed"] == 5
    assert overall["payments"]["success_rate"] == pytest.approx(4 / 9)
    # 2 recovered, 1 exhausted, 1 canceled, 1 open: 2 / (2 + 1); retries (2 + 1) / 2 = 1.5.
    assert overall["recovery"] == {
        "opened": 5,
        "recovered": 2,
        "exhausted": 1,
        "canceled": 1,
        "open": 1,
        "recovery_rate": pytest.approx(2 / 3),
        "recovered_revenue": {"EUR": 2_000, "USD": 4_500},
        "attempts_per_recovery": 1.5,
    }
    # Requested: r1 + r4 (EUR 1000 + 300), r3 (USD 2000); r2 rejected, r5 canceled.
    # Approval over r1, r3, r5 (needed an approver and got one): 600, 1800, 4200 s,
    # median 1800, mean 6600 / 3 = 2200. To refund: r1 3600, r4 7200: both 5400.
    assert overall["refunds"] == {
        "requested": volume(3, EUR=1_300, USD=2_000),
        "succeeded": volume(2, EUR=1_300),
        "approval_time": durations(3, 1800.0, 2200.0),
        "time_to_refund": durations(2, 5400.0, 5400.0),
    }


@pytest.mark.usefixtures("facts")
def test_grouped_by_gateway(api: TestClient, reader: Headers) -> None:
    body = figures(api, reader, **WINDOW, group_by="gateway")
    assert body["group_by"] == "gateway"
    groups = {group["key"]: group for group in body["groups"]}
    assert list(groups) == ["adyen", "stripe"]
    adyen, stripe = groups["adyen"], groups["stripe"]
    # stripe: p1, p2, p3; w_rec, w_exh: 3 / 5. adyen: p4; w_can, w_open, w_rec2: 1 / 4.
    assert stripe["payments"] == {"first_time_successes": 3, "failed": 2, "success_rate": 0.6}
    assert adyen["payments"] == {"first_time_successes": 1, "failed": 3, "success_rate": 0.25}
    # stripe: 1 recovered, 1 exhausted: 1 / 2. adyen: 1 recovered, none exhausted: 1 / 1.
    assert stripe["recovery"] == {
        "opened": 2,
        "recovered": 1,
        "exhausted": 1,
        "canceled": 0,
        "open": 0,
        "recovery_rate": 0.5,
        "recovered_revenue": {"USD": 4_500},
        "attempts_per_recovery": 2.0,
    }
    assert adyen["recovery"] == {
        "opened": 3,
        "recovered": 1,
        "exhausted": 0,
        "canceled": 1,
        "open": 1,
        "recovery_rate": 1.0,
        "recovered_revenue": {"EUR": 2_000},
        "attempts_per_recovery": 1.0,
    }
    # stripe: r1, r4 requested and succeeded; approvals r1 600, r5 4200: (600 + 4200) / 2.
    assert stripe["refunds"] == {
        "requested": volume(2, EUR=1_300),
        "succeeded": volume(2, EUR=1_300),
        "approval_time": durations(2, 2400.0, 2400.0),
        "time_to_refund": durations(2, 5400.0, 5400.0),
    }
    # adyen: r3 only, approved in 1800 s, not refunded yet.
    assert adyen["refunds"] == {
        "requested": volume(1, USD=2_000),
        "succeeded": volume(0),
        "approval_time": durations(1, 1800.0, 1800.0),
        "time_to_refund": durations(0, None, None),
    }


@pytest.mark.usefixtures("facts")
def test_grouped_by_first_decline_code_with_refunds_and_payments_only_overall(
    api: TestClient, reader: Headers
) -> None:
    body = figures(api, reader, **WINDOW, group_by="decline_code")
    keys = [group["key"] for group in body["groups"]]
    # w_rec counts under its first decline, not its last (do_not_honor); unknown last.
    assert keys == ["do_not_honor", "expired_card", "insufficient_funds", None]
    groups = {group["key"]: group for group in body["groups"]}
    assert all(g["payments"] is None and g["refunds"] is None for g in groups.values())
    assert body["overall"]["refunds"]["requested"]["count"] == 3
    assert body["overall"]["payments"]["failed"] == 5
    recovery = {key: groups[key]["recovery"] for key in groups}
    # do_not_honor: w_exh, exhausted: 0 / (0 + 1).
    assert (recovery["do_not_honor"]["exhausted"], recovery["do_not_honor"]["recovery_rate"]) == (
        1,
        0.0,
    )
    assert recovery["do_not_honor"]["attempts_per_recovery"] is None
    # expired_card: w_can, canceled: 0 / (0 + 0) is unknown, not zero.
    assert (recovery["expired_card"]["canceled"], recovery["expired_card"]["recovery_rate"]) == (
        1,
        None,
    )
    # insufficient_funds: w_rec (recovered) and w_open: 1 / (1 + 0).
    assert recovery["insufficient_funds"] == {
        "opened": 2,
        "recovered": 1,
        "exhausted": 0,
        "canceled": 0,
        "open": 1,
        "recovery_rate": 1.0,
        "recovered_revenue": {"USD": 4_500},
        "attempts_per_recovery": 2.0,
    }
    assert recovery[None]["recovered_revenue"] == {"EUR": 2_000}


@pytest.mark.usefixtures("facts")
def test_grouped_by_utc_day(api: TestClient, reader: Headers) -> None:
    body = figures(api, reader, **WINDOW, group_by="day")
    groups = {group["key"]: group for group in body["groups"]}
    # Nov 3 only has r3; p4 (01:30+02:00 on Nov 3) belongs to Nov 2 in UTC.
    assert list(groups) == ["2026-11-01", "2026-11-02", "2026-11-03"]
    first, second, third = groups.values()
    # Nov 1: p1, p2; w_rec, w_exh: 2 / 4. Nov 2: p3, p4; w_can, w_open, w_rec2: 2 / 5.
    assert first["payments"] == {"first_time_successes": 2, "failed": 2, "success_rate": 0.5}
    assert second["payments"] == {"first_time_successes": 2, "failed": 3, "success_rate": 0.4}
    # Nov 3: nothing paid or failed: no rate rather than 0.
    assert third["payments"] == {"first_time_successes": 0, "failed": 0, "success_rate": None}
    assert (first["recovery"]["recovery_rate"], second["recovery"]["recovery_rate"]) == (0.5, 1.0)
    assert third["recovery"]["opened"] == 0
    # Nov 1: r1 (r2 rejected). Nov 2: r4 (r5 canceled). Nov 3: r3.
    assert first["refunds"]["requested"] == volume(1, EUR=1_000)
    assert second["refunds"]["requested"] == volume(1, EUR=300)
    assert third["refunds"]["requested"] == volume(1, USD=2_000)
    assert second["refunds"]["approval_time"] == durations(1, 4200.0, 4200.0)
    assert second["refunds"]["time_to_refund"] == durations(1, 7200.0, 7200.0)


def test_a_fact_at_from_counts_and_one_at_to_does_not(
    api: TestClient, runtime: Runtime, reader: Headers
) -> None:
    tick = timedelta(microseconds=1)
    with runtime.engine.begin() as conn:
        payment(conn, "at_from", at=FROM)
        payment(conn, "at_to", at=TO)
        payment(conn, "just_before", at=FROM - tick)
        payment(conn, "just_inside", at=TO - tick)
        workflow(conn, "wf_from", at=FROM, status="exhausted")
        workflow(conn, "wf_to", at=TO, status="exhausted")
        refund(conn, "re_from", payment_id="at_from", at=FROM, status="approved", amount=100)
        refund(conn, "re_to", payment_id="at_from", at=TO, status="approved", amount=200)
    overall = figures(api, reader, **WINDOW)["overall"]
    # at_from and just_inside; wf_from; re_from.
    assert overall["payments"]["first_time_successes"] == 2
    assert overall["recovery"]["opened"] == 1
    assert overall["refunds"]["requested"] == volume(1, EUR=100)


def test_amounts_in_different_currencies_are_never_added_up(
    api: TestClient, runtime: Runtime, reader: Headers
) -> None:
    with runtime.engine.begin() as conn:
        for n, currency in enumerate(("EUR", "JPY", "EUR")):
            workflow(
                conn, f"w{n}", at=at(2, 9 + n), status="recovered", currency=currency, amount=5_000
            )
            pay = payment(conn, f"p{n}", at=at(2, 9 + n), currency=currency)
            refund(
                conn,
                f"r{n}",
                payment_id=pay,
                at=at(2, 10 + n),
                status="succeeded",
                amount=700,
                currency=currency,
            )
    overall = figures(api, reader, **WINDOW)["overall"]
    # EUR: 5000 + 5000; JPY: 5000 on its own. Refunds: EUR 700 + 700; JPY 700.
    assert overall["recovery"]["recovered_revenue"] == {"EUR": 10_000, "JPY": 5_000}
    assert overall["refunds"]["succeeded"] == volume(3, EUR=1_400, JPY=700)


def test_an_empty_window_has_zeros_and_no_rates(api: TestClient, reader: Headers) -> None:
    body = figures(api, reader, **WINDOW, group_by="gateway")
    assert body["groups"] == []
    assert body["overall"] == {
        "payments": {"first_time_successes": 0, "failed": 0, "success_rate": None},
        "recovery": {
            "opened": 0,
            "recovered": 0,
            "exhausted": 0,
            "canceled": 0,
            "open": 0,
            "recovery_rate": None,
            "recovered_revenue": {},
            "attempts_per_recovery": None,
        },
        "refunds": {
            "requested": volume(0),
            "succeeded": volume(0),
            "approval_time": durations(0, None, None),
            "time_to_refund": durations(0, None, None),
        },
    }


def test_the_default_window_is_the_last_30_days(
    api: TestClient, runtime: Runtime, reader: Headers
) -> None:
    now = utcnow()
    with runtime.engine.begin() as conn:
        payment(conn, "recent", at=now - timedelta(days=29))
        payment(conn, "old", at=now - timedelta(days=31))
    body = figures(api, reader)
    start, end = datetime.fromisoformat(body["from"]), datetime.fromisoformat(body["to"])
    assert end - start == timedelta(days=30)
    assert now <= end <= utcnow()
    assert body["overall"]["payments"]["first_time_successes"] == 1


@pytest.mark.parametrize(
    "params",
    [
        {"from": TO.isoformat(), "to": FROM.isoformat()},
        {"from": FROM.isoformat(), "to": FROM.isoformat()},
        # Without to, the window ends now: a start in the future is after its end.
        {"from": (utcnow() + timedelta(days=1)).isoformat()},
    ],
)
def test_a_reversed_window_is_refused_saying_what_to_do(
    api: TestClient, reader: Headers, params: dict[str, str]
) -> None:
    answer = api.get(ANALYTICS, params=params, headers=reader)
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert (problem["code"], problem["field"]) == ("invalid_window", "to")
    assert "swap them" in problem["detail"]


def test_an_unknown_grouping_is_refused_with_the_choices(api: TestClient, reader: Headers) -> None:
    answer = api.get(ANALYTICS, params={"group_by": "store"}, headers=reader)
    assert answer.status_code == 422
    assert (answer.json()["code"], answer.json()["field"]) == ("invalid_group_by", "group_by")
    assert "gateway, decline_code, day" in answer.json()["detail"]


def test_a_time_without_offset_is_refused(api: TestClient, reader: Headers) -> None:
    answer = api.get(ANALYTICS, params={"from": "2026-11-01T00:00:00"}, headers=reader)
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"


def test_the_billing_read_scope_is_required(api: TestClient, runtime: Runtime) -> None:
    missing = api.get(ANALYTICS)
    assert (missing.status_code, missing.json()["code"]) == (401, "missing_credentials")
    unknown = api.get(ANALYTICS, headers={"Authorization": "Bearer tid_nope"})
    assert unknown.status_code == 401
    refunds_only = api.get(ANALYTICS, headers=bearer(runtime, "refunds:read"))
    assert refunds_only.status_code == 403
    assert refunds_only.json()["required_scope"] == "billing:read"


def test_the_route_is_documented_with_its_definitions(api: TestClient) -> None:
    operation = api.get("/openapi.json").json()["paths"][ANALYTICS]["get"]
    assert "canceled" in operation["description"]
    assert "not lost" in operation["description"]
    assert set(operation["responses"]) >= {"200", "401", "403", "422"}


# --- the aggregation alone -------------------------------------------------------------

DAYS = [date(2026, 11, d) for d in (1, 2, 3)]
moments = st.builds(
    lambda day, seconds: (
        datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(seconds=seconds)
    ),
    st.sampled_from(DAYS),
    st.integers(0, 86_399),
)
gateways = st.sampled_from(["stripe", "adyen", "sandbox"])
currencies = st.sampled_from(["EUR", "USD", "JPY"])
tally_lists = st.lists(
    st.builds(PaymentTally, gateway=gateways, day=st.sampled_from(DAYS), count=st.integers(1, 50))
)
workflow_lists = st.lists(
    st.builds(
        WorkflowFact,
        gateway=gateways,
        first_decline_code=st.sampled_from([None, "insufficient_funds", "lost_card"]),
        status=st.sampled_from(
            ["failed", "retry_scheduled", "retrying", "recovered", "exhausted", "canceled"]
        ),
        attempts=st.integers(0, 8),
        currency=currencies,
        recovered_amount=st.integers(1, 100_000),
        created_at=moments,
    )
)
refund_lists = st.lists(
    st.builds(
        RefundFact,
        gateway=gateways,
        status=st.sampled_from(["approved", "rejected", "canceled", "succeeded", "failed"]),
        amount=st.integers(1, 100_000),
        currency=currencies,
        approvals_needed=st.integers(0, 2),
        created_at=moments,
        approved_at=st.none() | moments,
        succeeded_at=st.none() | moments,
    )
)


def _within_unit(rate: float | None) -> bool:
    return rate is None or 0.0 <= rate <= 1.0


@given(
    group_by=st.sampled_from(analytics.GROUPINGS),
    tallies=tally_lists,
    workflows=workflow_lists,
    refunds=refund_lists,
)
def test_groups_add_up_to_the_overall_figures(
    group_by: analytics.GroupBy,
    tallies: list[PaymentTally],
    workflows: list[WorkflowFact],
    refunds: list[RefundFact],
) -> None:
    report = analytics.report(Window(FROM, TO), group_by, tallies, workflows, refunds)
    overall, groups = report.overall, report.groups
    recovery = overall.recovery
    assert recovery.opened == len(workflows) == overall.payments.failed
    assert (
        recovery.recovered + recovery.exhausted + recovery.canceled + recovery.open
        == recovery.opened
    )
    assert sum(g.recovery.opened for g in groups) == recovery.opened
    assert sum(g.recovery.recovered for g in groups) == recovery.recovered
    revenue: dict[str, int] = {}
    for group in groups:
        for currency, amount in group.recovery.recovered_revenue.items():
            revenue[currency] = revenue.get(currency, 0) + amount
    assert revenue == recovery.recovered_revenue
    assert all(_within_unit(g.recovery.recovery_rate) for g in groups)
    assert _within_unit(recovery.recovery_rate)
    assert _within_unit(overall.payments.success_rate)
    if group_by == "decline_code":
        assert all(g.payments is None and g.refunds is None for g in groups)
        return
    grouped_payments = [g.payments for g in groups if g.payments is not None]
    grouped_refunds = [g.refunds for g in groups if g.refunds is not None]
    assert len(grouped_payments) == len(grouped_refunds) == len(groups)
    assert sum(p.first_time_successes for p in grouped_payments) == (
        overall.payments.first_time_successes
    )
    assert sum(p.failed for p in grouped_payments) == overall.payments.failed
    assert all(_within_unit(p.success_rate) for p in grouped_payments)
    assert sum(r.requested.count for r in grouped_refunds) == overall.refunds.requested.count
    assert sum(r.succeeded.count for r in grouped_refunds) == overall.refunds.succeeded.count
    assert sum(r.time_to_refund.count for r in grouped_refunds) == (
        overall.refunds.time_to_refund.count
    )


@given(refunds=refund_lists)
def test_a_median_lies_between_the_shortest_and_longest_wait(refunds: list[RefundFact]) -> None:
    waits = [(r.succeeded_at - r.created_at).total_seconds() for r in refunds if r.succeeded_at]
    duration = analytics.refund_figures(refunds).time_to_refund
    assert duration.count == len(waits)
    if waits:
        assert duration.median_seconds is not None
        assert min(waits) <= duration.median_seconds <= max(waits)
    else:
        assert (duration.median_seconds, duration.mean_seconds) == (None, None)
