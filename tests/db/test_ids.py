"""Identifiers: a type prefix, then a 26-character ULID that sorts by creation time."""

from __future__ import annotations

import re
import time
from types import SimpleNamespace

import pytest

from tidings.db import ids
from tidings.db.ids import new_id

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")


def decode(ulid: str) -> int:
    value = 0
    for char in ulid:
        value = value * 32 + CROCKFORD.index(char)
    return value


def millis(identifier: str) -> int:
    return decode(identifier.split("_", 1)[1]) >> 80


@pytest.mark.parametrize("prefix", ["ntf", "evt", "job", "key"])
def test_ids_are_prefixed_ulids(prefix: str) -> None:
    identifier = new_id(prefix)
    head, _, tail = identifier.partition("_")
    assert head == prefix
    assert len(tail) == 26
    assert ULID.match(tail), identifier


def test_ids_carry_the_creation_time_in_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    identifier = new_id("ntf")
    after = time.time_ns() // 1_000_000
    assert before <= millis(identifier) <= after


def test_ten_thousand_ids_are_unique() -> None:
    identifiers = [new_id("ntf") for _ in range(10_000)]
    assert len(set(identifiers)) == 10_000
    assert all(ULID.match(i.split("_", 1)[1]) for i in identifiers)


def fixed_clock(monkeypatch: pytest.MonkeyPatch, ms: int, random_byte: int) -> None:
    monkeypatch.setattr(ids, "time", SimpleNamespace(time_ns=lambda: ms * 1_000_000 + 999_999))
    monkeypatch.setattr(ids, "os", SimpleNamespace(urandom=lambda n: bytes([random_byte]) * n))


def test_ids_sort_by_creation_time_across_milliseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    # The worst case: the earlier id has the largest random part, the later the smallest.
    created = []
    for ms, random_byte in [
        (1_763_719_200_000, 0xFF),
        (1_763_719_200_001, 0x00),
        (1_763_719_201_000, 0xFF),
        (1_863_719_201_000, 0x00),
    ]:
        fixed_clock(monkeypatch, ms, random_byte)
        created.append(new_id("ntf"))
    assert sorted(created) == created
    assert len(set(created)) == len(created)
    assert [millis(i) for i in created] == [
        1_763_719_200_000,
        1_763_719_200_001,
        1_763_719_201_000,
        1_863_719_201_000,
    ]


def test_the_random_part_fills_the_last_eighty_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    fixed_clock(monkeypatch, 0, 0xFF)
    assert new_id("x") == "x_" + "0" * 10 + "Z" * 16
    fixed_clock(monkeypatch, 1, 0x00)
    assert new_id("x") == "x_" + "0" * 9 + "1" + "0" * 16
