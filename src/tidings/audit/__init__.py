"""Append-only, hash-chained record of every decision and action."""
