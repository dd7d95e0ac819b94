"""Identifiers: time-ordered, generated in process so batches need no round trip for keys."""

from __future__ import annotations

import os
import time

# Crockford base32, as used by ULID: sortable as text, no ambiguous letters.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


# Every 10-bit value as its two base32 characters: 13 look-ups make the 26 characters.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]


def new_id(prefix: str) -> str:
    """A ULID-shaped id (48-bit ms time, 80 random bits) behind a type prefix: ``ntf_01J...``."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    pairs = _PAIRS
    return (
        prefix + "_" + "".join([pairs[(value >> shift) & 1023] for shift in range(120, -10, -10)])
    )
