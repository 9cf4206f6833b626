"""cache_regression: the share of input tokens served from the provider's prompt cache fell."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from spendsentry.alerts import Finding
from spendsentry.detectors.base import UseCaseContext
from spendsentry.detectors.kinds.base import SPEND, Tuning
from spendsentry.detectors.kinds.ratio import RatioKind
from spendsentry.detectors.shift import RatioShiftDetector, Shift
from spendsentry.windows import MinuteSignals

if TYPE_CHECKING:
    from spendsentry.policy import Policy
    from spendsentry.pricing import PriceBook


def uncached_share(s: MinuteSignals) -> tuple[float, float]:
    """Input tokens of LLM calls not served from the cache, and all of them.

    The detector watches the *uncached* share rise (it judges upward shifts);
    a cached share that falls from 70 % to 0 is an uncached share that goes from
    30 % to 100 %. Embeddings have input tokens but no cache: only LLM calls count.

    >>> uncached_share(MinuteSignals("u", 0, llm_input_tokens=1000, cached_input_tokens=700))
    (300.0, 1000.0)
    """
    total = s.llm_input_tokens
    return float(total - min(s.cached_input_tokens, total)), float(total)


class CacheRegression(RatioKind):
    """The uncached share of input tokens against its baseline, with the excess input cost.

    Only a use case with a cached share to lose can alert: the uncached share
    must rise by ``min_delta`` (and 1.5x), so a use case caching less than that
    (or not at all: its uncached share is 100 %) never does. Tokens are the
    sample size: the detector's noise is learned from 5-minute windows, which
    carries the correlation of the tokens of one call and one conversation.

    >>> from spendsentry.policy import Policy
    >>> from spendsentry.pricing import PriceBook
    >>> m = CacheRegression.build(Policy("chat"), PriceBook())
    >>> sentence = m.describe(Shift(0.95, 0.35, 2.7, 9.0, 80_000), MinuteSignals("chat", 0))
    >>> print(sentence)  # doctest: +NORMALIZE_WHITESPACE
    chat: only 5% of input tokens are served from the prompt cache (usual 65%); check what
    changed at the start of the prompt (a timestamp or id before the shared prefix breaks
    the cache).
    """

    kind = "cache_regression"
    #: Input tokens no longer served from the cache cost the full rate.
    explains = SPEND
    metric = "uncached_input_token_share"
    unit = "share"

    def __init__(self, detector: RatioShiftDetector, prices: PriceBook) -> None:
        super().__init__(detector, critical_ratio=2.0, persistence=2, cost_scales=False)
        self.prices = prices
        #: Input tokens per model of the last window's minutes (the excess cost).
        self._recent: deque[dict[str, int]] = deque(maxlen=detector.window)

    @classmethod
    def build(cls, policy: Policy, prices: PriceBook) -> CacheRegression | None:
        if (t := Tuning.of(policy, cls.kind)) is None:
            return None
        # The same bars as the other share kinds (embedding duplication, model
        # oversizing): a 1.5x and +25-point rise of the uncached share, z 5 on
        # 5 minutes, a 30-minute window for sparse agents. Warm-up and minimum
        # sample are in tokens: 200k is a few hundred calls of a chat use case.
        detector = RatioShiftDetector(
            window=5,
            half_life=360,
            warmup=200_000,
            min_ratio=1.5,
            min_delta=0.25 / t.sensitivity,
            z_threshold=t.z(5.0),
            min_den=10_000,
            long_window=30 if t.long_windows else 0,
            long_z_threshold=t.z(6.0),
        )
        return cls(detector, prices)

    def extract(self, signals: MinuteSignals) -> tuple[float, float]:
        return uncached_share(signals)

    def describe(self, shift: Shift, signals: MinuteSignals) -> str:
        return (
            f"{signals.use_case}: only {1.0 - shift.observed:.0%} of input tokens are served "
            f"from the prompt cache (usual {1.0 - shift.baseline:.0%}); check what changed at "
            f"the start of the prompt (a timestamp or id before the shared prefix breaks the "
            f"cache)."
        )

    def observe(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        self._recent.append({m: s.input_tokens for m, s in signals.models.items()})
        finding = super().observe(signals, ctx)
        if finding is None:
            return None
        lost = max(0.0, finding.observed - finding.baseline)  # share of input no longer cached
        per_hour = self.excess_per_hour(lost)
        finding.excess_cost_per_hour_usd = per_hour
        finding.details["cached_share_before"] = round(1.0 - finding.baseline, 4)
        finding.details["cached_share_now"] = round(1.0 - finding.observed, 4)
        finding.summary += f" Input now costs about ${per_hour:,.2f} an hour more."
        return finding

    def excess_per_hour(self, lost_share: float) -> float:
        """$/h of ``lost_share`` of the window's input tokens priced at the input rate
        instead of the cached rate (the engine's price book; unknown models add 0)."""
        per_model: dict[str, int] = {}
        for minute in self._recent:
            for model, tokens in minute.items():
                per_model[model] = per_model.get(model, 0) + tokens
        excess = 0.0
        for model, tokens in sorted(per_model.items()):
            rates = self.prices.rates(model)
            if rates is not None:
                excess += tokens * lost_share * max(0.0, rates.input - rates.cached_input)
        minutes = max(len(self._recent), 1)
        return excess * 60.0 / minutes
