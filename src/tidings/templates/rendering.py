"""Render stored templates for one recipient: locale fallback, sandboxing, formatting helpers."""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, get_currency_precision, list_currencies
from jinja2 import StrictUndefined, Template, pass_context
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tidings.templates.store import TemplateNotFound, TemplateSource, TemplateStore

_LOCALE_RE = re.compile(r"[A-Za-z]{2,3}(?:_[A-Za-z0-9]{2,8})*\Z")
_FORMATTER_KEY = "_tidings_formatter"
_ONE_LINE_PARTS = frozenset({"subject", "title"})
# Deliberately not \s: that would also fold the no-break spaces locales need ("12,50\u00a0€").
_BREAKING_SPACE_RE = re.compile("[ \t\r\n\f\v\x85\u2028\u2029]+")


def _normalize_locale(value: str) -> str | None:
    # POSIX locales carry an encoding and modifier ("fr_CA.UTF-8@euro") that mean nothing here.
    tag = value.strip().split(".", 1)[0].split("@", 1)[0].replace("-", "_")
    if not _LOCALE_RE.match(tag):
        return None
    language, *rest = tag.split("_")
    subtags = [language.lower()]
    for sub in rest:
        if len(sub) == 4 and sub.isalpha():
            subtags.append(sub.title())  # script, e.g. Hant
        elif len(sub) in (2, 3):
            subtags.append(sub.upper())  # region, e.g. CA or 419
        else:
            subtags.append(sub)
    return "_".join(subtags)


def locale_chain(requested: str | None, default: str = "en") -> list[str]:
    """Most specific first, then each shorter prefix, then the default; never duplicated."""
    chain: list[str] = []
    tag = _normalize_locale(requested) if isinstance(requested, str) else None
    if tag is not None:
        subtags = tag.split("_")
        chain.extend("_".join(subtags[:n]) for n in range(len(subtags), 0, -1))
    fallback = _normalize_locale(default) or "en"
    if fallback not in chain:
        chain.append(fallback)
    return chain


@dataclass(frozen=True)
class RenderedMessage:
    kind: str
    channel: str
    locale: str
    parts: dict[str, str]
    version: str


class RenderError(Exception):
    """A template bug or missing data: retrying the same render cannot succeed."""

    code = "render_failed"


@lru_cache(maxsize=256)
def _babel_locale(tag: str) -> Locale | None:
    try:
        return Locale.parse(tag)
    except (UnknownLocaleError, ValueError):
        return None


@lru_cache(maxsize=1)
def _known_currencies() -> frozenset[str]:
    return frozenset(list_currencies())


def _resolve_zone(name: str | None) -> tzinfo:
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return UTC


def _formatting_locale(chain: list[str], used: str) -> Locale:
    # Templates may fall back from fr_CA to fr, but numbers and dates should still follow
    # the most specific variant of the same language that Babel knows (fr_CA, en_GB...).
    # A different language (de -> en) keeps the template's conventions for consistency.
    language = used.split("_", 1)[0]
    for tag in chain:
        if tag.split("_", 1)[0] == language:
            found = _babel_locale(tag)
            if found is not None:
                return found
    return _babel_locale(used) or Locale("en")


def _to_aware(value: object) -> datetime:
    if isinstance(value, str):
        text = value.strip()
        if len(text) > 10 and text[10] in "tT ":
            text = f"{text[:10]}T{text[11:]}"  # RFC 3339 allows "t" and " " separators
        if text[-1:] in ("z", "Z"):
            text = f"{text[:-1]}+00:00"
        value = datetime.fromisoformat(text)
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime or ISO 8601 string, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()!r}: the time zone is unknown")
    return value


@dataclass(frozen=True)
class _Formatter:
    """Formatting helpers bound to one render's locale and zone (immutable: thread-safe)."""

    locale: Locale
    zone: tzinfo

    def money(self, amount_minor: object, currency: object) -> str:
        if not isinstance(currency, str) or currency.strip().upper() not in _known_currencies():
            raise ValueError(f"unknown currency {currency!r}")
        code = currency.strip().upper()
        if isinstance(amount_minor, str) and re.fullmatch(r"-?[0-9]+", amount_minor.strip()):
            amount_minor = int(amount_minor)
        # bool is an int subclass and floats have already lost precision: refuse both.
        if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
            raise TypeError(f"money amount must be integer minor units, got {amount_minor!r}")
        sign, digits, _ = Decimal(amount_minor).as_tuple()
        # Rebuilding from the digit tuple scales exactly, whatever the decimal context says.
        value = Decimal((sign, digits, -get_currency_precision(code)))
        return format_currency(value, code, locale=self.locale, currency_digits=True)

    def datetime(self, value: object, format: str = "medium") -> str:
        moment = _to_aware(value)
        return format_datetime(moment, format=format, tzinfo=self.zone, locale=self.locale)

    def date(self, value: object, format: str = "long") -> str:
        day: date
        if isinstance(value, date) and not isinstance(value, datetime):
            day = value
        elif isinstance(value, str) and len(value.strip()) == 10:
            day = date.fromisoformat(value.strip())  # a calendar date has no zone to convert
        else:
            day = _to_aware(value).astimezone(self.zone).date()
        return format_date(day, format=format, locale=self.locale)


