"""Decline codes sorted into hard (never retried) and soft (the retry policy applies)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.billing.gateways.declines import (
    HARD_DECLINES,
    SOFT_DECLINES,
    DeclineClassifier,
)
from tidings.billing.gateways.sandbox import SandboxGateway

classifier = DeclineClassifier()

# Codes the retry workflow must never retry, and ones it must (the billing requirements).
REQUIRED_HARD = [
    "stolen_card",
    "lost_card",
    "pickup_card",
    "fraudulent",
    "invalid_account",
    "invalid_number",
    "card_not_supported",
    "restricted_card",
]
REQUIRED_SOFT = [
    "insufficient_funds",
    "processing_error",
    "issuer_not_available",
    "try_again_later",
    "generic_decline",
    "reenter_transaction",
    "approve_with_id",
    "card_velocity_exceeded",
]

codes = st.sampled_from(sorted(HARD_DECLINES | SOFT_DECLINES)) | st.text(max_size=30)
histories = st.lists(st.none() | codes, max_size=6)


@pytest.mark.parametrize("code", REQUIRED_HARD)
def test_lost_stolen_fraud_and_dead_accounts_are_hard(code: str) -> None:
    assert classifier.category(code) == "hard"


@pytest.mark.parametrize("code", REQUIRED_SOFT)
def test_passing_issuer_and_funds_problems_are_soft(code: str) -> None:
    assert classifier.category(code) == "soft"


def test_no_code_is_both_hard_and_soft() -> None:
    assert not HARD_DECLINES & SOFT_DECLINES


def test_do_not_honor_turns_hard_after_two_earlier_ones_by_default() -> None:
    assert classifier.category("do_not_honor") == "soft"
    assert classifier.category("do_not_honor", earlier_codes=["do_not_honor"]) == "soft"
    assert (
        classifier.category("do_not_honor", earlier_codes=["do_not_honor", "do_not_honor"])
        == "hard"
    )


def test_only_earlier_do_not_honor_declines_count_towards_the_limit() -> None:
    earlier = ["insufficient_funds", "do_not_honor", None, "generic_decline"]
    assert classifier.category("do_not_honor", earlier_codes=earlier) == "soft"
    # And a history of them does not harden another soft code.
    assert classifier.category("insufficient_funds", earlier_codes=["do_not_honor"] * 5) == "soft"


@pytest.mark.parametrize("limit", [0, 1, 3])
def test_the_do_not_honor_limit_is_configurable(limit: int) -> None:
    configured = DeclineClassifier(do_not_honor_limit=limit)
    assert configured.category("do_not_honor", earlier_codes=["do_not_honor"] * limit) == "hard"
    if limit:
        before = ["do_not_honor"] * (limit - 1)
        assert configured.category("do_not_honor", earlier_codes=before) == "soft"


@pytest.mark.parametrize("limit", [-1, True, 2.0])
def test_a_limit_that_is_not_a_count_is_refused(limit: object) -> None:
    with pytest.raises(ValueError, match="count of earlier do_not_honor"):
        DeclineClassifier(do_not_honor_limit=limit)  # type: ignore[arg-type]


@pytest.mark.parametrize("code", [" Stolen_Card", "LOST_CARD\n", "Do_Not_Honor"])
def test_codes_compare_without_case_or_blanks(code: str) -> None:
    expected = "soft" if "honor" in code.lower() else "hard"
    assert classifier.category(code) == expected
    assert classifier.category(code, earlier_codes=["DO_NOT_HONOR ", "do_not_honor"]) == "hard"


@pytest.mark.parametrize("code", [None, "", "some_new_issuer_code", "05"])
def test_a_missing_or_unknown_code_is_soft(code: str | None) -> None:
    assert classifier.category(code) == "soft"


@given(st.text(max_size=40), histories)
def test_every_code_not_listed_hard_is_soft(code: str, earlier: list[str | None]) -> None:
    if code.strip().lower() not in HARD_DECLINES | {"do_not_honor"}:
        assert classifier.category(code, earlier_codes=earlier) == "soft"


@given(st.sampled_from(sorted(HARD_DECLINES)), histories)
def test_a_hard_code_is_hard_whatever_came_before(code: str, earlier: list[str | None]) -> None:
    assert classifier.category(code, earlier_codes=earlier) == "hard"


@given(codes, histories, st.integers(min_value=0, max_value=4))
def test_more_history_never_softens_a_verdict(
    code: str, earlier: list[str | None], limit: int
) -> None:
    configured = DeclineClassifier(do_not_honor_limit=limit)
    before = configured.category(code, earlier_codes=earlier)
    after = configured.category(code, earlier_codes=[*earlier, "do_not_honor"])
    assert not (before == "hard" and after == "soft")


def test_a_gateway_classifies_with_the_classifier_it_was_given() -> None:
    strict = SandboxGateway(declines=DeclineClassifier(do_not_honor_limit=0))
    assert strict.decline_category("do_not_honor") == "hard"
    lenient = SandboxGateway()
    assert lenient.decline_category("do_not_honor") == "soft"
    assert lenient.decline_category("stolen_card") == "hard"
    assert lenient.decline_category("do_not_honor", earlier_codes=["do_not_honor"] * 2) == "hard"
