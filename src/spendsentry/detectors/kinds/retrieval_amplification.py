"""retrieval_amplification: each request triggers far more retrieval calls than usual."""

from __future__ import annotations

from typing import TYPE_CHECKING

from spendsentry.detectors.kinds.base import SPEND, Tuning
from spendsentry.detectors.kinds.ratio import RatioKind
from spendsentry.detectors.shift import RatioShiftDetector, Shift
from spendsentry.detectors.signals import retrievals_per_request
from spendsentry.windows import MinuteSignals

if TYPE_CHECKING:
    from spendsentry.policy import Policy
    from spendsentry.pricing import PriceBook


class RetrievalAmplification(RatioKind):
    """Retrieval calls per request against their baseline (a fan-out or retry loop).

    >>> from spendsentry.policy import Policy
    >>> from spendsentry.pricing import PriceBook
    >>> m = RetrievalAmplification.build(Policy("rag"), PriceBook())
    >>> sentence = m.describe(Shift(12.0, 3.0, 4.0, 9.0, 50), MinuteSignals("rag", 0))
    >>> print(sentence)  # doctest: +NORMALIZE_WHITESPACE
    rag: 12.0 retrieval calls per request, 4.0x the usual 3.0; check the retriever's fan-out,
    retries and re-ranking loops.
    """

    kind = "retrieval_amplification"
    #: More retrievals per request stuff more context into each prompt and embed
    #: the same queries again; each request costs more.
    explains = ("prompt_inflation", "embedding_duplication", *SPEND)
    metric = "retrievals_per_request"
    unit = "retrievals"

    @classmethod
    def build(cls, policy: Policy, prices: PriceBook) -> RetrievalAmplification | None:
        if (t := Tuning.of(policy, cls.kind)) is None:
            return None
        detector = RatioShiftDetector(
            window=5,
            half_life=360,
            warmup=200,
            min_ratio=t.ratio(1.6),
            z_threshold=t.z(6.0),
            min_den=10,
        )
        return cls(detector, critical_ratio=3.0, cost_scales=False)

    def extract(self, signals: MinuteSignals) -> tuple[float, float]:
        return retrievals_per_request(signals)

    def describe(self, shift: Shift, signals: MinuteSignals) -> str:
        return (
            f"{signals.use_case}: {shift.observed:.1f} retrieval calls per request, "
            f"{shift.ratio:.1f}x the usual {shift.baseline:.1f}; check the retriever's "
            f"fan-out, retries and re-ranking loops."
        )
