"""Shared builders for the template tests."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

KIND = "refund_authorized"
NBSP = "\u00a0"


def make_context(name: str | None = "Ana", **data: Any) -> dict[str, Any]:
    """A refund_authorized render context as the worker builds it."""
    event_data: dict[str, Any] = {
        "order_id": "1042",
        "refund_id": "re_1",
        "payment_id": "pay_1",
        "amount": 1250,
        "currency": "EUR",
        "reason_code": "requested_by_customer",
        "method": "card",
        "authorized_at": "2026-11-21T10:00:00+00:00",
    }
    event_data.update(data)
    return {
        "recipient": {"name": name, "email": "ana@example.test", "locale": "en", "time_zone": None},
        "order": {"id": "ord_9", "number": "1042"},
        "data": event_data,
        "event": {"id": "ev_1", "type": KIND, "time": datetime(2026, 11, 21, 10, tzinfo=UTC)},
        "store": {"name": "Acme & Co", "support_email": "help@acme.test"},
    }


def write(directory: Path, name: str, text: str, kind: str = KIND) -> Path:
    """Write ``directory/kind/name``; ``kind`` may also be ``_layouts``."""
    path = directory / kind / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
