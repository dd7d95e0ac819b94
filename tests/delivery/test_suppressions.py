"""The suppression list on a real database: who is blocked, which reason wins, what is
audited."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, select

from tidings.audit.chain import verify
from tidings.db.schema import audit_log, suppressions
from tidings.db.types import utcnow
from tidings.delivery.suppressions import (
    AUDIT_SUBJECT_MAX,
    get,
    lift,
    list_suppressions,
    normalize_address,
    reason_blocks,
    suppress,
    suppression_for,
)

EMAIL = "Camille.Durand@Example.FR"
PHONE = "+33612345678"


def audit_entries(engine: Engine) -> list[tuple[str, str, str]]:
    with engine.connect() as conn:
        assert verify(conn).ok
        rows = conn.execute(select(audit_log).order_by(audit_log.c.seq)).all()
    return [(row.actor, row.action, row.subject_id) for row in rows]


def test_an_email_bounce_blocks_the_address_however_it_is_written(engine: Engine) -> None:
    now = utcnow()
    with engine.begin() as conn:
        assert suppress(
            conn,
            channel="email",
            address=EMAIL,
            reason="hard_bounce",
            source="postmark",
            detail="HardBounce: 550 5.1.1",
            now=now,
        )
    with engine.connect() as conn:
        for critical in (True, False):
            why = suppression_for(
                conn, channel="email", address=" camille.durand@example.fr", critical=critical
            )
            assert why is not None
            assert "camille.durand@example.fr" in why
            assert "550 5.1.1" in why
        assert suppression_for(conn, channel="sms", address=EMAIL, critical=False) is None
        assert (
            suppression_for(conn, channel="email", address="other@example.fr", critical=False)
            is None
        )
    assert audit_entries(engine) == [
        ("provider:postmark", "suppression.added", "email:camille.durand@example.fr")
    ]


def test_the_same_suppression_twice_changes_nothing_and_is_audited_once(engine: Engine) -> None:
    first = utcnow()
    with engine.begin() as conn:
        assert suppress(
            conn,
            channel="sms",
            address=PHONE,
            reason="stop",
            source="twilio",
            detail=None,
            now=first,
        )
    with engine.begin() as conn:
        assert not suppress(
            conn,
            channel="sms",
            address=PHONE,
            reason="stop",
            source="twilio",
            detail=None,
            now=first + timedelta(hours=1),
        )
        row = get(conn, channel="sms", address=PHONE)
    assert row is not None
    assert row["created_at"] == first  # the first STOP is the one on record
    assert [action for _, action, _ in audit_entries(engine)] == ["suppression.added"]


@pytest.mark.parametrize(
    ("first", "second", "kept"),
    [
        ("hard_bounce", "stop", "stop"),  # the person's word replaces a bounce
        ("stop", "hard_bounce", "stop"),  # and a bounce never replaces it
        ("hard_bounce", "complaint", "complaint"),
        ("complaint", "hard_bounce", "complaint"),
    ],
)
def test_the_persons_own_choice_outranks_a_bounce(
    engine: Engine, first: str, second: str, kept: str
) -> None:
    now = utcnow()
    channel, address = ("email", EMAIL) if "complaint" in (first, second) else ("sms", PHONE)
    with engine.begin() as conn:
        for reason in (first, second):
            suppress(
                conn,
                channel=channel,
                address=address,
                reason=reason,  # type: ignore[arg-type]
                source="test",
                detail=reason,
                now=now,
            )
        row = get(conn, channel=channel, address=address)
    assert row is not None
    assert row["reason"] == kept
    added = [a for _, a, _ in audit_entries(engine)]
    assert added == ["suppression.added"] * (2 if kept == second else 1)


def test_lift_only_removes_the_reason_asked_for(engine: Engine) -> None:
    now = utcnow()
    with engine.begin() as conn:
        suppress(
            conn,
            channel="sms",
            address=PHONE,
            reason="hard_bounce",
            source="twilio",
            detail=None,
            now=now,
        )
        assert lift(conn, channel="sms", address=PHONE, only_reason="stop", now=now) is None
        assert get(conn, channel="sms", address=PHONE) is not None
        lifted = lift(conn, channel="sms", address=PHONE, actor="sam", now=now)
        assert lifted is not None
        assert lifted["reason"] == "hard_bounce"
        assert get(conn, channel="sms", address=PHONE) is None
        assert lift(conn, channel="sms", address=PHONE, now=now) is None
    assert [(actor, action) for actor, action, _ in audit_entries(engine)] == [
        ("provider:twilio", "suppression.added"),
        ("sam", "suppression.lifted"),
    ]


def test_every_reason_blocks_critical_messages_too() -> None:
    for reason in ("hard_bounce", "complaint", "stop", "some_future_reason"):
        assert reason_blocks(reason, critical=True)
        assert reason_blocks(reason, critical=False)


def test_a_very_long_address_fits_the_audit_subject(engine: Engine) -> None:
    address = "a" * 300 + "@example.com"
    with engine.begin() as conn:
        suppress(
            conn,
            channel="email",
            address=address,
            reason="complaint",
            source="postmark",
            detail=None,
            now=utcnow(),
        )
    [(_, _, subject)] = audit_entries(engine)
    assert len(subject) <= AUDIT_SUBJECT_MAX
    assert subject.startswith("email:sha256:")
    with engine.connect() as conn:
        assert suppression_for(conn, channel="email", address=address, critical=True)


def test_listing_is_newest_first_and_filters_by_channel(engine: Engine) -> None:
    now = utcnow()
    with engine.begin() as conn:
        suppress(
            conn,
            channel="email",
            address=EMAIL,
            reason="hard_bounce",
            source="postmark",
            detail=None,
            now=now,
        )
        suppress(
            conn,
            channel="sms",
            address=PHONE,
            reason="stop",
            source="twilio",
            detail=None,
            now=now + timedelta(seconds=1),
        )
        everything = list_suppressions(conn)
        sms_only = list_suppressions(conn, channel="sms")
        count = len(conn.execute(select(suppressions)).all())
    assert [row["channel"] for row in everything] == ["sms", "email"]
    assert [row["address"] for row in sms_only] == [PHONE]
    assert count == 2


def test_addresses_are_normalized_per_channel() -> None:
    assert normalize_address("email", " Jordan@Example.COM ") == "jordan@example.com"
    assert normalize_address("sms", " +15005550006 ") == "+15005550006"
