"""Opaque page cursors: the id of the last item of a page, base64url without padding.

A cursor names a position, not a query, so any filter can continue from it; one that
does not decode to an id of the expected kind is refused with a problem naming the field.
"""

from __future__ import annotations

import base64
import binascii
import re

from tidings.api.problems import ApiProblem


def encode(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode(cursor: str, ids: re.Pattern[str]) -> str:
    """The id ``cursor`` stands for; ``ids`` matches the ids a page of this route holds."""
    try:
        decoded = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    if not ids.fullmatch(decoded):
        raise ApiProblem(
            422,
            "invalid_cursor",
            "This cursor was not issued by this API; pass next_cursor from the previous page "
            "unchanged, or leave cursor out for the first page.",
            field="cursor",
        )
    return decoded
