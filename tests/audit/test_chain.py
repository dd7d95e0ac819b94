"""The audit chain: appends link up, verify accepts an intact chain and finds any tampering."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, delete, select, text, update

from tidings.audit.chain import (
    GENESIS_HASH,
    AuditEntry,
    Verification,
    append,
    entry_hash,
    verify,
)
from tidings.db.schema import audit_head, audit_log

AT = datetime(2026, 11, 21, 10, 0, 0, 123456, tzinfo=UTC)


def entry(n: int, **detail: Any) -> AuditEntry:
    return AuditEntry(
        actor=f"key:{n % 3}",
        action="notification.planned",
        subject_type="notification",
        subject_id=f"ntf_{n:04d}",
        detail={"rule": "refund-authorized", "n": n, **detail},
    )


def append_batches(engine: Engine, batches: Sequence[Sequence[AuditEntry]]) -> None:
    for i, batch in enumerate(batches):
        with engine.begin() as conn:
            append(conn, batch, at=AT + timedelta(seconds=i))


def check(engine: Engine, **kwargs: Any) -> Verification:
    with engine.connect() as conn:
        return verify(conn, **kwargs)


def reset_chain(conn: Connection) -> None:
    conn.execute(delete(audit_log))
    conn.execute(update(audit_head).where(audit_head.c.id == 1).values(seq=0, hash=GENESIS_HASH))


@pytest.fixture
def five(engine: Engine) -> Engine:
    """A chain of five entries written in three transactions."""
    append_batches(engine, [[entry(1), entry(2)], [entry(3)], [entry(4), entry(5)]])
    return engine


def test_an_empty_chain_verifies(engine: Engine) -> None:
    result = check(engine)
    assert result.ok
    assert result.entries == 0
    assert result.first_bad_seq is None


def test_appending_nothing_changes_nothing(engine: Engine) -> None:
    with engine.begin() as conn:
        append(conn, [])
    with engine.connect() as conn:
        assert conn.execute(select(audit_log.c.seq)).all() == []
        head = conn.execute(select(audit_head.c.seq, audit_head.c.hash)).one()
    assert (head.seq, head.hash) == (0, GENESIS_HASH)


def test_entries_from_several_transactions_form_one_chain(five: Engine) -> None:
    result = check(five)
    assert result == Verification(entries=5, ok=True)

    with five.connect() as conn:
        rows = conn.execute(select(audit_log).order_by(audit_log.c.seq)).all()
        head = conn.execute(select(audit_head.c.seq, audit_head.c.hash)).one()
    assert [row.seq for row in rows] == [1, 2, 3, 4, 5]
    assert [row.subject_id for row in rows] == [f"ntf_{n:04d}" for n in range(1, 6)]
    assert rows[0].prev_hash == GENESIS_HASH
    for before, after in pairwise(rows):
        assert after.prev_hash == before.hash
    assert len({row.hash for row in rows}) == 5
    assert all(len(row.hash) == 64 and int(row.hash, 16) >= 0 for row in rows)
    assert (head.seq, head.hash) == (5, rows[-1].hash)
    assert rows[2].at == AT + timedelta(seconds=1)
    assert json.loads(rows[2].detail) == {"rule": "refund-authorized", "n": 3}


def test_verify_walks_the_chain_page_by_page(five: Engine) -> None:
    assert check(five, page=2) == Verification(entries=5, ok=True)


def test_a_changed_detail_is_found(five: Engine) -> None:
    with five.begin() as conn:
        conn.execute(
            update(audit_log)
            .where(audit_log.c.seq == 3)
            .values(detail=json.dumps({"rule": "refund-authorized", "n": 333}))
        )
    result = check(five)
    assert not result.ok
    assert result.first_bad_seq == 3
    assert result.entries == 2


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("actor", "someone-else"),
        ("action", "notification.suppressed"),
        ("subject_type", "event"),
        ("subject_id", "ntf_9999"),
    ],
)
def test_a_changed_column_is_found(five: Engine, column: str, value: str) -> None:
    with five.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 2).values({column: value}))
    result = check(five)
    assert (result.ok, result.first_bad_seq) == (False, 2)


def test_a_changed_timestamp_is_found(five: Engine) -> None:
    with five.begin() as conn:
        conn.execute(
            update(audit_log).where(audit_log.c.seq == 4).values(at=AT + timedelta(days=1))
        )
    result = check(five)
    assert (result.ok, result.first_bad_seq) == (False, 4)


def test_a_change_is_found_on_a_later_page(five: Engine) -> None:
    with five.begin() as conn:
        conn.execute(text("UPDATE audit_log SET actor = 'x' WHERE seq = 5"))
    result = check(five, page=2)
    assert (result.ok, result.first_bad_seq, result.entries) == (False, 5, 4)


def test_a_deleted_middle_entry_is_found(five: Engine) -> None:
    with five.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq = 3"))
    result = check(five)
    assert not result.ok
    assert result.entries == 2
    # The first bad seq is the missing entry itself, as for a deleted tail.
    assert result.first_bad_seq == 3


def test_a_deleted_first_entry_is_found(five: Engine) -> None:
    with five.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq = 1"))
    result = check(five)
    assert not result.ok
    assert result.entries == 0
    assert result.first_bad_seq == 1


def test_a_deleted_last_entry_is_found(five: Engine) -> None:
    with five.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq = 5"))
    result = check(five)
    assert not result.ok
    assert result.entries == 4
    assert result.first_bad_seq == 5


def test_a_deleted_tail_with_a_rewound_head_is_still_found(five: Engine) -> None:
    # Only the head's seq is rewound: its hash still names the removed entry.
    with five.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq = 5"))
        conn.execute(text("UPDATE audit_head SET seq = 4"))
    result = check(five)
    assert (result.ok, result.first_bad_seq) == (False, 5)


CONTENT = ("at", "actor", "action", "subject_type", "subject_id", "detail")


@pytest.mark.parametrize(
    "columns",
    [CONTENT, (*CONTENT, "prev_hash", "hash")],
    ids=["content-only", "whole-rows"],
)
def test_two_swapped_entries_are_found(five: Engine, columns: tuple[str, ...]) -> None:
    with five.begin() as conn:
        rows = {
            row.seq: row
            for row in conn.execute(select(audit_log).where(audit_log.c.seq.in_([2, 4])))
        }
        for seq, other in ((2, 4), (4, 2)):
            values = {name: getattr(rows[other], name) for name in columns}
            conn.execute(update(audit_log).where(audit_log.c.seq == seq).values(**values))
    result = check(five)
    assert not result.ok
    assert result.first_bad_seq == 2
    assert result.entries == 1


def test_a_rewritten_last_entry_with_a_matching_hash_is_found_through_the_head(
    five: Engine,
) -> None:
    """A forger who rehashes the entry they changed still has to move the head."""
    with five.begin() as conn:
        row = conn.execute(select(audit_log).where(audit_log.c.seq == 5)).one()
        forged = AuditEntry("forger", row.action, row.subject_type, row.subject_id)
        digest = entry_hash(row.prev_hash, 5, row.at, forged, row.detail)
        conn.execute(
            update(audit_log).where(audit_log.c.seq == 5).values(actor="forger", hash=digest)
        )
    result = check(five)
    assert not result.ok
    assert result.first_bad_seq is not None


def test_entries_appended_at_a_non_utc_time_verify(engine: Engine) -> None:
    """``append`` takes any aware datetime; the stored (UTC) time must hash the same."""
    paris = datetime(2026, 5, 1, 12, 0, 0, 500, tzinfo=ZoneInfo("Europe/Paris"))
    with engine.begin() as conn:
        append(conn, [entry(1)], at=paris)
    with engine.begin() as conn:
        append(conn, [entry(2)], at=datetime(2026, 5, 1, 8, tzinfo=timezone(timedelta(hours=-4))))
    assert check(engine) == Verification(entries=2, ok=True)


@pytest.mark.parametrize("number", [1e20, 1.5e300, 0.1, 2.5, -0.0])
def test_float_details_verify(engine: Engine, number: float) -> None:
    """Details are JSON; whatever the database gives back must hash as it was written."""
    with engine.begin() as conn:
        append(conn, [entry(1, value=number)], at=AT)
    assert check(engine) == Verification(entries=1, ok=True)


# Text the database can store: no NUL (PostgreSQL refuses it) and no lone surrogates.
_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**62), 2**62) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_entries = st.builds(
    AuditEntry,
    actor=_text.filter(bool),
    action=st.text("abcdefghijklmnopqrstuvwxyz._", min_size=1, max_size=64),
    subject_type=st.sampled_from(["event", "notification", "api_key", "customer"]),
    subject_id=_text.filter(bool),
    detail=st.dictionaries(_text, _json, max_size=4),
)


@st.composite
def _batches(draw: st.DrawFn) -> list[list[AuditEntry]]:
    entries = draw(st.lists(_entries, max_size=12))
    cuts = sorted(draw(st.lists(st.integers(0, len(entries)), max_size=4)))
    bounds = [0, *cuts, len(entries)]
    return [entries[a:b] for a, b in pairwise(bounds)]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=_batches(), page=st.integers(1, 6))
def test_any_appended_chain_verifies(
    engine: Engine, batches: list[list[AuditEntry]], page: int
) -> None:
    with engine.begin() as conn:
        reset_chain(conn)
    append_batches(engine, batches)
    total = sum(len(batch) for batch in batches)
    assert check(engine, page=page) == Verification(entries=total, ok=True)
    with engine.connect() as conn:
        assert conn.execute(select(audit_head.c.seq)).scalar_one() == total
