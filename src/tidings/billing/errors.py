"""The one error billing raises: a stable ``code`` for programs, a ``detail`` for people.

The detail says what happened and what to do next; ``field`` names the input at fault
when there is one, so an API can answer with RFC 9457 problem details pointing at it.
"""

from __future__ import annotations


class BillingError(Exception):
    """A refused billing request or move. ``code`` never changes once published."""

    def __init__(self, code: str, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.field = field

    def __repr__(self) -> str:
        return f"BillingError({self.code!r}, {self.detail!r}, field={self.field!r})"
