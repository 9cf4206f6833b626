"""prompt_inflation: prompts (input tokens per LLM call) grew well past their usual size."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from spendsentry.alerts import Finding
from spendsentry.detectors.base import UseCaseContext
from spendsentry.detectors.fleet_prior import PromptPrior
from spendsentry.detectors.kinds.base import SPEND, Tuning
from spendsentry.detectors.kinds.ratio import RatioKind
from spendsentry.detectors.shift import RatioShiftDetector, Shift
from spendsentry.detectors.signals import log_input_tokens_per_call
from spendsentry.windows import MinuteSignals

if TYPE_CHECKING:
    from spendsentry.policy import Policy
    from spendsentry.pricing import PriceBook


class PromptInflation(RatioKind):
    """The geometric mean of input tokens per call against its baseline.

    In ln space, so one huge prompt does not read as a trend; a 30-minute
    window with a higher z bar catches a sustained 2x of a sparse use case.
    Until its own baseline has warmed up, ``prior`` compares its prompts with
    the fleet's (:class:`~spendsentry.detectors.fleet_prior.PromptPrior`).

    >>> from spendsentry.policy import Policy
    >>> from spendsentry.pricing import PriceBook
    >>> m = PromptInflation.build(Policy("chat"), PriceBook())
    >>> m.kind, m.detector.long_window
    ('prompt_inflation', 30)
    >>> sentence = m.describe(Shift(5200.0, 2000.0, 2.6, 8.0, 40), MinuteSignals("chat", 0))
    >>> print(sentence)  # doctest: +NORMALIZE_WHITESPACE
    chat: prompts grew to 5,200 input tokens per call, 2.6x the usual 2,000; check recent
    prompt, context or retrieval changes.
    """

    kind = "prompt_inflation"
    #: Longer prompts cost more per call, and what grew is not in the prompt
    #: cache (the uncached share rises).
    explains = ("cache_regression", *SPEND)
    metric = "input_tokens_per_call_geomean"
    unit = "tokens"

    @classmethod
    def build(cls, policy: Policy, prices: PriceBook) -> PromptInflation | None:
        if (t := Tuning.of(policy, cls.kind)) is None:
            return None
        # ln-space: min_delta ln(1.35) is a 1.35x growth of the geometric mean.
        detector = RatioShiftDetector(
            window=5,
            half_life=360,
            warmup=300,
            min_ratio=0.0,
            min_delta=math.log(t.ratio(1.5)),
            z_threshold=t.z(3.5),
            min_den=15,
            long_window=30 if t.long_windows else 0,
            long_z_threshold=t.z(5.0),
        )
        kind = cls(detector, critical_ratio=2.0, log_scale=True)
        if policy.fleet_prior.warmup_minutes > 0:
            kind.prior = PromptPrior(policy.fleet_prior, prices, t.sensitivity)
        return kind

    #: The fleet lens of its first minutes (None: the policy turned it off).
    prior: PromptPrior | None = None

    def observe(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        own = super().observe(signals, ctx)
        # Both see every minute: the prior counts the use case's minutes.
        fleet = self.prior.observe(signals, ctx) if self.prior is not None else None
        return own if own is not None else fleet

    def extract(self, signals: MinuteSignals) -> tuple[float, float]:
        return log_input_tokens_per_call(signals)

    def describe(self, shift: Shift, signals: MinuteSignals) -> str:
        return (
            f"{signals.use_case}: prompts grew to {shift.observed:,.0f} input tokens per call, "
            f"{shift.ratio:.1f}x the usual {shift.baseline:,.0f}; check recent prompt, "
            f"context or retrieval changes."
        )
