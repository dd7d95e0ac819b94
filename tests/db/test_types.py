"""UTCDateTime: aware datetimes in, the same instant in UTC out, on every backend."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, Table, insert, select
from sqlalchemy.exc import StatementError

from tidings.db.types import UTCDateTime, utcnow

_metadata = MetaData()
moments = Table(
    "test_utc_datetime_moments",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("at", UTCDateTime),
)


@pytest.fixture
def table(engine: Engine) -> Iterator[Table]:
    _metadata.drop_all(engine, checkfirst=True)
    _metadata.create_all(engine)
    yield moments
    _metadata.drop_all(engine)


def store_and_load(engine: Engine, value: datetime | None) -> datetime | None:
    with engine.begin() as conn:
        conn.execute(insert(moments).values(id=1, at=value))
    with engine.connect() as conn:
        loaded: datetime | None = conn.execute(select(moments.c.at)).scalar_one()
    return loaded


@pytest.mark.parametrize(
    ("value", "utc"),
    [
        (
            datetime(2026, 11, 21, 11, 0, 0, 123456, tzinfo=ZoneInfo("Europe/Paris")),
            datetime(2026, 11, 21, 10, 0, 0, 123456, tzinfo=UTC),
        ),
        (
            datetime(2026, 7, 1, 19, 30, tzinfo=ZoneInfo("America/Chicago")),
            datetime(2026, 7, 2, 0, 30, tzinfo=UTC),
        ),
        (
            datetime(2026, 1, 1, 5, 45, tzinfo=timezone(timedelta(hours=5, minutes=45))),
            datetime(2026, 1, 1, 0, 0, tzinfo=UTC),
        ),
        (
            datetime(2026, 3, 29, 1, 0, 0, 1, tzinfo=UTC),
            datetime(2026, 3, 29, 1, 0, 0, 1, tzinfo=UTC),
        ),
    ],
    ids=["paris", "chicago-crosses-midnight", "kathmandu", "utc"],
)
def test_aware_datetimes_come_back_as_the_same_instant_in_utc(
    engine: Engine, table: Table, value: datetime, utc: datetime
) -> None:
    loaded = store_and_load(engine, value)
    assert loaded is not None
    assert loaded.utcoffset() == timedelta(0)
    assert loaded.replace(tzinfo=None) == utc.replace(tzinfo=None)
    assert loaded == value


def test_none_round_trips(engine: Engine, table: Table) -> None:
    assert store_and_load(engine, None) is None


def test_stored_times_compare_in_sql_by_instant(engine: Engine, table: Table) -> None:
    paris = ZoneInfo("Europe/Paris")
    rows = [
        {"id": 1, "at": datetime(2026, 11, 21, 10, 30, tzinfo=paris)},  # 09:30 UTC
        {"id": 2, "at": datetime(2026, 11, 21, 10, 0, tzinfo=UTC)},
        {
            "id": 3,
            "at": datetime(2026, 11, 21, 5, 0, tzinfo=ZoneInfo("America/Chicago")),
        },  # 11:00 UTC
    ]
    with engine.begin() as conn:
        conn.execute(insert(moments), rows)
    cutoff = datetime(2026, 11, 21, 11, 0, tzinfo=paris)  # 10:00 UTC
    with engine.connect() as conn:
        early = conn.scalars(select(moments.c.id).where(moments.c.at <= cutoff)).all()
        ordered = conn.scalars(select(moments.c.id).order_by(moments.c.at)).all()
    assert sorted(early) == [1, 2]
    assert list(ordered) == [1, 2, 3]


@pytest.mark.parametrize("value", [datetime(2026, 11, 21, 10, 0), "2026-11-21T10:00:00Z"])
def test_naive_datetimes_are_refused(engine: Engine, table: Table, value: object) -> None:
    with pytest.raises(StatementError) as info, engine.begin() as conn:
        conn.execute(insert(moments).values(id=1, at=value))
    assert isinstance(info.value.orig, ValueError)
    assert "aware" in str(info.value.orig)
    with engine.connect() as conn:
        assert conn.execute(select(moments.c.id)).all() == []


def test_utcnow_is_aware_utc() -> None:
    now = utcnow()
    assert now.utcoffset() == timedelta(0)


def test_a_sqlite_database_in_a_missing_folder_is_created(tmp_path: Path) -> None:
    from tidings.db.engine import create_disposable_engine
    from tidings.db.migrate import current_revision, head_revision, upgrade

    engine = create_disposable_engine(f"sqlite:///{tmp_path}/not/yet/there.db")
    upgrade(engine)
    with engine.connect() as conn:
        assert current_revision(conn) == head_revision()
    engine.dispose()
