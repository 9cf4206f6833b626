"""Detectors: River-style statistics on plain streams, and the alert kinds built on them.

The statistics (:mod:`~spendsentry.detectors.shift`,
:mod:`~spendsentry.detectors.sessions`, :mod:`~spendsentry.detectors.burn`)
know nothing of alerts; the kinds (:mod:`spendsentry.detectors.kinds`, one
class each, listed in :mod:`spendsentry.detectors.registry`) read closed
minutes, apply persistence and severity, and say what they found.
:func:`build_monitors` gives the engine a use case's monitors.

Names are imported on first use, so that the registry (which
:mod:`spendsentry.alerts` reads) does not load River.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spendsentry.detectors.base import Monitor, PeriodTotals, Persistence, UseCaseContext
    from spendsentry.detectors.burn import BurnRateDetector
    from spendsentry.detectors.registry import build_monitors, kind_class
    from spendsentry.detectors.sessions import SessionLengthDetector
    from spendsentry.detectors.shift import (
        LogRateShiftDetector,
        RateSpikeDetector,
        RatioShiftDetector,
        Shift,
    )

__all__ = [
    "BurnRateDetector",
    "LogRateShiftDetector",
    "Monitor",
    "PeriodTotals",
    "Persistence",
    "RateSpikeDetector",
    "RatioShiftDetector",
    "SessionLengthDetector",
    "Shift",
    "UseCaseContext",
    "build_monitors",
    "kind_class",
]

_HOMES = {
    "BurnRateDetector": "burn",
    "LogRateShiftDetector": "shift",
    "Monitor": "base",
    "PeriodTotals": "base",
    "Persistence": "base",
    "RateSpikeDetector": "shift",
    "RatioShiftDetector": "shift",
    "SessionLengthDetector": "sessions",
    "Shift": "shift",
    "UseCaseContext": "base",
    "build_monitors": "registry",
    "kind_class": "registry",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
