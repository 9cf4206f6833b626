"""The shared shape of the kinds that watch one ratio of a minute (a RatioShiftDetector).

A subclass names its metric and unit, says how to read the ratio from a
minute (:meth:`RatioKind.extract`) and how to say a shift in a sentence
(:meth:`RatioKind.describe`); this class applies persistence, the severity
ladder and the excess spend.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import ClassVar

from river import stats

from spendsentry.alerts import Finding
from spendsentry.detectors.base import Persistence, UseCaseContext
from spendsentry.detectors.kinds.base import Kind
from spendsentry.detectors.shift import RatioShiftDetector, Shift
from spendsentry.detectors.signals import excess_from_ratio, excess_over_hour, top_model
from spendsentry.windows import MinuteSignals


def _supports(num: float, den: float, shift: Shift) -> bool:
    """Whether a minute's own data lean at least halfway to the window's shift."""
    if den <= 0:
        return num > 0  # cost with no outcome at all: the ratio's extreme
    return num / den - shift.baseline >= 0.5 * (shift.observed - shift.baseline)


class RatioKind(Kind):
    """Adapts a :class:`RatioShiftDetector` to one alert kind.

    Parameters
    ----------
    detector
        The statistics of the ratio.
    critical_ratio
        Observed / baseline at or above which a finding is critical.
    persistence
        Minutes of evidence before a shift is reported.
    cost_scales
        Whether spend scales with the ratio (the excess is then rate x
        (1 - 1/ratio); else the last 5 minutes over the hour's average).
    log_scale
        The detector watches ln(1 + x); findings speak in x (geometric means).
    num_cap
        Cap one minute's numerator at this many times its typical value: a
        minute in which a few huge calls land must not read as a regression.
    """

    #: Name of the metric in the finding's evidence.
    metric: ClassVar[str]
    #: Unit of the metric in the finding's evidence.
    unit: ClassVar[str]

    def __init__(
        self,
        detector: RatioShiftDetector,
        *,
        critical_ratio: float,
        persistence: int = 2,
        cost_scales: bool = True,
        log_scale: bool = False,
        num_cap: float | None = None,
    ) -> None:
        self.detector = detector
        self.critical_ratio = critical_ratio
        self.persistence = Persistence(persistence)
        self.cost_scales = cost_scales
        self.log_scale = log_scale
        self.num_cap = num_cap
        self._num_level = stats.EWMean(fading_factor=0.02)
        self._minutes = 0

    @abstractmethod
    def extract(self, signals: MinuteSignals) -> tuple[float, float]:
        """The minute's (numerator, denominator) of the ratio."""

    @abstractmethod
    def describe(self, shift: Shift, signals: MinuteSignals) -> str:
        """The sentence a human reads about ``shift``."""

    def observe(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        num, den = self.extract(signals)
        if self.num_cap is not None:
            typical = self._num_level.get() or 0.0
            self._num_level.update(num)
            self._minutes += 1
            if self._minutes > 30 and typical > 0:
                num = min(num, self.num_cap * typical)
        shift = self.detector.check(num, den)
        self.detector.learn_one(num, den)
        if shift is not None and not _supports(num, den, shift):
            # The window is anomalous but this minute's own calls are not (or
            # there are none): the window still holds the same odd calls, so
            # this minute may keep a confirmed shift alive but not confirm one.
            # One minute of a few long-context calls of a sparse agent,
            # followed by idle or ordinary minutes, is not a shift that held.
            if not self.persistence.active:
                return None
        elif not self.persistence.update(shift is not None, signals.start) or shift is None:
            return None
        if self.log_scale:
            shift = Shift(
                math.expm1(shift.observed),
                math.expm1(shift.baseline),
                math.exp(shift.observed - shift.baseline),
                shift.z,
                shift.sample,
            )
        severity = "critical" if shift.ratio >= self.critical_ratio else "warning"
        excess = excess_from_ratio(ctx, shift.ratio) if self.cost_scales else excess_over_hour(ctx)
        return Finding(
            kind=self.kind,
            severity=severity,
            score=shift.z,
            metric=self.metric,
            baseline=shift.baseline,
            observed=shift.observed,
            window_s=60.0 * self.detector.window,
            summary=self.describe(shift, signals),
            unit=self.unit,
            excess_cost_per_hour_usd=excess,
            example_session=signals.max_session_id,
            example_model=top_model(signals),
            details={"ratio": round(shift.ratio, 3), "sample": shift.sample},
            onset=self.persistence.onset,
        )
