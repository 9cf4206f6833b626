"""model_oversizing: routine small requests are served by a large model (a recommendation)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from spendsentry.alerts import HOURS_PER_MONTH, Finding
from spendsentry.detectors.base import UseCaseContext
from spendsentry.detectors.kinds.base import SPEND, Tuning
from spendsentry.detectors.kinds.ratio import RatioKind
from spendsentry.detectors.shift import RatioShiftDetector, Shift
from spendsentry.detectors.sizing import ModelSizes
from spendsentry.windows import MinuteSignals

if TYPE_CHECKING:
    from spendsentry.policy import Policy
    from spendsentry.pricing import PriceBook


class ModelOversizing(RatioKind):
    """The share of small requests on large models; always severity info, with the saving.

    "Large" is what the engine's price book says (overrides included).

    >>> from spendsentry.policy import Policy
    >>> from spendsentry.pricing import PriceBook
    >>> m = ModelOversizing.build(Policy("faq"), PriceBook())
    >>> sentence = m.describe(Shift(0.6, 0.05, 12.0, 9.0, 100), MinuteSignals("faq", 0))
    >>> print(sentence)  # doctest: +NORMALIZE_WHITESPACE
    faq: 60% of routine small requests are served by a large model (usual 5%); route them to a
    smaller model.
    """

    kind = "model_oversizing"
    #: Small requests on a large model cost more per call, and make the model mix
    #: pricier: the same evidence as a silent switch to that model (fallback
    #: drift's price tier), which explains over-sizing in turn; the two explain
    #: each other, so whichever fires first names the incident.
    explains = ("fallback_drift", *SPEND)
    metric = "small_calls_on_large_model_share"
    unit = "share"

    def __init__(self, detector: RatioShiftDetector, sizes: ModelSizes) -> None:
        super().__init__(detector, critical_ratio=float("inf"), persistence=2)
        self.sizes = sizes

    @classmethod
    def build(cls, policy: Policy, prices: PriceBook) -> ModelOversizing | None:
        if (t := Tuning.of(policy, cls.kind)) is None:
            return None
        # 120 calls of warm-up: a share that is ~0 over 120 calls is already a
        # firm baseline, and an office-hours use case can regress within its
        # first half hour of the day (seen: 20 minutes in, missed with 200).
        detector = RatioShiftDetector(
            window=5,
            half_life=480,
            warmup=120,
            min_ratio=1.5,
            min_delta=0.3 / t.sensitivity,
            z_threshold=t.z(6.0),
            min_den=15,
        )
        return cls(detector, ModelSizes(prices))

    def extract(self, signals: MinuteSignals) -> tuple[float, float]:
        return self.sizes.small_calls_on_large_models(signals)

    def describe(self, shift: Shift, signals: MinuteSignals) -> str:
        return (
            f"{signals.use_case}: {shift.observed:.0%} of routine small requests are served "
            f"by a large model (usual {shift.baseline:.0%}); route them to a smaller model."
        )

    def observe(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        finding = super().observe(signals, ctx)
        if finding is None:
            return None
        finding.severity = "info"
        smaller, per_hour = self.sizes.routing_saving(signals)
        if smaller is not None:
            finding.excess_cost_per_hour_usd = per_hour
            finding.details["suggested_model"] = smaller
            finding.details["monthly_saving_usd"] = round(per_hour * HOURS_PER_MONTH, 2)
            finding.summary += (
                f" Routing them to {smaller} would save about "
                f"${per_hour * HOURS_PER_MONTH:,.0f} a month."
            )
        return finding
