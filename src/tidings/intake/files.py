"""ERP/WMS files: CSV or JSON Lines to canonical events, one line at a time.

JSON Lines: each line is a CloudEvent (structured mode), or a flat record like a CSV row.
CSV: a header row; each row becomes one event. The type comes from a ``type`` column
when present, otherwise from the columns:

- ``sku, available[, location, restock_eta]``  -> inventory.level_changed
- ``sku, restock_eta`` (no available)          -> inventory.restock_eta_changed
- ``return_id, order_id, status, ...``         -> return.status_changed

Event ids come from an ``id`` column, or else:

- stock rows (levels and restock dates) are snapshots, so the same content on another day
  is news (5, then 0, then 5 again): the id covers the row's own timestamp column
  (``occurred_at``, ``time``, ``updated_at`` or ``as_of``), or, without one, the time of
  the import and the line number. Importing a file again is then stored again (which
  changes nothing while the levels are the same), while one import that retries its lines
  stores each once.
- return rows are statuses, and a status told again is the same news: the id comes from
  the row's content, so importing the same returns twice stores nothing new.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tidings.db.types import utcnow
from tidings.events.envelope import EventError
from tidings.intake.cloudevents_http import Item, parse_document

INTEGER_FIELDS = frozenset({"available", "quantity", "amount", "total"})
LIST_FIELDS = frozenset({"lines"})
# Columns that say when a row's stock figure was true, in order of preference.
STAMP_FIELDS = ("occurred_at", "time", "updated_at", "as_of")


@dataclass(frozen=True, slots=True)
class Line:
    number: int
    item: Item


def read_lines(
    text: str, *, file_format: str, source: str, imported_at: datetime | None = None
) -> Iterator[Line]:
    """Items for every data line of a file; bad lines come back as refused items.

    ``imported_at`` (default: now) tells this import apart from another one of the same
    stock rows; pass the same value to read a file again within one import."""
    run = (imported_at or utcnow()).isoformat()
    if file_format == "jsonl":
        for number, raw in enumerate(text.splitlines(), start=1):
            if raw.strip():
                yield Line(number, _from_json(number, raw, source, run))
        return
    reader = csv.DictReader(io.StringIO(text))
    for number, row in enumerate(reader, start=2):  # line 1 is the header
        record = {
            k.strip(): (v.strip() if isinstance(v, str) else v)
            for k, v in row.items()
            if k is not None
        }
        yield Line(number, _record_item(number, record, source, run, raw=_csv_line(row)))


def _csv_line(row: dict[str, Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(row.values())
    return buffer.getvalue().strip()


def _from_json(number: int, raw: str, source: str, run: str) -> Item:
    try:
        document = json.loads(raw)
    except ValueError as exc:
        return refused(number, raw, "invalid_json", f"line {number} is not JSON: {exc}")
    if isinstance(document, dict) and "specversion" in document:
        return parse_document(number, document)
    if not isinstance(document, dict):
        return refused(number, raw, "invalid_record", f"line {number} is not a JSON object")
    return _record_item(number, document, source, run, raw=raw)


def _record_item(number: int, record: dict[str, Any], source: str, run: str, *, raw: str) -> Item:
    event_type = record.pop("type", None) or _infer_type(record)
    if event_type is None:
        return refused(
            number,
            raw,
            "unknown_record",
            f"line {number}: cannot tell the event type from the columns "
            f"{', '.join(sorted(record))}; add a 'type' column",
        )
    explicit_id = record.pop("id", None)
    data = {k: _value(k, v) for k, v in record.items() if v not in ("", None)}
    identity: list[Any] = [event_type, data]
    snapshot = isinstance(event_type, str) and event_type.startswith("inventory.")
    if snapshot and not any(data.get(f) for f in STAMP_FIELDS):
        identity += [run, number]
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    document = {
        "specversion": "1.0",
        "id": str(explicit_id or f"{event_type}/{digest[:32]}"),
        "source": source,
        "type": event_type,
        "time": data.pop("occurred_at", None) or data.get("time"),
        "data": data,
    }
    if document["time"] is None:
        del document["time"]
    return parse_document(number, document)


def _infer_type(record: dict[str, Any]) -> str | None:
    if "sku" in record and record.get("available") not in (None, ""):
        return "inventory.level_changed"
    if "sku" in record and record.get("restock_eta"):
        return "inventory.restock_eta_changed"
    if {"return_id", "order_id", "status"} <= record.keys():
        return "return.status_changed"
    return None


def _value(name: str, value: Any) -> Any:
    if isinstance(value, str) and name in INTEGER_FIELDS:
        try:
            return int(value)
        except ValueError:
            return value  # validation reports it with the field name
    if isinstance(value, str) and name in LIST_FIELDS:
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def refused(number: int, raw: str, code: str, detail: str) -> Item:
    return Item(number, None, EventError(code, detail), raw, None)
