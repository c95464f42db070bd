"""Benchmarks: each prints one JSON line of figures per case on stdout. Logs go to stderr, and
only warnings, so that a bench's stdout is its figures alone."""

from gridex.core.logging import configure_logging

configure_logging("WARNING")
