"""The refund approval policy: thresholds per currency, the fail-safe default, its settings."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.billing.approvals import (
    UNCONFIGURED_APPROVALS,
    ApprovalPolicy,
    ApprovalPolicyError,
    ApprovalThresholds,
)

EXAMPLE = {
    "EUR": {"auto_approve_up_to": 5000, "second_approver_above": 50000},
    "default": {"auto_approve_up_to": 1000, "second_approver_above": 20000},
}

amounts = st.integers(min_value=0, max_value=10**12)
currencies = st.from_regex(r"[A-Z]{3}", fullmatch=True)


@st.composite
def thresholds(draw: st.DrawFn) -> ApprovalThresholds:
    low = draw(st.integers(min_value=0, max_value=10**9))
    high = draw(st.integers(min_value=low, max_value=10**10))
    return ApprovalThresholds(auto_approve_up_to=low, second_approver_above=high)


@st.composite
def policies(draw: st.DrawFn) -> ApprovalPolicy:
    by_currency = draw(st.dictionaries(currencies, thresholds(), max_size=4))
    default = draw(st.none() | thresholds())
    return ApprovalPolicy(by_currency=by_currency, default=default)


# ------------------------------------------------------------------ the rule


@pytest.mark.parametrize(
    ("amount", "needed"),
    [(1, 0), (5000, 0), (5001, 1), (50000, 1), (50001, 2)],
)
def test_each_threshold_is_inclusive_below_and_adds_an_approver_above(
    amount: int, needed: int
) -> None:
    policy = ApprovalPolicy.from_settings(json.dumps(EXAMPLE))
    assert policy.approvals_needed(amount, "EUR") == needed


def test_a_currency_without_its_own_entry_uses_the_default() -> None:
    policy = ApprovalPolicy.from_settings(EXAMPLE)
    assert policy.approvals_needed(1000, "USD") == 0
    assert policy.approvals_needed(1001, "USD") == 1
    assert policy.approvals_needed(20001, "USD") == 2
    # The EUR entry is not the default: 1001 EUR cents are still auto-approved.
    assert policy.approvals_needed(1001, "EUR") == 0


def test_without_a_default_an_unconfigured_currency_always_needs_one_approval() -> None:
    policy = ApprovalPolicy.from_settings({"EUR": EXAMPLE["EUR"]})
    assert UNCONFIGURED_APPROVALS == 1
    for amount in (1, 5000, 10**9):
        assert policy.approvals_needed(amount, "JPY") == 1


def test_an_empty_policy_needs_one_approval_for_everything() -> None:
    for raw in (None, "", "  ", "{}"):
        assert ApprovalPolicy.from_settings(raw).approvals_needed(1, "EUR") == 1


def test_the_currency_of_a_refund_is_looked_up_without_regard_to_case() -> None:
    policy = ApprovalPolicy.from_settings({"EUR": EXAMPLE["EUR"]})
    assert policy.approvals_needed(50001, "eur") == 2


def test_equal_thresholds_go_from_none_to_two_approvals() -> None:
    same = ApprovalThresholds(auto_approve_up_to=100, second_approver_above=100)
    assert same.approvals_needed(100) == 0
    assert same.approvals_needed(101) == 2


@pytest.mark.parametrize("amount", [-1, True, 1.5])
def test_an_amount_that_is_not_whole_minor_units_is_refused(amount: Any) -> None:
    policy = ApprovalPolicy.from_settings(EXAMPLE)
    with pytest.raises(ValueError, match="minor units"):
        policy.approvals_needed(amount, "EUR")
    with pytest.raises(ValueError, match="minor units"):
        policy.approvals_needed(amount, "CHF")
    with pytest.raises(ValueError, match="minor units"):
        ApprovalPolicy().approvals_needed(amount, "EUR")


# ------------------------------------------------------------------ properties


@given(policies(), currencies, amounts, amounts)
def test_more_money_never_needs_fewer_approvals(
    policy: ApprovalPolicy, currency: str, a: int, b: int
) -> None:
    low, high = sorted((a, b))
    assert policy.approvals_needed(low, currency) <= policy.approvals_needed(high, currency)


@given(policies(), currencies, amounts)
def test_approvals_needed_is_between_none_and_two(
    policy: ApprovalPolicy, currency: str, amount: int
) -> None:
    assert 0 <= policy.approvals_needed(amount, currency) <= 2


@given(thresholds(), amounts)
def test_approvals_needed_counts_the_thresholds_the_amount_is_above(
    limits: ApprovalThresholds, amount: int
) -> None:
    above = sum(
        1 for limit in (limits.auto_approve_up_to, limits.second_approver_above) if amount > limit
    )
    assert limits.approvals_needed(amount) == above


@given(policies())
def test_settings_written_out_read_back_to_the_same_policy(policy: ApprovalPolicy) -> None:
    text = json.dumps(policy.as_settings())
    assert ApprovalPolicy.from_settings(text) == policy


@given(policies(), currencies, amounts)
def test_an_unconfigured_currency_is_never_auto_approved_without_a_default(
    policy: ApprovalPolicy, currency: str, amount: int
) -> None:
    if currency not in policy.by_currency and policy.default is None:
        assert policy.approvals_needed(amount, currency) == 1


# ------------------------------------------------------------------ settings errors


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ('{"EUR": {"auto_approve_up_to": 5000,}}', "not valid JSON"),
        ("[1, 2]", "JSON object keyed by currency"),
        ({"eur": EXAMPLE["EUR"]}, "ISO 4217 currency code in capitals"),
        ({"Euro": EXAMPLE["EUR"]}, "'Euro' is neither"),
        ({"EUR": 5000}, "EUR: must be an object"),
        (
            {"EUR": {"auto_approve_upto": 1, "second_approver_above": 2}},
            "unknown field\\(s\\) auto_approve_upto",
        ),
        ({"EUR": {"auto_approve_up_to": 1}}, "EUR: missing second_approver_above"),
        ({"default": {}}, "default: missing auto_approve_up_to and second_approver_above"),
        (
            {"EUR": {"auto_approve_up_to": "50.00", "second_approver_above": 2}},
            "EUR: auto_approve_up_to must be a whole, non-negative number of minor units",
        ),
        (
            {"EUR": {"auto_approve_up_to": 50.5, "second_approver_above": 100}},
            "auto_approve_up_to must be a whole",
        ),
        (
            {"EUR": {"auto_approve_up_to": 5, "second_approver_above": True}},
            "second_approver_above must be a whole",
        ),
        (
            {"EUR": {"auto_approve_up_to": -1, "second_approver_above": 2}},
            "auto_approve_up_to must be a whole, non-negative",
        ),
        (
            {"GBP": {"auto_approve_up_to": 500, "second_approver_above": 400}},
            "GBP: second_approver_above \\(400\\) must be at least auto_approve_up_to \\(500\\)",
        ),
    ],
)
def test_invalid_settings_say_what_to_fix(raw: Any, says: str) -> None:
    with pytest.raises(ApprovalPolicyError, match=says) as caught:
        ApprovalPolicy.from_settings(raw)
    assert caught.value.code == "invalid_approval_policy"


def test_a_policy_built_in_code_checks_its_currency_codes() -> None:
    limits = ApprovalThresholds(auto_approve_up_to=1, second_approver_above=2)
    with pytest.raises(ApprovalPolicyError, match="'usd' is neither"):
        ApprovalPolicy(by_currency={"usd": limits})


def test_a_policy_cannot_be_changed_once_built() -> None:
    limits = ApprovalThresholds(auto_approve_up_to=1, second_approver_above=2)
    source = {"EUR": limits}
    policy = ApprovalPolicy(by_currency=source)
    source["USD"] = limits
    assert "USD" not in policy.by_currency
    with pytest.raises(TypeError):
        policy.by_currency["USD"] = limits  # type: ignore[index]
