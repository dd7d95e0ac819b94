"""Render stored templates for one recipient: locale fallback, sources, sandboxed rendering.

A message comes from two kinds of source (see :mod:`tidings.templates.store`): per-part files
and message catalogues. For the first locale of the chain that has either, each part of the
channel comes from its per-part file when there is one, otherwise from the catalogue; email
text and HTML from a catalogue are the shared layouts filled with the catalogue's texts.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import Template

from tidings.templates.catalogue import (
    BODY,
    CHANNEL_PARTS,
    EMAIL_LAYOUT_PARTS,
    ONE_LINE_FIELDS,
    Catalogue,
    parse_catalogue,
)
from tidings.templates.errors import RenderError
from tidings.templates.formatting import Formatter, environment, formatting_locale, resolve_zone
from tidings.templates.layout import branding, language, paragraphs, safe_url
from tidings.templates.store import SourceFile, TemplateNotFound, TemplateStore

__all__ = ["RenderError", "RenderedMessage", "Renderer", "locale_chain"]

_LOCALE_RE = re.compile(r"[A-Za-z]{2,3}(?:_[A-Za-z0-9]{2,8})*\Z")
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


def _one_line(text: str) -> str:
    return _BREAKING_SPACE_RE.sub(" ", text).strip()


def _version(texts: Mapping[str, str]) -> str:
    """A short digest of every source text a message was made from (files, catalogue, layouts)."""
    digest = hashlib.sha256()
    for name in sorted(texts):
        digest.update(name.encode() + b"\0" + texts[name].encode() + b"\0")
    return digest.hexdigest()[:12]


def with_order_reference(context: Mapping[str, Any]) -> Mapping[str, Any]:
    """``order.number`` as templates print it: sources send "#1042" (Shopify's order name)
    or "1042", and every locale writes its own sign in front ("#1042", "n° 1042")."""
    order = context.get("order")
    if not isinstance(order, Mapping) or not isinstance(order.get("number"), str):
        return context
    number = order["number"].strip().lstrip("#").strip() or None
    return {**context, "order": {**order, "number": number}}


class Renderer:
    """Renders a kind/channel for a recipient; safe to share between threads."""

    def __init__(self, store: TemplateStore) -> None:
        self._store = store
        self._html_env = environment(autoescape=True)
        # Plain text (subject, title, txt, sms) must not contain HTML entities.
        self._text_env = environment(autoescape=False)
        self._lock = threading.Lock()
        self._compiled: dict[tuple[str, bool], tuple[str, Template]] = {}
        self._catalogues: dict[str, tuple[str, Catalogue]] = {}

    def _compile(self, key: str, text: str, *, html: bool) -> Template:
        cache_key = (key, html)
        digest = hashlib.sha256(text.encode()).hexdigest()
        with self._lock:
            cached = self._compiled.get(cache_key)
        if cached is not None and cached[0] == digest:
            return cached[1]
        env = self._html_env if html else self._text_env
        template = env.from_string(text)
        with self._lock:
            # One entry per source: an edited template replaces its stale compilation.
            self._compiled[cache_key] = (digest, template)
        return template

    def _catalogue(self, source: SourceFile) -> Catalogue:
        digest = hashlib.sha256(source.text.encode()).hexdigest()
        with self._lock:
            cached = self._catalogues.get(source.origin)
        if cached is not None and cached[0] == digest:
            return cached[1]
        catalogue = parse_catalogue(source.text, source.origin)  # CatalogueError if unusable
        with self._lock:
            self._catalogues[source.origin] = (digest, catalogue)
        return catalogue

    def render(
        self,
        kind: str,
        channel: str,
        locale: str | None,
        time_zone: str | None,
        context: Mapping[str, Any],
    ) -> RenderedMessage:
        chain = locale_chain(locale)
        context = with_order_reference(context)
        serves_catalogue = channel in CHANNEL_PARTS
        for candidate in chain:
            files = self._store.parts(kind, channel, candidate)
            catalogue = self._store.catalogue(kind, candidate) if serves_catalogue else None
            if files or catalogue is not None:
                used = candidate
                break
        else:
            raise TemplateNotFound(f"no {kind}/{channel} template for any of {chain}")

        babel_locale = formatting_locale(chain, used)
        formatter = Formatter(babel_locale, resolve_zone(time_zone))
        # Helpers go last so event data can never shadow them with look-alike values.
        variables: dict[str, Any] = {**context, **formatter.helpers()}
        if "store" in context:
            variables["store"] = branding(context["store"])
        job = _RenderJob(self, kind, channel, used, variables)

        rendered: dict[str, str] = {}
        sources: dict[str, str] = {}
        for part, source in sorted(files.items()):
            sources[f"part:{part}"] = source.text
            text = job.render(part, source.origin, source.text, html=part == "html")
            rendered[part] = _one_line(text) if part in _ONE_LINE_PARTS else text.strip()

        wanted = [part for part in CHANNEL_PARTS.get(channel, {}) if part not in files]
        if catalogue is not None and wanted:
            sources["catalogue"] = catalogue.text
            fields = _CatalogueFields(job, self._catalogue(catalogue))
            for part in wanted:
                if channel == "email" and part in EMAIL_LAYOUT_PARTS:
                    layout = self._store.layout(f"email.{part}")
                    if layout is None:
                        raise TemplateNotFound(f"no email layout for {part}: _layouts/email.{part}")
                    sources[f"layout:{part}"] = layout.text
                    layout_variables = {
                        **variables,
                        "message": fields.email_message(part),
                        **language(used, babel_locale),
                    }
                    rendered[part] = job.render(
                        part,
                        layout.origin,
                        layout.text,
                        html=part == "html",
                        variables=layout_variables,
                    ).strip()
                else:
                    rendered[part] = fields.part(part)
        return RenderedMessage(
            kind, channel, used, dict(sorted(rendered.items())), _version(sources)
        )


class _RenderJob:
    """One call of :meth:`Renderer.render`: its variables and how its failures are reported."""

    def __init__(
        self, renderer: Renderer, kind: str, channel: str, locale: str, variables: dict[str, Any]
    ) -> None:
        self.renderer = renderer
        self.kind = kind
        self.channel = channel
        self.locale = locale
        self.variables = variables

    def render(
        self,
        part: str,
        origin: str,
        text: str,
        *,
        html: bool,
        variables: Mapping[str, Any] | None = None,
    ) -> str:
        try:
            template = self.renderer._compile(origin, text, html=html)
            return template.render(self.variables if variables is None else variables)
        except Exception as exc:  # any failure inside a template is permanent
            raise RenderError(
                f"cannot render {self.kind}/{self.channel} locale={self.locale} part={part} "
                f"({origin}): {type(exc).__name__}: {exc}"
            ) from exc


class _CatalogueFields:
    """The texts of one catalogue for one render, each rendered at most once, as plain text."""

    def __init__(self, job: _RenderJob, catalogue: Catalogue) -> None:
        self._job = job
        self._catalogue = catalogue
        self._texts: dict[str, str | None] = {}

    def text(self, field: str, part: str) -> str | None:
        if field in self._texts:
            return self._texts[field]
        source = self._catalogue.template_text(field)
        result = None
        if source is not None:
            origin = f"{self._catalogue.origin} [{field}]"
            raw = self._job.render(part, origin, source, html=False)
            if field in ONE_LINE_FIELDS:
                result = _one_line(raw)
            else:
                result = "\n\n".join(paragraphs(raw))
        self._texts[field] = result
        return result

    def part(self, part: str) -> str:
        """A non-layout part: the first of its fields that the catalogue has."""
        for field in CHANNEL_PARTS[self._job.channel][part]:
            text = self.text(field, part)
            if text is not None:
                return text
        return ""

    def email_message(self, part: str) -> dict[str, Any]:
        """The ``message`` variable of the email layouts (all plain text, not yet escaped)."""
        action = None
        if self._catalogue.has_action():
            label = self.text("action.label", part)
            url = safe_url(self.text("action.url", part))
            if label and url:
                action = {"label": label, "url": url}
        return {
            "subject": self.text("subject", part) or "",
            "headline": self.text("headline", part) or "",
            "paragraphs": paragraphs(self.text(BODY, part) or ""),
            "next_step": self.text("next_step", part) or None,
            "action": action,
        }
