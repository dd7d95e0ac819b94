"""CloudEvents 1.0 envelope: parse, validate, and map to the canonical event.

Spec: https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/spec.md
JSON format: .../formats/json-format.md; HTTP binding: .../bindings/http-protocol-binding.md
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from tidings.events.schemas import CATALOGUE

# Spec 3.1.1: attribute names are lower-case ASCII letters or digits.
_ATTRIBUTE_NAME = re.compile(r"^[a-z0-9]{1,20}$")
_REQUIRED = ("id", "source", "specversion", "type")
# The stored columns' width; longer values are refused with a clear error, not a 500.
MAX_ATTRIBUTE_LENGTH = 512


class EventError(ValueError):
    """An event that cannot be accepted. ``code`` is stable; ``field`` points at the fault."""

    def __init__(self, code: str, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.field = field


@dataclass(frozen=True, slots=True)
class CanonicalEvent:
    source: str
    id: str
    type: str
    subject: str | None
    time: datetime | None
    data: dict[str, Any]

    @property
    def order_id(self) -> str | None:
        value = self.data.get("order_id")
        return str(value) if value is not None else None

    @property
    def customer(self) -> dict[str, Any] | None:
        value = self.data.get("customer")
        return value if isinstance(value, dict) else None


def parse_structured(document: Any) -> CanonicalEvent:
    """One event in the JSON event format (structured content mode)."""
    if not isinstance(document, Mapping):
        raise EventError("invalid_envelope", "A CloudEvent must be a JSON object.")
    for name in _REQUIRED:
        value = document.get(name)
        if not isinstance(value, str) or not value.strip():
            raise EventError(
                "invalid_envelope",
                f"The CloudEvents attribute '{name}' is required and must be a non-empty string.",
                field=name,
            )
    for name in document:
        if not isinstance(name, str) or (name != "data_base64" and not _ATTRIBUTE_NAME.match(name)):
            raise EventError(
                "invalid_envelope",
                f"'{name}' is not a valid CloudEvents attribute name (lower-case a-z and 0-9).",
                field=str(name),
            )
    if "data_base64" in document:
        raise EventError(
            "unsupported_data",
            "Binary data (data_base64) is not accepted: send the event's data as a JSON object.",
            field="data_base64",
        )
    content_type = document.get("datacontenttype")
    if content_type is not None and not _is_json(str(content_type)):
        raise EventError(
            "unsupported_data",
            f"datacontenttype '{content_type}' is not JSON: send application/json data.",
            field="datacontenttype",
        )
    return _canonical(document, document.get("data"))


def parse_binary(headers: Mapping[str, str], data: Any) -> CanonicalEvent:
    """One event in binary content mode: attributes in ``ce-*`` headers, data in the body."""
    attributes: dict[str, Any] = {}
    for key, value in headers.items():
        lower = key.lower()
        if lower.startswith("ce-"):
            attributes[lower[3:]] = value
    for name in _REQUIRED:
        if not attributes.get(name, "").strip():
            raise EventError(
                "invalid_envelope",
                f"The header 'ce-{name}' is required for a binary-mode CloudEvent.",
                field=f"ce-{name}",
            )
    return _canonical(attributes, data)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _canonical(attributes: Mapping[str, Any], data: Any) -> CanonicalEvent:
    for name in ("id", "source", "type", "subject"):
        value = attributes.get(name)
        if isinstance(value, str) and len(value) > MAX_ATTRIBUTE_LENGTH:
            raise EventError(
                "invalid_envelope",
                f"'{name}' is {len(value)} characters long; at most {MAX_ATTRIBUTE_LENGTH} "
                "are accepted.",
                field=name,
            )
    if attributes["specversion"] != "1.0":
        raise EventError(
            "unsupported_specversion",
            f"specversion '{attributes['specversion']}' is not supported: use \"1.0\".",
            field="specversion",
        )
    event_type = str(attributes["type"])
    schema = CATALOGUE.get(event_type)
    if schema is None:
        raise EventError(
            "unknown_event_type",
            f"'{event_type}' is not in the event catalogue. Known types: "
            + ", ".join(sorted(CATALOGUE)),
            field="type",
        )
    time = _parse_time(attributes.get("time"))
    subject = attributes.get("subject")
    if subject is not None and not isinstance(subject, str):
        raise EventError("invalid_envelope", "subject must be a string.", field="subject")
    if not isinstance(data, Mapping):
        raise EventError(
            "invalid_data",
            f"The data of a '{event_type}' event must be a JSON object.",
            field="data",
        )
    try:
        model = schema.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        location = ".".join(str(part) for part in first["loc"])
        raise EventError(
            "invalid_data",
            f"data.{location}: {first['msg']}. Fix this field of the '{event_type}' event "
            "and send it again.",
            field=f"data.{location}",
        ) from exc
    canonical_data = model.model_dump(mode="json", exclude_none=False)
    if subject is None and isinstance(canonical_data.get("order_id"), str):
        subject = f"order/{canonical_data['order_id']}"
    return CanonicalEvent(
        source=str(attributes["source"]),
        id=str(attributes["id"]),
        type=event_type,
        subject=subject,
        time=time,
        data=canonical_data,
    )


def _parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    # RFC 3339 requires an offset; Python accepts "Z" since 3.11.
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise EventError(
            "invalid_envelope",
            "time must be an RFC 3339 timestamp with an offset, such as 2026-11-21T10:00:00Z.",
            field="time",
        )
    return parsed
