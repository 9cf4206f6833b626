"""cost_spike: spend per minute far above the recent level and the usual peaks."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from spendsentry.alerts import Finding
from spendsentry.detectors.base import Persistence, UseCaseContext
from spendsentry.detectors.fleet_prior import SpendPrior
from spendsentry.detectors.kinds.base import Kind, Tuning
from spendsentry.detectors.shift import LogRateShiftDetector, RateSpikeDetector
from spendsentry.detectors.signals import finite, times, top_model
from spendsentry.windows import MinuteSignals

if TYPE_CHECKING:
    from spendsentry.policy import Policy
    from spendsentry.pricing import PriceBook


class CostSpike(Kind):
    """Cost per minute far above the recent level and the usual peaks.

    Two lenses on the same minutes: ``detector`` (arithmetic means against the
    level and the usual peak) and, optionally, ``shift`` (geometric means
    against the level, see :class:`LogRateShiftDetector`), which sees a step of
    the whole traffic of a use case whose minutes swing too much on their own
    for the first. A shift seen by the second lens must also have the spend
    above the usual peak of the first: a level shift that stays within what
    the use case already spends at its busiest hour is growth, not a spike;
    and the same ``min_excess`` over the level. Off for use cases whose
    tuning allows no volume alerts (experiments).

    Both lenses see the rate divided by the use case's daily shape
    (``ctx.daily``, a :class:`~spendsentry.detectors.seasonal.DailyProfile`
    learned from complete days, when ``seasonal``): office
    hours, a 06:00 shoulder or a nightly job are the use case's schedule, not
    spikes, once a day of them has been seen. Before that the index is 1 and
    the level and usual peak carry the first day alone. ``min_excess`` stays
    in dollars whatever the index.

    >>> from spendsentry.policy import Policy
    >>> from spendsentry.pricing import PriceBook
    >>> CostSpike.build(Policy("lab", tier="experiment"), PriceBook()) is None
    True
    >>> sentence = CostSpike.describe("chat", 0.5, 0.1, 0.2)
    >>> print(sentence)  # doctest: +NORMALIZE_WHITESPACE
    chat is spending $30.00/h, 5.0x its recent $6.00/h and above its usual peak ($12.00/h);
    check call volume by caller and any new batch job.
    """

    kind = "cost_spike"

    def __init__(
        self,
        detector: RateSpikeDetector,
        persistence: int = 2,
        min_calls: int = 30,
        shift: LogRateShiftDetector | None = None,
        shift_persistence: int = 6,
        seasonal: bool = True,
    ) -> None:
        self.detector = detector
        self.shift = shift
        self.seasonal = seasonal
        # The second lens must hold longer: such a use case also swings 2-3x
        # for a few minutes on its own; an incident holds for half an hour.
        self.shift_persistence = Persistence(shift_persistence)
        self.persistence = Persistence(persistence)
        self.min_calls = min_calls
        #: The fleet lens of its first minutes (None: the policy turned it off).
        self.prior: SpendPrior | None = None

    @classmethod
    def build(cls, policy: Policy, prices: PriceBook) -> CostSpike | None:
        t = Tuning.of(policy, cls.kind)
        if t is None or not t.volume:
            return None
        s = t.sensitivity
        kind = cls(
            # 10 minutes: long enough that one minute of a few huge calls
            # (the Azure code trace has them hourly) or a benign 3-minute
            # burst stays under 3x, short enough to catch a spike in ~5.
            RateSpikeDetector(
                window=10,
                min_ratio_level=t.ratio(3.0),
                min_ratio_peak=t.ratio(1.5),
                # $0.50/h: below that, a spike costs less than looking at it.
                min_excess=0.5 / 60 / s,
                warmup=90,
            ),
            persistence=2,
            # A 10-minute geometric mean, 2x over the level: a use case
            # whose minutes swing 20x (bursts of hundreds of calls, a few
            # huge prompts) hides a 4x step from the arithmetic lens.
            shift=LogRateShiftDetector(
                window=10,
                min_ratio=t.ratio(2.0),
                z_threshold=4.0 / s,
                # A twentieth of min_excess: low enough that a use case
                # spending under a dollar an hour still shows its ratio
                # (the size bar is the monitor's: min_excess, usual peak).
                floor=0.025 / 60 / s,
                warmup=240,
            ),
        )
        if policy.fleet_prior.warmup_minutes > 0:
            # Until its own level and peaks are learned: the fleet's largest use cases.
            kind.prior = SpendPrior(policy.fleet_prior, prices, s)
        return kind

    @staticmethod
    def describe(use_case: str, observed: float, level: float, peak: float, days: int = 0) -> str:
        """The sentence a human reads about spending ``observed`` $/min.

        ``days``: complete days of the daily shape behind ``level`` and ``peak``
        (0: no shape yet, they are the recent level and the last day's peak).

        >>> sentence = CostSpike.describe("desk", 0.5, 0.1, 0.2, days=3)
        >>> print(sentence)  # doctest: +NORMALIZE_WHITESPACE
        desk is spending $30.00/h, 5.0x the $6.00/h it usually spends at this time of day
        (daily pattern learned over 3 days) and above its usual peak for this time ($12.00/h);
        check call volume by caller and any new batch job.
        """
        ratio = observed / level if level > 0 else math.inf
        if days:
            return (
                f"{use_case} is spending ${observed * 60:,.2f}/h, {times(ratio)} the "
                f"${level * 60:,.2f}/h it usually spends at this time of day (daily pattern "
                f"learned over {days} day{'s' if days > 1 else ''}) and above its usual peak "
                f"for this time (${peak * 60:,.2f}/h); check call volume by caller and any "
                f"new batch job."
            )
        return (
            f"{use_case} is spending ${observed * 60:,.2f}/h, "
            f"{times(ratio)} its recent ${level * 60:,.2f}/h and above its usual peak "
            f"(${peak * 60:,.2f}/h); check call volume by caller and any new batch job."
        )

    def observe(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        own = self._observe(signals, ctx)
        # Both see every minute: the prior counts the use case's minutes.
        fleet = self.prior.observe(signals, ctx) if self.prior is not None else None
        return own if own is not None else fleet

    def _observe(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        scale = ctx.daily.index(signals.minute) if self.seasonal else 1.0
        # Exactly the raw rate while there is no shape (scale 1.0).
        x = signals.cost / scale
        score, observed, level, peak = self.detector.measure(x, scale)
        self.detector.learn_one(x, scale)
        shift_score, geo_ratio, lens_hit = 0.0, 1.0, False
        if (lens := self.shift) is not None:
            shift_score, geo_ratio, _ = lens.measure(x)
            # A shift worth less than min_excess in dollars is learned as it
            # is: the arithmetic lens, whose level already follows such
            # shifts, would never let it page anyway.
            lens.learn_one(x, small=(observed - level) * scale < self.detector.min_excess)
            if observed <= peak or observed - level < self.detector.min_excess / scale:
                shift_score = 0.0
            held = self.shift_persistence.update(shift_score >= 1.0, signals.start)
            lens_hit = held or (shift_score >= 1.0 and self.persistence.active)
        # A handful of calls is never a spike, whatever the ratio (sparse use cases).
        enough = ctx.last_5m.calls >= self.min_calls
        anomalous = (score >= 1.0 or lens_hit) and enough
        score = max(score, shift_score)
        if not self.persistence.update(anomalous, signals.start):
            return None
        days = ctx.daily.days if scale != 1.0 else 0
        return self._finding(signals, ctx, score, (scale, days), (observed, level, peak), geo_ratio)

    def _finding(
        self,
        signals: MinuteSignals,
        ctx: UseCaseContext,
        score: float,
        seasonal: tuple[float, int],
        rates: tuple[float, float, float],
        geo_ratio: float,
    ) -> Finding:
        # Back to dollars of this minute: what the use case usually spends now.
        scale, days = seasonal
        observed, level, peak = (rate * scale for rate in rates)
        ratio = observed / level if level > 0 else math.inf
        details: dict[str, object] = {
            "usual_peak_usd_per_minute": round(peak, 6),
            "ratio": finite(ratio),
            "typical_minute_ratio": finite(geo_ratio),
        }
        if days:
            details["daily_pattern_index"] = round(scale, 4)
            details["daily_pattern_days"] = days
        return Finding(
            kind=self.kind,
            severity="critical" if score >= 2.0 else "warning",
            score=score,
            metric="cost_usd_per_minute",
            baseline=level,
            observed=observed,
            window_s=60.0 * self.detector.window,
            summary=self.describe(ctx.use_case, observed, level, peak, days),
            unit="USD/min",
            excess_cost_per_hour_usd=max(0.0, observed - level) * 60.0,
            example_model=top_model(signals),
            details=details,
            onset=self.persistence.onset,
        )
