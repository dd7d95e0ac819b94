"""Template sources on disk: built-in templates plus an optional per-store override directory.

Two formats live side by side in both directories:

- per-part files ``<kind>/<channel>.<locale>.<part>``, e.g. ``refund_authorized/email.fr.subject``;
- message catalogues ``<kind>/<locale>.yaml`` (one file serves every catalogue channel: email,
  SMS, push and in-app; see :mod:`tidings.templates.catalogue`), with the shared email layouts
  in ``_layouts/email.html`` and ``_layouts/email.txt``.

An override file replaces the built-in file with the same name: a per-part file replaces one
part, a catalogue or a layout replaces the whole built-in catalogue or layout. Which of the
two formats wins for a given part is the renderer's business (per-part files do).
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"

PARTS: frozenset[str] = frozenset({"subject", "title", "txt", "txt_short", "html"})
# Channels a catalogue can render; any other channel needs per-part files.
CATALOGUE_CHANNELS: frozenset[str] = frozenset({"email", "sms", "push", "in_app", "webhook"})
LAYOUTS_DIR = "_layouts"
LAYOUTS: frozenset[str] = frozenset({"email.html", "email.txt"})
CATALOGUE_SUFFIX = ".yaml"

# Names are used to build file paths, so anything that could climb out of the template
# directories ("..", "/", NUL) must be rejected before it reaches the filesystem.
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_]*\Z")
_LOCALE_RE = re.compile(r"[A-Za-z]{2,3}(?:_[A-Za-z0-9]{2,8})*\Z")


@dataclass(frozen=True)
class TemplateSource:
    """One per-part template file: what it is for, its text, and where it came from."""

    kind: str
    channel: str
    locale: str
    part: str
    text: str
    origin: str


@dataclass(frozen=True)
class SourceFile:
    """A catalogue or layout file: its text and where it came from."""

    name: str
    text: str
    origin: str


class TemplateNotFound(LookupError):
    """No template exists for a kind/channel in any acceptable locale."""

    code = "template_not_found"


def _valid_name(name: str) -> bool:
    return bool(_NAME_RE.match(name))


def _valid_locale(locale: str) -> bool:
    return bool(_LOCALE_RE.match(locale))


class TemplateStore:
    """Read-only view over the built-in and override template directories.

    The directories are re-examined on every call so that an operator can edit override
    templates without a restart; file contents are cached by (mtime, size, inode) so that
    rendering many messages does not re-read unchanged files.
    """

    def __init__(self, builtin_dir: Path | None = None, override_dir: Path | None = None) -> None:
        self._builtin_dir = builtin_dir if builtin_dir is not None else BUILTIN_DIR
        self._override_dir = override_dir
        self._lock = threading.Lock()
        self._texts: dict[str, tuple[tuple[int, int, int], str]] = {}

    @property
    def _roots(self) -> list[Path]:
        # Order matters: later roots win, so the override directory comes last.
        roots = [self._builtin_dir]
        if self._override_dir is not None:
            roots.append(self._override_dir)
        return roots

    def kinds(self) -> list[str]:
        """Every kind folder (``_layouts`` and other non-kind names are not kinds)."""
        found: set[str] = set()
        for root in self._roots:
            if not root.is_dir():
                continue
            for entry in root.iterdir():
                if entry.is_dir() and _valid_name(entry.name):
                    found.add(entry.name)
        return sorted(found)

    def locales_for(self, kind: str, channel: str) -> list[str]:
        """Locales with at least one part for this channel, from part files or catalogues."""
        if not (_valid_name(kind) and _valid_name(channel)):
            return []
        found: set[str] = set()
        for root in self._roots:
            directory = root / kind
            if not directory.is_dir():
                continue
            for entry in directory.iterdir():
                pieces = entry.name.split(".")
                if len(pieces) == 3 and pieces[0] == channel and pieces[2] in PARTS:
                    locale = pieces[1]
                elif (
                    len(pieces) == 2
                    and f".{pieces[1]}" == CATALOGUE_SUFFIX
                    and channel in CATALOGUE_CHANNELS
                ):
                    locale = pieces[0]  # a catalogue serves every catalogue channel
                else:
                    continue
                if _valid_locale(locale) and entry.is_file():
                    found.add(locale)
        return sorted(found)

    def parts(self, kind: str, channel: str, locale: str) -> dict[str, TemplateSource]:
        """The per-part files of one message; an override file replaces its built-in twin."""
        if not (_valid_name(kind) and _valid_name(channel) and _valid_locale(locale)):
            return {}
        result: dict[str, TemplateSource] = {}
        for root in self._roots:
            for part in sorted(PARTS):
                path = root / kind / f"{channel}.{locale}.{part}"
                text = self._read(path)
                if text is not None:
                    result[part] = TemplateSource(
                        kind=kind,
                        channel=channel,
                        locale=locale,
                        part=part,
                        text=text,
                        origin=str(path),
                    )
        return result

    def catalogue(self, kind: str, locale: str) -> SourceFile | None:
        """The message catalogue of a kind in exactly this locale (override file first)."""
        if not (_valid_name(kind) and _valid_locale(locale)):
            return None
        return self._first(f"{kind}/{locale}{CATALOGUE_SUFFIX}")

    def layout(self, name: str) -> SourceFile | None:
        """A shared layout such as ``email.html`` (override file first)."""
        if name not in LAYOUTS:
            return None
        return self._first(f"{LAYOUTS_DIR}/{name}")

    def _first(self, relative: str) -> SourceFile | None:
        for root in reversed(self._roots):
            path = root / relative
            text = self._read(path)
            if text is not None:
                return SourceFile(name=relative, text=text, origin=str(path))
        return None

    def _read(self, path: Path) -> str | None:
        try:
            stat = os.stat(path)
        except OSError:
            return None
        if not path.is_file():
            return None
        # The inode is part of the key because editors often save by writing a new file and
        # renaming it over the old one, which can leave mtime and size unchanged.
        signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        key = str(path)
        with self._lock:
            cached = self._texts.get(key)
        if cached is not None and cached[0] == signature:
            return cached[1]
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            return None
        with self._lock:
            self._texts[key] = (signature, text)
        return text
