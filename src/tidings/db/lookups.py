"""Reading many rows by key in few statements: batches look up what they need at once."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

# Keys per IN list: well under SQLite's and PostgreSQL's bound-parameter limits, with
# room for the other parameters of the statement.
QUERY_CHUNK = 500


def chunked(items: Sequence[T], size: int = QUERY_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
