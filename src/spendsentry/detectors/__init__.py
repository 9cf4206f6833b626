"""Detectors: River-style online models, one per cost behaviour.

:func:`build_monitors` is the registry the engine uses: it returns the
monitors a use case's policy enables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spendsentry.detectors.base import Monitor, PeriodTotals, UseCaseContext

if TYPE_CHECKING:
    from spendsentry.policy import Policy

__all__ = ["Monitor", "PeriodTotals", "UseCaseContext", "build_monitors"]


def build_monitors(use_case: str, policy: Policy) -> list[Monitor]:
    """The monitors for one use case, honouring its policy's detector settings."""
    monitors: list[Monitor] = []
    return monitors
