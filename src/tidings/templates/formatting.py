"""Formatting helpers for templates (money, dates) and the sandboxed Jinja environments."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, get_currency_precision, list_currencies
from jinja2 import StrictUndefined, pass_context
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

FORMATTER_KEY = "_tidings_formatter"


@lru_cache(maxsize=256)
def babel_locale(tag: str) -> Locale | None:
    try:
        return Locale.parse(tag)
    except (UnknownLocaleError, ValueError):
        return None


@lru_cache(maxsize=1)
def _known_currencies() -> frozenset[str]:
    return frozenset(list_currencies())


def resolve_zone(name: str | None) -> tzinfo:
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return UTC


def formatting_locale(chain: list[str], used: str) -> Locale:
    # Templates may fall back from fr_CA to fr, but numbers and dates should still follow
    # the most specific variant of the same language that Babel knows (fr_CA, en_GB...).
    # A different language (de -> en) keeps the template's conventions for consistency.
    language = used.split("_", 1)[0]
    for tag in chain:
        if tag.split("_", 1)[0] == language:
            found = babel_locale(tag)
            if found is not None:
                return found
    return babel_locale(used) or Locale("en")


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
class Formatter:
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

    def helpers(self) -> dict[str, object]:
        """The template variables of this formatter (the filters find it under its key)."""
        return {
            FORMATTER_KEY: self,
            "money": self.money,
            "datetime": self.datetime,
            "date": self.date,
        }


def _formatter(context: Context) -> Formatter:
    found = context.get(FORMATTER_KEY)
    if not isinstance(found, Formatter):
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


def environment(*, autoescape: bool) -> ImmutableSandboxedEnvironment:
    # autoescape is off only for plain-text parts (subject, title, txt), never for HTML.
    env = ImmutableSandboxedEnvironment(
        autoescape=autoescape, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    # Filters are registered once; per-recipient state travels in the render context.
    env.filters.update(money=_money_filter, datetime=_datetime_filter, date=_date_filter)
    return env
