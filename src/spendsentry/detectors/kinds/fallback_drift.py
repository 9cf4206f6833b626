"""fallback_drift: more calls go to fallback, re-routed or pricier models than usual."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from spendsentry.detectors.kinds.base import SPEND, Composite, Tuning
from spendsentry.detectors.kinds.ratio import RatioKind
from spendsentry.detectors.shift import RatioShiftDetector, Shift
from spendsentry.detectors.signals import fallback_share
from spendsentry.detectors.sizing import ModelSizes
from spendsentry.windows import MinuteSignals

if TYPE_CHECKING:
    from spendsentry.policy import Policy
    from spendsentry.pricing import PriceBook


class FallbackDrift(Composite):
    """Flagged drift (calls marked fallback or re-routed) or silent drift (a pricier mix).

    >>> from spendsentry.policy import Policy
    >>> from spendsentry.pricing import PriceBook
    >>> m = FallbackDrift.build(Policy("agent"), PriceBook())
    >>> [lens.metric for lens in m.monitors]
    ['fallback_share', 'price_tier_ln_usd_per_mtok']
    """

    kind = "fallback_drift"
    #: A switch to another (pricier) model: small requests now run on a large
    #: model, the new model's prompt cache is cold, and each call costs more.
    explains = ("model_oversizing", "cache_regression", *SPEND)

    @classmethod
    def build(cls, policy: Policy, prices: PriceBook) -> FallbackDrift | None:
        if (t := Tuning.of(policy, cls.kind)) is None:
            return None
        return cls([FlaggedFallback.make(t), SilentFallback.make(t, prices)])


class FlaggedFallback(RatioKind):
    """The share of calls flagged as fallback or re-routed, against its baseline.

    >>> m = FlaggedFallback.make(Tuning(1.0, True, True))
    >>> sentence = m.describe(Shift(0.4, 0.02, 20.0, 9.0, 60), MinuteSignals("agent", 0))
    >>> print(sentence)  # doctest: +NORMALIZE_WHITESPACE
    agent: 40% of calls go to a fallback or re-routed model (usual 2%); check the primary
    model's errors and rate limits.
    """

    kind = "fallback_drift"
    metric = "fallback_share"
    unit = "share"

    @classmethod
    def build(cls, policy: Policy, prices: PriceBook) -> FlaggedFallback | None:
        t = Tuning.of(policy, cls.kind)
        return None if t is None else cls.make(t)

    @classmethod
    def make(cls, t: Tuning) -> FlaggedFallback:
        detector = RatioShiftDetector(
            window=5,
            half_life=360,
            warmup=300,
            min_ratio=1.5,
            min_delta=0.15 / t.sensitivity,
            z_threshold=t.z(6.0),
            min_den=15,
            # Drifts ramp in: don't let the ramp teach the noise.
            hold_z_fraction=0.5,
        )
        return cls(detector, critical_ratio=4.0)

    def extract(self, signals: MinuteSignals) -> tuple[float, float]:
        return fallback_share(signals)

    def describe(self, shift: Shift, signals: MinuteSignals) -> str:
        return (
            f"{signals.use_case}: {shift.observed:.0%} of calls go to a fallback or re-routed "
            f"model (usual {shift.baseline:.0%}); check the primary model's errors and "
            f"rate limits."
        )


class SilentFallback(RatioKind):
    """The model mix's price tier (mean ln input $/Mtok), against its baseline.

    >>> from spendsentry.pricing import PriceBook
    >>> from spendsentry.windows import ModelMinute
    >>> m = SilentFallback.make(Tuning(1.0, True, True), PriceBook())
    >>> sig = MinuteSignals("agent", 0, models={"gpt-4o": ModelMinute(9, 0.1, 900, 90, 0)})
    >>> sentence = m.describe(Shift(2.5, 1.0, 4.5, 9.0, 60), sig)
    >>> print(sentence)  # doctest: +NORMALIZE_WHITESPACE
    agent: the model mix got pricier: 4.5x the usual price per input token (top model now
    gpt-4o); check whether a fallback or larger model became the default.
    """

    kind = "fallback_drift"
    metric = "price_tier_ln_usd_per_mtok"
    unit = "USD/Mtok input"

    def __init__(
        self, detector: RatioShiftDetector, sizes: ModelSizes, *, critical_ratio: float
    ) -> None:
        super().__init__(detector, critical_ratio=critical_ratio, log_scale=True)
        self.sizes = sizes

    @classmethod
    def build(cls, policy: Policy, prices: PriceBook) -> SilentFallback | None:
        t = Tuning.of(policy, cls.kind)
        return None if t is None else cls.make(t, prices)

    @classmethod
    def make(cls, t: Tuning, prices: PriceBook) -> SilentFallback:
        detector = RatioShiftDetector(
            window=5,
            half_life=360,
            warmup=300,
            min_ratio=0.0,
            min_delta=math.log(t.ratio(1.8)),
            z_threshold=t.z(6.0),
            min_den=15,
            hold_z_fraction=0.5,
        )
        return cls(detector, ModelSizes(prices), critical_ratio=4.0)

    def extract(self, signals: MinuteSignals) -> tuple[float, float]:
        return self.sizes.price_tier(signals)

    def describe(self, shift: Shift, signals: MinuteSignals) -> str:
        top = max(signals.models, key=lambda m: (signals.models[m].calls, m), default="?")
        return (
            f"{signals.use_case}: the model mix got pricier: {shift.ratio:.1f}x the usual price "
            f"per input token (top model now {top}); check whether a fallback or larger model "
            f"became the default."
        )
