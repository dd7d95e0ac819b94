"""Render a kind with its sample data, as a customer would get it (``tidings templates preview``).

Every built-in kind folder holds ``sample.yaml``: a render context without ``store`` (``data``,
``order``, ``recipient``, ``event``, and for some kinds ``product`` or ``items``), written the
way the worker builds it from stored JSON, so dates and times are ISO 8601 strings. Samples
are read from the built-in directory only; override directories hold templates, not samples.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from tidings.templates.catalogue import load_yaml
from tidings.templates.errors import RenderError
from tidings.templates.rendering import RenderedMessage, Renderer
from tidings.templates.store import BUILTIN_DIR, TemplateNotFound

SAMPLE_FILE = "sample.yaml"
SAMPLE_KEYS: tuple[str, ...] = ("data", "order", "recipient", "event")


class SampleError(RenderError):
    """A sample file that is not a usable render context; the message names the file."""

    code = "sample_invalid"


def _kinds_with_samples() -> tuple[str, ...]:
    return tuple(sorted(path.parent.name for path in BUILTIN_DIR.glob(f"*/{SAMPLE_FILE}")))


KINDS_WITH_SAMPLES: tuple[str, ...] = _kinds_with_samples()


def _as_json(value: Any) -> Any:
    # YAML reads an unquoted 2026-12-05 as a date; real event data arrives as JSON strings.
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _as_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_json(item) for item in value]
    return value


def sample_context(kind: str) -> dict[str, Any]:
    """The sample render context of a built-in kind (without ``store``)."""
    path = BUILTIN_DIR / kind / SAMPLE_FILE
    if kind not in _kinds_with_samples():
        known = ", ".join(_kinds_with_samples())
        raise TemplateNotFound(f"no sample data for kind {kind!r}; kinds with samples: {known}")
    document = load_yaml(path.read_text(encoding="utf-8"), str(path), SampleError)
    if not isinstance(document, dict):
        raise SampleError(f"sample {path} is not a mapping")
    missing = [key for key in SAMPLE_KEYS if not isinstance(document.get(key), dict)]
    if missing:
        raise SampleError(f"sample {path} needs mappings for: {', '.join(missing)}")
    context: dict[str, Any] = _as_json(document)
    context.pop("store", None)
    return context


def default_store() -> dict[str, str | None]:
    """Branding used when previewing without a configured store."""
    return {
        "name": "Atelier Lumen",
        "sender_name": "Atelier Lumen",
        "support_email": "help@atelier-lumen.example",
        "logo_url": None,
        "primary_color": "#1f4e79",
        "accent_color": "#c2410c",
        "footer": "Atelier Lumen · Lamps and lighting made in Lyon",
        "address": "12 rue de la République, 69002 Lyon, France",
    }


def preview(
    renderer: Renderer, kind: str, channel: str, locale: str, store: Mapping[str, Any]
) -> RenderedMessage:
    """Render ``kind`` on ``channel`` in ``locale`` with its sample data and ``store``."""
    context = sample_context(kind)
    recipient = {**context["recipient"], "locale": locale}
    context.update(recipient=recipient, store=dict(store))
    return renderer.render(kind, channel, locale, recipient.get("time_zone"), context)
