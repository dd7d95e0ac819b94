"""Errors of the template package that more than one module raises."""

from __future__ import annotations


class RenderError(Exception):
    """A template bug or missing data: retrying the same render cannot succeed."""

    code = "render_failed"
