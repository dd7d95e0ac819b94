"""The stock decisions on their own: when a SKU is out, when it is back, how many a wave
may tell."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from tidings.engine.inventory import BACKORDERED, IN_STOCK, transition, wave_size


@given(
    threshold=st.integers(-3, 10),
    levels=st.lists(st.integers(-5, 20), min_size=1, max_size=40),
)
def test_a_sku_goes_out_at_or_under_its_threshold_and_back_only_above_it(
    threshold: int, levels: list[int]
) -> None:
    state: str | None = None
    for units in levels:
        following = transition(state, units, threshold)
        if following == BACKORDERED:
            assert units <= threshold
        if following == IN_STOCK:
            assert state == BACKORDERED
            assert units > threshold
        state = following or state
        # Whatever came before, the state always matches the last level.
        assert (state == BACKORDERED) == (units <= threshold)


@given(st.lists(st.integers(0, 5), min_size=1, max_size=40))
def test_hovering_under_the_threshold_is_one_backorder(levels: list[int]) -> None:
    changes = [transition(BACKORDERED, units, 5) for units in levels]
    assert changes == [None] * len(levels)


@given(
    available=st.integers(-5, 50),
    threshold=st.integers(0, 5),
    multiple=st.floats(0.5, 4),
    told=st.integers(0, 100),
)
def test_a_restock_never_tells_more_than_the_multiple_of_what_is_there(
    available: int, threshold: int, multiple: float, told: int
) -> None:
    size = wave_size(available=available, threshold=threshold, multiple=multiple, told=told)
    assert size >= 0
    if size:
        assert available > max(threshold, 0)
        assert told + size <= math.floor(multiple * available)
