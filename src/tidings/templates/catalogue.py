"""Message catalogues: one YAML file per kind and locale that feeds every channel.

``<kind>/<locale>.yaml`` is a mapping whose values are Jinja template strings::

    define: "{% set amount = money(data.amount, data.currency) %}"   # optional, see below
    subject: "..."        # email subject (one line)
    headline: "..."       # heading of the email; default for push_title and in_app_title
    body: |               # plain-text paragraphs separated by blank lines
      ...
    next_step: "..."      # optional: what happens next and by when
    action:               # optional call to action (dropped unless the URL is http/https)
      label: "..."
      url: "{{ data.tracking_url }}"
    sms: "..."            # one SMS
    sms_short: "..."      # optional (default sms)
    push_title: "..."     # optional (default headline)
    push_body: "..."      # optional (default sms)
    in_app_title: "..."   # optional (default headline)
    in_app_body: "..."    # optional (default: the body paragraphs)

Line breaks follow what the file shows: a line holding only Jinja tags disappears, and any
other line keeps its line break even when it ends with a tag (``Hello,{% endif %}`` followed by
a blank line still ends a paragraph; Jinja alone would swallow that newline).

``define`` holds Jinja statements (``{% set %}``, ``{% macro %}``) that are placed in front of
every other value, so a lookup table such as the wording of a refund reason is written once per
file; it produces no text of its own.

A file that is not such a mapping (not YAML, a value that is not text, an unknown or duplicated
key, a required key missing) raises :class:`CatalogueError`, a :class:`RenderError`: the file
exists but cannot be used, which retrying will not fix. The message names the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from tidings.templates.errors import RenderError

REQUIRED_KEYS: tuple[str, ...] = ("subject", "headline", "body", "sms")
OPTIONAL_KEYS: tuple[str, ...] = (
    "define",
    "next_step",
    "sms_short",
    "push_title",
    "push_body",
    "in_app_title",
    "in_app_body",
)
ACTION_KEYS: tuple[str, ...] = ("label", "url")
# Text fields rendered on one line: breaking whitespace folds to single spaces.
ONE_LINE_FIELDS: frozenset[str] = frozenset(
    {
        "subject",
        "headline",
        "next_step",
        "action.label",
        "action.url",
        "sms",
        "sms_short",
        "push_title",
        "push_body",
        "in_app_title",
    }
)
BODY = "body"

# What each channel gets from a catalogue, as part -> fields tried in order. Email txt and
# html are not here: they are the shared layouts filled with the email fields.
CHANNEL_PARTS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "email": {"subject": ("subject",), "txt": (), "html": ()},
    "sms": {"txt": ("sms",), "txt_short": ("sms_short", "sms")},
    "push": {"title": ("push_title", "headline"), "txt": ("push_body", "sms")},
    "in_app": {"title": ("in_app_title", "headline"), "txt": ("in_app_body", BODY)},
    # Staff systems (signed webhooks, Slack): the in-app wording, which stands alone.
    "webhook": {"title": ("in_app_title", "headline"), "txt": ("in_app_body", BODY)},
}
EMAIL_LAYOUT_PARTS: frozenset[str] = frozenset({"txt", "html"})


class CatalogueError(RenderError):
    """A catalogue file cannot be used as it is; the message names the file and the problem."""

    code = "template_invalid"


@dataclass(frozen=True)
class Catalogue:
    """The validated template strings of one catalogue file (``action.label``/``action.url``
    are flattened into ``fields`` under those names)."""

    origin: str
    fields: Mapping[str, str]

    def template_text(self, field: str) -> str | None:
        """The Jinja source of one field with the shared ``define`` block in front of it."""
        text = self.fields.get(field)
        if text is None:
            return None
        text = _keep_line_breaks(text)
        define = self.fields.get("define")
        return f"{define.rstrip()}\n{text}" if define else text

    def has_action(self) -> bool:
        return "action.url" in self.fields


_BLOCK_TAG_RE = re.compile(r"\{%.*?%\}")


def _keep_line_breaks(text: str) -> str:
    # The environment trims the newline after every block tag (trim_blocks), which is right
    # for a line that holds only tags and wrong for text that happens to end with one. Such
    # lines get Jinja's own opt-out, "+%}".
    lines = text.split("\n")
    for index, line in enumerate(lines[:-1]):
        end = line.rstrip()
        if (
            end.endswith("%}")
            and not end.endswith(("+%}", "-%}"))
            and "{%" in end
            and _BLOCK_TAG_RE.sub("", end).strip()
        ):
            lines[index] = f"{end[:-2]}+%}}"
    return "\n".join(lines)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicated keys instead of keeping the last one silently."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicated key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def load_yaml(text: str, origin: str, error: type[RenderError] | None = None) -> Any:
    """Parse YAML safely; duplicated keys and syntax errors raise ``error`` naming ``origin``."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise (error or CatalogueError)(f"{origin} is not valid YAML: {exc}") from exc


def parse_catalogue(text: str, origin: str) -> Catalogue:
    document = load_yaml(text, origin)

    def invalid(problem: str) -> CatalogueError:
        return CatalogueError(f"template catalogue {origin} is invalid: {problem}")

    if not isinstance(document, dict):
        raise invalid(f"expected a mapping of keys to text, got {type(document).__name__}")
    allowed = (*REQUIRED_KEYS, *OPTIONAL_KEYS, "action")
    unknown = sorted(str(key) for key in document if key not in allowed)
    if unknown:
        raise invalid(f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    missing = [key for key in REQUIRED_KEYS if key not in document]
    if missing:
        raise invalid(f"missing required key(s) {', '.join(missing)}")
    fields: dict[str, str] = {}
    for key, value in document.items():
        if key == "action":
            if not isinstance(value, dict) or set(value) != set(ACTION_KEYS):
                raise invalid("'action' must be a mapping with exactly 'label' and 'url'")
            for sub in ACTION_KEYS:
                if not isinstance(value[sub], str):
                    raise invalid(f"'action.{sub}' must be text, got {type(value[sub]).__name__}")
                fields[f"action.{sub}"] = value[sub]
        elif isinstance(value, str):
            fields[key] = value
        else:
            # Unquoted YAML such as `sms: yes` or `subject: 2026` is not text: say so.
            raise invalid(f"'{key}' must be text (quote it), got {type(value).__name__}")
    return Catalogue(origin=origin, fields=fields)
