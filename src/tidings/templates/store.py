"""Template sources on disk: built-in templates plus an optional per-store override directory.

Layout (both directories): ``<kind>/<channel>.<locale>.<part>``, e.g.
``refund_authorized/email.fr.subject``. An override file replaces the built-in file with
the same name; other parts of the same message still come from the built-in directory.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"

PARTS: frozenset[str] = frozenset({"subject", "title", "txt", "html"})

# Names are used to build file paths, so anything that could climb out of the template
# directories ("..", "/", NUL) must be rejected before it reaches the filesystem.
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_]*\Z")
_LOCALE_RE = re.compile(r"[A-Za-z]{2,3}(?:_[A-Za-z0-9]{2,8})*\Z")


@dataclass(frozen=True)
class TemplateSource:
    """One template file: what it is for, its text, and where it came from."""

    kind: str
    channel: str
    locale: str
    part: str
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
        found: set[str] = set()
        for root in self._roots:
            if not root.is_dir():
                continue
            for entry in root.iterdir():
                if entry.is_dir() and _valid_name(entry.name):
                    found.add(entry.name)
        return sorted(found)

    def locales_for(self, kind: str, channel: str) -> list[str]:
        if not (_valid_name(kind) and _valid_name(channel)):
            return []
        found: set[str] = set()
        for root in self._roots:
            directory = root / kind
            if not directory.is_dir():
                continue
            for entry in directory.iterdir():
                pieces = entry.name.split(".")
                if (
                    len(pieces) == 3
                    and pieces[0] == channel
                    and pieces[2] in PARTS
                    and _valid_locale(pieces[1])
                    and entry.is_file()
                ):
                    found.add(pieces[1])
        return sorted(found)

    def parts(self, kind: str, channel: str, locale: str) -> dict[str, TemplateSource]:
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
