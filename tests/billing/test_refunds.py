"""Refund decisions: the state machine, approvals, and exact line-item amounts."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.billing.support import NOW
from tidings.billing.errors import BillingError
from tidings.billing.refunds import (
    ACTIONS,
    STATES,
    TRANSITIONS,
    LineItemRefund,
    OrderAmounts,
    OrderLine,
    add_approval,
    holds_amount,
    line_item_refund,
    transition,
)

HAPPY_PATH = [
    ("requested", "await_approval", "pending_approval"),
    ("pending_approval", "approve", "approved"),
    ("approved", "submit", "submitted"),
    ("submitted", "authorize", "authorized"),
    ("authorized", "succeed", "succeeded"),
    ("succeeded", "fail", "reversed"),
]


@pytest.mark.parametrize(("state", "action", "after"), HAPPY_PATH)
def test_the_designed_path(state: str, action: str, after: str) -> None:
    assert transition(state, action) == after


@pytest.mark.parametrize("state", ["requested", "pending_approval", "approved"])
def test_cancel_is_allowed_only_before_submission(state: str) -> None:
    assert transition(state, "cancel") == "canceled"


@pytest.mark.parametrize("state", ["submitted", "authorized", "succeeded"])
def test_cancel_after_submission_is_refused(state: str) -> None:
    with pytest.raises(BillingError) as raised:
        transition(state, "cancel")
    assert raised.value.code == "illegal_transition"
    assert state in raised.value.detail


def test_every_other_move_is_illegal_with_a_stable_code() -> None:
    for state in STATES:
        for action in ACTIONS:
            if (state, action) in TRANSITIONS:
                continue
            with pytest.raises(BillingError) as raised:
                transition(state, action)
            assert raised.value.code == "illegal_transition"


@pytest.mark.parametrize("state", ["rejected", "canceled", "failed", "reversed"])
def test_final_states_release_the_amount_and_allow_nothing(state: str) -> None:
    assert not holds_amount(state)
    with pytest.raises(BillingError, match="final state"):
        transition(state, "approve")


def test_an_unknown_state_is_named() -> None:
    with pytest.raises(BillingError, match="'lost' is not a refund state"):
        transition("lost", "approve")


def test_approvals_need_distinct_people_other_than_the_requester() -> None:
    approvals, enough = add_approval([], actor="bob", requested_by="alice", needed=2, at=NOW)
    assert not enough
    with pytest.raises(BillingError) as raised:
        add_approval(approvals, actor="bob", requested_by="alice", needed=2, at=NOW)
    assert raised.value.code == "duplicate_approval"
    with pytest.raises(BillingError) as raised:
        add_approval(approvals, actor="alice", requested_by="alice", needed=2, at=NOW)
    assert raised.value.code == "self_approval"
    approvals, enough = add_approval(
        approvals, actor="carol", requested_by="alice", needed=2, at=NOW
    )
    assert enough
    assert [a["actor"] for a in approvals] == ["bob", "carol"]


# --- Line items -------------------------------------------------------------------------

LAMP = OrderAmounts(
    lines=(OrderLine("LAMP-01", 8900, 1, 1780), OrderLine("BULB-4", 500, 3, 100)),
    shipping=600,
    shipping_tax=120,
)


def test_tax_of_three_units_is_shared_33_34_33() -> None:
    # 100 of tax over 3 bulbs: cumulative round(100/3)=33, round(200/3)=67, 100.
    taxes = []
    done = 0
    for _ in range(3):
        refund = line_item_refund(LAMP, already={"BULB-4": done}, selected={"BULB-4": 1})
        taxes.append(refund.tax)
        done += 1
    assert taxes == [33, 34, 33]


def test_shipping_follows_the_goods_value_refunded() -> None:
    # The lamp is 8900 of 10400 goods: shipping 600 * 8900/10400 = 513.46 → 513,
    # shipping tax 120 * 8900/10400 = 102.69 → 103.
    refund = line_item_refund(LAMP, already={}, selected={"LAMP-01": 1})
    assert refund == LineItemRefund(goods=8900, tax=1780, shipping=513, shipping_tax=103)
    rest = line_item_refund(LAMP, already={"LAMP-01": 1}, selected={"BULB-4": 3})
    assert refund.total + rest.total == LAMP.total


@pytest.mark.parametrize(
    ("already", "selected", "code"),
    [
        ({}, {"BULB-4": 4}, "line_quantity_exceeds_remaining"),
        ({"BULB-4": 3}, {"BULB-4": 1}, "line_quantity_exceeds_remaining"),
        ({}, {"BULB-4": 0}, "line_quantity_exceeds_remaining"),
        ({}, {"SOFA": 1}, "unknown_line"),
    ],
)
def test_selections_beyond_the_order_are_refused(
    already: dict[str, int], selected: dict[str, int], code: str
) -> None:
    with pytest.raises(BillingError) as raised:
        line_item_refund(LAMP, already=already, selected=selected)
    assert raised.value.code == code


@st.composite
def orders_and_refund_plans(draw: st.DrawFn) -> tuple[OrderAmounts, list[dict[str, int]]]:
    count = draw(st.integers(1, 4))
    lines = tuple(
        OrderLine(
            f"SKU-{i}",
            draw(st.integers(0, 50_000)),
            draw(st.integers(1, 7)),
            draw(st.integers(0, 9_999)),
        )
        for i in range(count)
    )
    order = OrderAmounts(lines, draw(st.integers(0, 2_000)), draw(st.integers(0, 500)))
    # Every unit of every line, refunded over a random number of partial refunds.
    units = [line.key for line in lines for _ in range(line.quantity)]
    units = draw(st.permutations(units))
    cuts = (
        sorted(draw(st.sets(st.integers(1, len(units) - 1), max_size=6))) if len(units) > 1 else []
    )
    plans = []
    for start, end in zip([0, *cuts], [*cuts, len(units)], strict=True):
        plan: dict[str, int] = {}
        for key in units[start:end]:
            plan[key] = plan.get(key, 0) + 1
        plans.append(plan)
    return order, plans


@settings(max_examples=200, deadline=None)
@given(orders_and_refund_plans())
def test_partial_refunds_over_all_lines_sum_exactly_to_the_total(
    case: tuple[OrderAmounts, list[dict[str, int]]],
) -> None:
    order, plans = case
    already: dict[str, int] = {}
    refunded = LineItemRefund(0, 0, 0, 0)
    goods_done = 0
    for plan in plans:
        refund = line_item_refund(order, already=already, selected=plan)
        for key, count in plan.items():
            already[key] = already.get(key, 0) + count
        for part in (refund.goods, refund.tax, refund.shipping, refund.shipping_tax):
            assert part >= 0
        refunded = LineItemRefund(
            refunded.goods + refund.goods,
            refunded.tax + refund.tax,
            refunded.shipping + refund.shipping,
            refunded.shipping_tax + refund.shipping_tax,
        )
        # Cumulative rounding: what has been refunded so far is within half a minor
        # unit of the exact proportion, per line for tax and over the order for shipping.
        goods_done += refund.goods
        if order.goods:
            exact = Fraction(order.shipping * goods_done, order.goods)
            assert abs(refunded.shipping - exact) <= Fraction(1, 2)
        exact_tax = sum(
            Fraction(line.tax * already.get(line.key, 0), line.quantity) for line in order.lines
        )
        assert abs(refunded.tax - exact_tax) <= Fraction(len(order.lines), 2)
    assert refunded.total == order.total
    assert refunded.tax == sum(line.tax for line in order.lines)
    assert refunded.shipping == order.shipping
    assert refunded.shipping_tax == order.shipping_tax