def _formatter(context: Context) -> _Formatter:
    found = context.get(_FORMATTER_KEY)
    if not isinstance(found, _Formatter):
        raise RuntimeError("formatting filters used outside Renderer.render")
    return found


@pass_context
def _money_filter(context: Context, amount_minor: object, currency: object) -> str:
    return _formatter(context).money(amount_minor, currency)


@pass_context
def _datetime_filter(context: Context, value: object, format: str = "medium") -> str:
    return _formatter(context).datetime(value, format)


@pass_context
def _date_filter(context: Context, value: object, format: str = "long") -> str:
    return _formatter(context).date(value, format)


def _environment(*, autoescape: bool) -> ImmutableSandboxedEnvironment:
    # autoescape is off only for plain-text parts (subject, title, txt), never for HTML.
    env = ImmutableSandboxedEnvironment(
        autoescape=autoescape, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    # Filters are registered once; per-recipient state travels in the render context.
    env.filters.update(money=_money_filter, datetime=_datetime_filter, date=_date_filter)
    return env


def _version(sources: Mapping[str, TemplateSource]) -> str:
    digest = hashlib.sha256()
    for part in sorted(sources):
        digest.update(part.encode() + b"\0" + sources[part].text.encode() + b"\0")
    return digest.hexdigest()[:12]


class Renderer:
    """Renders a kind/channel for a recipient; safe to share between threads."""

    def __init__(self, store: TemplateStore) -> None:
        self._store = store
        self._html_env = _environment(autoescape=True)
        # Plain text (subject, title, txt, sms) must not contain HTML entities.
        self._text_env = _environment(autoescape=False)
        self._lock = threading.Lock()
        self._compiled: dict[tuple[str, bool], tuple[str, Template]] = {}

    def _compile(self, source: TemplateSource) -> Template:
        is_html = source.part == "html"
        key = (source.origin, is_html)
        digest = hashlib.sha256(source.text.encode()).hexdigest()
        with self._lock:
            cached = self._compiled.get(key)
        if cached is not None and cached[0] == digest:
            return cached[1]
        env = self._html_env if is_html else self._text_env
        template = env.from_string(source.text)
        with self._lock:
            # One entry per file: an edited template replaces its stale compilation.
            self._compiled[key] = (digest, template)
        return template

    def render(
        self,
        kind: str,
        channel: str,
        locale: str | None,
        time_zone: str | None,
        context: Mapping[str, Any],
    ) -> RenderedMessage:
        chain = locale_chain(locale)
        for candidate in chain:
            sources = self._store.parts(kind, channel, candidate)
            if sources:
                used = candidate
                break
        else:
            raise TemplateNotFound(f"no {kind}/{channel} template for any of {chain}")

        formatter = _Formatter(_formatting_locale(chain, used), _resolve_zone(time_zone))
        # Helpers go last so event data can never shadow them with look-alike values.
        variables: dict[str, Any] = {
            **context,
            _FORMATTER_KEY: formatter,
            "money": formatter.money,
            "datetime": formatter.datetime,
            "date": formatter.date,
        }
        rendered: dict[str, str] = {}
        for part, source in sorted(sources.items()):
            try:
                text = self._compile(source).render(variables)
            except Exception as exc:  # any failure inside a template is permanent
                raise RenderError(
                    f"cannot render {kind}/{channel} locale={used} part={part} "
                    f"({source.origin}): {type(exc).__name__}: {exc}"
                ) from exc
            if part in _ONE_LINE_PARTS:
                text = _BREAKING_SPACE_RE.sub(" ", text)
            rendered[part] = text.strip()
        return RenderedMessage(kind, channel, used, rendered, _version(sources))
