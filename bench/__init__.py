"""Benchmarks of Tidings' hot paths, each reported against a baseline measured in the same run.

Run with ``make bench`` (or ``python -m bench --help``); see bench/README.md.
"""
