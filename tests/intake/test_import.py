"""`tidings import`: CSV and JSON Lines from an ERP/WMS, with a per-line report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from tidings.cli import main
from tidings.db.schema import events, rejects, stock_levels
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

    again = cli.invoke(main, ["import", str(path)])
    assert "0 accepted, 2 already imported, 1 refused" in again.output


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
