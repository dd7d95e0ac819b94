"""`tidings import`: CSV and JSON Lines from an ERP/WMS, with a per-line report."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from tidings.cli import main
from tidings.db.schema import events, rejects, stock_levels
from tidings.intake.files import read_lines
from tidings.runtime import Runtime


@pytest.fixture
def cli(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("TIDINGS_DATABASE_URL", runtime.settings.database_url)
    return CliRunner()


def test_csv_stock_levels_with_a_bad_line(cli: CliRunner, runtime: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "stock.csv"
    path.write_text(
        "sku,location,available,restock_eta\n"
        "LAMP-01,lyon-1,4,\n"
        "BULB-4,lyon-1,many,\n"
        "SHADE-02,paris,0,2026-12-05\n"
    )
    result = cli.invoke(main, ["import", str(path)])
    assert result.exit_code == 1  # one line refused
    assert "2 accepted, 0 already imported, 1 refused" in result.output
    assert "data.available" in result.output
    with runtime.engine.connect() as conn:
        levels = dict(conn.execute(select(stock_levels.c.sku, stock_levels.c.available)).all())
        kept = conn.execute(select(rejects.c.channel, rejects.c.field)).all()
    assert levels == {"LAMP-01": 4, "SHADE-02": 0}
    assert [tuple(row) for row in kept] == [("import", "data.available")]

    # Stock rows without a timestamp are snapshots: imported again, they are news again.
    again = cli.invoke(main, ["import", str(path)])
    assert "2 accepted, 0 already imported, 1 refused" in again.output


def test_jsonl_returns_and_cloudevents(cli: CliRunner, runtime: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "returns.jsonl"
    lines = [
        {
            "return_id": "rma_7",
            "order_id": "1042",
            "status": "received",
            "lines": [{"sku": "BULB-4", "quantity": 1}],
        },
        {
            "specversion": "1.0",
            "id": "eta-1",
            "source": "wms",
            "type": "inventory.restock_eta_changed",
            "data": {"sku": "LAMP-01", "available": 0, "restock_eta": "2026-12-05"},
        },
        {"something": "else"},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    result = cli.invoke(main, ["import", str(path), "--source", "wms-lyon"])
    assert "2 accepted" in result.output
    assert "unknown_record" in result.output
    with runtime.engine.connect() as conn:
        stored = dict(conn.execute(select(events.c.type, events.c.source)).all())
    assert stored == {
        "return.status_changed": "import:wms-lyon",
        "inventory.restock_eta_changed": "wms",
    }

    # A return status told again is the same news; a CloudEvent keeps its own id.
    again = cli.invoke(main, ["import", str(path), "--source", "wms-lyon"])
    assert "0 accepted, 2 already imported" in again.output


def test_stock_back_where_it_was_on_a_later_import_is_news(
    cli: CliRunner, runtime: Runtime, tmp_path: Path
) -> None:
    path = tmp_path / "stock.csv"
    for units in (5, 0, 5):  # one file a day from the WMS
        path.write_text(f"sku,location,available\nLAMP-01,lyon-1,{units}\n")
        result = cli.invoke(main, ["import", str(path)])
        assert "1 accepted, 0 already imported, 0 refused" in result.output
    with runtime.engine.connect() as conn:
        levels = conn.execute(select(stock_levels.c.available)).scalars().all()
        kinds = conn.execute(select(events.c.type).order_by(events.c.received_at)).scalars().all()
    assert levels == [5]
    assert [k for k in kinds if k != "inventory.level_changed"] == [
        "inventory.backordered",
        "inventory.back_in_stock",
    ]


def test_stock_rows_with_their_own_timestamp_are_known_by_it(
    cli: CliRunner, tmp_path: Path
) -> None:
    path = tmp_path / "stock.csv"
    path.write_text("sku,location,available,updated_at\nLAMP-01,lyon-1,5,2026-11-23T08:00:00Z\n")
    assert "1 accepted" in cli.invoke(main, ["import", str(path)]).output
    assert "0 accepted, 1 already imported" in cli.invoke(main, ["import", str(path)]).output
    path.write_text("sku,location,available,updated_at\nLAMP-01,lyon-1,5,2026-11-24T08:00:00Z\n")
    assert "1 accepted" in cli.invoke(main, ["import", str(path)]).output


def test_one_import_read_again_gives_every_line_the_same_id() -> None:
    text = "sku,location,available\nLAMP-01,lyon-1,5\nLAMP-01,lyon-1,0\nLAMP-01,lyon-1,5\n"
    at = datetime(2026, 11, 23, 8, tzinfo=UTC)

    def ids(imported_at: datetime) -> list[str]:
        lines = read_lines(text, file_format="csv", source="import:erp", imported_at=imported_at)
        return [line.item.event.id for line in lines if line.item.event is not None]

    first = ids(at)
    assert len(set(first)) == 3  # the same figure later in the file is a later snapshot
    assert ids(at) == first  # a retry within the import
    assert set(ids(at + timedelta(days=1))).isdisjoint(first)  # another import
