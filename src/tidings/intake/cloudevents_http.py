"""CloudEvents over HTTP: structured, batch and binary content modes to canonical events.

HTTP binding: https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/http-protocol-binding.md
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tidings.events.envelope import CanonicalEvent, EventError, parse_binary, parse_structured

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


class RequestError(ValueError):
    """The request as a whole cannot be read (as opposed to one bad event in a batch)."""

    def __init__(self, status: int, code: str, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field
        self.reject_id: str | None = None  # set once the request is in the reject log


@dataclass(frozen=True, slots=True)
class Item:
    """One event of a request: parsed, or refused with the raw text kept for the reject log."""

    index: int
    event: CanonicalEvent | None
    error: EventError | None
    raw: str
    source: str | None


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse_request(
    content_type: str | None, headers: Mapping[str, str], body: bytes, *, max_batch: int
) -> tuple[bool, list[Item]]:
    """Returns (is_batch, items). Raises RequestError for an unreadable request."""
    media = media_type(content_type)
    is_binary = any(key.lower() == "ce-specversion" for key in headers)
    if media not in (STRUCTURED, BATCH) and not is_binary:
        raise RequestError(
            415,
            "unsupported_media_type",
            f"Content-Type '{media or 'none'}' is not accepted. Send {STRUCTURED}, {BATCH}, "
            "or JSON data with ce-* headers (binary mode).",
            field="Content-Type",
        )
    text = body.decode("utf-8", errors="replace")
    try:
        document: Any = json.loads(body) if body else None
    except ValueError as exc:
        raise RequestError(
            400, "invalid_json", f"The body is not valid JSON: {exc}. Fix the JSON and resend."
        ) from exc
    if media == BATCH:
        if not isinstance(document, list):
            raise RequestError(400, "invalid_batch", "A batch must be a JSON array of CloudEvents.")
        if len(document) > max_batch:
            raise RequestError(
                413,
                "batch_too_large",
                f"A batch holds at most {max_batch} events; this one has {len(document)}. "
                "Split it into smaller batches.",
            )
        return True, [parse_document(index, element) for index, element in enumerate(document)]
    if media == STRUCTURED:
        return False, [parse_document(0, document, raw=text)]
    try:
        event = parse_binary(headers, document)
        return False, [Item(0, event, None, text, event.source)]
    except EventError as error:
        source = next((v for k, v in headers.items() if k.lower() == "ce-source"), None)
        return False, [Item(0, None, error, text, source)]


def parse_document(index: int, element: Any, raw: str | None = None) -> Item:
    """One CloudEvent (a decoded JSON value) as an item: the event, or why it was refused."""
    if raw is None:
        raw = json.dumps(element, ensure_ascii=False, default=str)
    source = element.get("source") if isinstance(element, dict) else None
    try:
        return Item(index, parse_structured(element), None, raw, _as_str(source))
    except EventError as error:
        return Item(index, None, error, raw, _as_str(source))


def _as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
