"""Tidings: a notification and workflow engine for order management."""

__version__ = "0.1.0"
