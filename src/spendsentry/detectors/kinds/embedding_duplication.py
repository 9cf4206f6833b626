"""embedding_duplication: a growing share of embeddings re-embed content already embedded."""

from __future__ import annotations

from typing import TYPE_CHECKING

from spendsentry.detectors.kinds.base import SPEND, Tuning
from spendsentry.detectors.kinds.ratio import RatioKind
from spendsentry.detectors.shift import RatioShiftDetector, Shift
from spendsentry.detectors.signals import duplicate_share
from spendsentry.windows import MinuteSignals

if TYPE_CHECKING:
    from spendsentry.policy import Policy
    from spendsentry.pricing import PriceBook


class EmbeddingDuplication(RatioKind):
    """The share of embeddings whose content hash was seen, against its baseline.

    >>> from spendsentry.policy import Policy
    >>> from spendsentry.pricing import PriceBook
    >>> m = EmbeddingDuplication.build(Policy("kb"), PriceBook())
    >>> sentence = m.describe(Shift(0.45, 0.05, 9.0, 12.0, 80), MinuteSignals("kb", 0))
    >>> print(sentence)  # doctest: +NORMALIZE_WHITESPACE
    kb: 45% of embeddings re-embed content already embedded (usual 5%); add a cache keyed by
    content hash.
    """

    kind = "embedding_duplication"
    #: Content embedded again and again includes content other use cases
    #: embedded first; every repeat is paid.
    explains = ("shared_embedding_duplication", *SPEND)
    metric = "duplicate_embedding_share"
    unit = "share"

    @classmethod
    def build(cls, policy: Policy, prices: PriceBook) -> EmbeddingDuplication | None:
        if (t := Tuning.of(policy, cls.kind)) is None:
            return None
        detector = RatioShiftDetector(
            window=5,
            half_life=360,
            warmup=300,
            min_ratio=1.5,
            min_delta=0.2 / t.sensitivity,
            z_threshold=t.z(6.0),
            min_den=20,
        )
        return cls(detector, critical_ratio=4.0, cost_scales=False)

    def extract(self, signals: MinuteSignals) -> tuple[float, float]:
        return duplicate_share(signals)

    def describe(self, shift: Shift, signals: MinuteSignals) -> str:
        return (
            f"{signals.use_case}: {shift.observed:.0%} of embeddings re-embed content already "
            f"embedded (usual {shift.baseline:.0%}); add a cache keyed by content hash."
        )
