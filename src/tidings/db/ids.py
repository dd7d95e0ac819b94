"""Identifiers: time-ordered, generated in process so batches need no round trip for keys."""

from __future__ import annotations

import os
import time

# Crockford base32, as used by ULID: sortable as text, no ambiguous letters.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(prefix: str) -> str:
    """A ULID-shaped id (48-bit ms time, 80 random bits) behind a type prefix: ``ntf_01J...``."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"
