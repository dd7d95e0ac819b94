"""How many SMS segments a text takes, and which text to send so that it fits.

3GPP TS 23.038 (GSM 03.38) section 6.2.1: a text made only of characters of the GSM 7-bit
default alphabet and its extension table travels as GSM-7, one septet per character and two
for an extension character (an escape, 0x1B, then the character). Any other character makes
the whole message UCS-2 (section 6.2.3), counted in UTF-16 code units, so a character outside
the Basic Multilingual Plane, such as most emoji, takes two.

A single message holds 140 octets: 160 septets or 70 UCS-2 units. A concatenated message
spends 6 octets of each segment on the user data header (3GPP TS 23.040 9.2.3.24.1), which
leaves 153 septets or 67 units per segment. A segment never ends in the middle of a
character: an escape pair or a surrogate pair moves whole to the next segment, as senders
do so that each segment decodes on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

# TS 23.038 6.2.1, the default alphabet, row by row (0x00-0x7F); 0x1B (escape) is left out
# because it is never a character of the text, only the prefix of an extension character.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# TS 23.038 6.2.1.1, the default extension table: each costs an escape plus itself.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

SINGLE_CAPACITY: Mapping[Encoding, int] = {"GSM-7": 160, "UCS-2": 70}
SEGMENT_CAPACITY: Mapping[Encoding, int] = {"GSM-7": 153, "UCS-2": 67}

# The ellipsis that keeps the encoding of the text it ends: "…" is not in GSM-7.
GSM7_ELLIPSIS = "..."
UCS2_ELLIPSIS = "…"
TEXT_VARIANTS = ("txt", "txt_short")


@dataclass(frozen=True, slots=True)
class SmsLength:
    encoding: Encoding
    units: int  # septets for GSM-7, UTF-16 code units for UCS-2
    segments: int  # 0 for an empty text


def is_gsm7(text: str) -> bool:
    return all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in text)


def measure(text: str) -> SmsLength:
    """The encoding a text needs, its length in that encoding's units, and its segments."""
    if is_gsm7(text):
        encoding: Encoding = "GSM-7"
        costs = [2 if char in GSM7_EXTENSION else 1 for char in text]
    else:
        encoding = "UCS-2"
        costs = [2 if ord(char) > 0xFFFF else 1 for char in text]
    units = sum(costs)
    if units == 0:
        return SmsLength(encoding, 0, 0)
    if units <= SINGLE_CAPACITY[encoding]:
        return SmsLength(encoding, units, 1)
    return SmsLength(encoding, units, _packed_segments(costs, SEGMENT_CAPACITY[encoding]))


def _packed_segments(costs: Iterable[int], capacity: int) -> int:
    """Segments needed when no character is split across two segments."""
    segments, used = 1, 0
    for cost in costs:
        if used + cost > capacity:
            segments, used = segments + 1, 0
        used += cost
    return segments


def fits(text: str, *, max_segments: int) -> bool:
    return measure(text).segments <= max_segments


def choose_text(parts: Mapping[str, str], *, max_segments: int) -> str:
    """The text to send: ``txt`` if it fits in ``max_segments``, else ``txt_short`` if it
    fits, else the shortest of them cut after its last whole word that leaves room for an
    ellipsis. Raises ValueError when ``parts`` has neither text."""
    if max_segments < 1:
        raise ValueError("max_segments must be at least 1")
    variants = [parts[name] for name in TEXT_VARIANTS if name in parts]
    if not variants:
        raise ValueError(f"an SMS needs one of {', '.join(TEXT_VARIANTS)}")
    for text in variants:
        if fits(text, max_segments=max_segments):
            return text
    shortest = min(variants, key=lambda text: (measure(text).segments, len(text)))
    return shorten(shortest, max_segments=max_segments)


def shorten(text: str, *, max_segments: int) -> str:
    """The longest cut of ``text`` at a word boundary that, with an ellipsis, fits.

    A cut is made only just before whitespace, so no word is ever split; the kept words keep
    their own encoding because a GSM-7 prefix ends in "..." and a UCS-2 one in "…"."""
    if fits(text, max_segments=max_segments):
        return text
    # Cut points, longest first: every position where whitespace follows a kept character.
    cuts = [i for i in range(len(text) - 1, 0, -1) if text[i].isspace()]
    for cut in cuts:
        kept = text[:cut].rstrip()
        if not kept:
            continue
        candidate = kept + (GSM7_ELLIPSIS if is_gsm7(kept) else UCS2_ELLIPSIS)
        if fits(candidate, max_segments=max_segments):
            return candidate
    # Not even the first word fits: an ellipsis alone says that something was cut.
    return GSM7_ELLIPSIS
