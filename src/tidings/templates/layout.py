"""What the shared email layouts receive: the message, the store's branding, the language.

Everything here is plain text; the HTML layout is rendered by the autoescaping environment, so
whatever came from event data is escaped there. The only values that reach an attribute whose
meaning is not text (``href``, ``src``, ``style``) are checked here first: links must be
absolute http(s) URLs, colours must be ``#rgb``/``#rrggbb``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from babel import Locale

BRANDING_KEYS: tuple[str, ...] = (
    "name",
    "sender_name",
    "support_email",
    "logo_url",
    "primary_color",
    "accent_color",
    "footer",
    "address",
)
_COLOR_RE = re.compile(r"#(?:[0-9a-fA-F]{3}){1,2}\Z")
# Whitespace or control characters inside a URL are how browsers get talked into reading a
# different scheme than the one that was checked ("java\tscript:"); such URLs are refused.
_URL_JUNK_RE = re.compile(r"[\x00-\x20\x7f-\x9f]")
_PARAGRAPH_RE = re.compile(r"\n[ \t\r\f\v]*\n")
# Runs of ordinary spaces inside a line (left by template conditionals) fold to one; no-break
# spaces are typography ("12,50\u00a0€") and stay.
_SPACES_RE = re.compile(r"[ \t\f\v]+")


def safe_url(value: object) -> str | None:
    """The URL if it is an absolute http or https URL with a host, else None."""
    if not isinstance(value, str):
        return None
    url = value.strip()
    if not url or _URL_JUNK_RE.search(url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return url


def branding(store: object) -> dict[str, Any]:
    """The ``store`` variable: every branding key present (None when missing or blank).

    Colours that are not hex colours and logos that are not http(s) URLs become None, so the
    layouts' own defaults apply; keys beyond the branding ones are passed through.
    """
    given: Mapping[str, Any] = store if isinstance(store, Mapping) else {}
    result: dict[str, Any] = dict(given)
    for key in BRANDING_KEYS:
        value = given.get(key)
        if isinstance(value, str):
            value = value.strip() or None
        elif value is not None:
            value = str(value)
        result[key] = value
    for key in ("primary_color", "accent_color"):
        if result[key] is not None and not _COLOR_RE.match(result[key]):
            result[key] = None
    result["logo_url"] = safe_url(result["logo_url"])
    return result


def paragraphs(text: str) -> list[str]:
    """Split rendered text on blank lines; tidy every line's spaces, drop empty paragraphs."""
    found = []
    for block in _PARAGRAPH_RE.split(text.replace("\r\n", "\n")):
        lines = [_SPACES_RE.sub(" ", line).strip(" \t\r\f\v") for line in block.split("\n")]
        paragraph = "\n".join(line for line in lines if line)
        if paragraph:
            found.append(paragraph)
    return found


def language(tag: str, locale: Locale) -> dict[str, str]:
    """``lang`` (BCP 47, from the template's locale) and ``dir`` for the HTML root."""
    return {
        "lang": tag.replace("_", "-"),
        "dir": "rtl" if locale.character_order == "right-to-left" else "ltr",
    }
