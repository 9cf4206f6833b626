"""The exceptions spendsentry raises, under one root so callers can catch them all."""

from __future__ import annotations


class SpendSentryError(Exception):
    """Root of every error spendsentry raises on purpose."""


class InputFileError(SpendSentryError):
    """An input file cannot be opened or read (not: it holds bad records)."""


class ConfigError(SpendSentryError):
    """A configuration value (file, flag or environment variable) is invalid."""
