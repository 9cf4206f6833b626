"""shared_embedding_duplication: a use case embeds content other use cases embedded that day."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from spendsentry.alerts import HOURS_PER_MONTH, Finding
from spendsentry.detectors.base import UseCaseContext
from spendsentry.detectors.kinds.base import SPEND, Tuning
from spendsentry.detectors.kinds.ratio import RatioKind
from spendsentry.detectors.shift import RatioShiftDetector, Shift
from spendsentry.windows import MinuteSignals

if TYPE_CHECKING:
    from spendsentry.policy import Policy
    from spendsentry.pricing import PriceBook


class PriorShiftDetector(RatioShiftDetector):
    """A :class:`RatioShiftDetector` whose baseline always rests on ``prior`` units or more.

    Where its own evidence weighs less (no history yet, or it faded), the rest
    is the prior "a share of 0": a use case that never embedded reads its first
    embeddings against "shares nothing", not against themselves. Windows under
    ``min_den`` are neither judged nor learned.

    >>> d = PriorShiftDetector(window=5, warmup=0, min_den=20, prior=200)
    >>> d.learn_one(0.0, 0.0)
    >>> d.check(40.0, 40.0).ratio
    inf
    >>> plain = RatioShiftDetector(window=5, warmup=0, min_den=20)
    >>> plain.learn_one(8.0, 8.0); plain.baseline   # its first minute is its baseline
    1.0
    >>> d.learn_one(8.0, 8.0); d.baseline   # too few to judge: not learned
    0.0
    """

    def __init__(self, *args: float, prior: float, **kwargs: float) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.prior = prior
        self._w = prior

    def learn_one(self, num: float, den: float) -> None:
        recent = list(self._ring)[-(self.window - 1) :] if self.window > 1 else []
        if sum(d for _, d in recent) + den < self.min_den:
            # A window too small to judge is not learned either: otherwise the
            # first minutes of a use case that starts embedding shared content
            # (8 a minute) would be its baseline before a window could judge them.
            self._ring.append((num, den))
            self._age()
        else:
            super().learn_one(num, den)
        if self._w < self.prior:
            self._mean *= self._w / self.prior
            self._w = self.prior


def shared_share(s: MinuteSignals) -> tuple[float, float]:
    """Embeddings of content another use case embedded first (within a day), and all."""
    return float(s.shared_embeddings), float(s.embeddings)


class SharedEmbeddingDuplication(RatioKind):
    """The share of a use case's embeddings that another use case already made; info only.

    The engine's :class:`~spendsentry.shared_content.SharedContentIndex` says
    which embeddings repeat content another use case embedded first within 24
    hours; the alert goes to the *later* embedder (the one that could read a
    shared store), naming the use cases that embedded the content first.

    No warm-up: the prior is "shares nothing" (:class:`PriorShiftDetector`,
    worth 200 embeddings). A use case that starts up
    embedding another team's documents is the case this kind exists for, and
    it has no history to learn from; the bars are the size ones (+20 points,
    1.5x, 20 embeddings in 5 minutes, 2 minutes held). A permanent overlap is
    learned slowly (anomalous minutes weigh 2 %), so the recommendation is
    made, then fades over hours instead of paging daily.

    >>> from spendsentry.policy import Policy
    >>> from spendsentry.pricing import PriceBook
    >>> m = SharedEmbeddingDuplication.build(Policy("kb"), PriceBook())
    >>> s = MinuteSignals("kb", 0, shared_with=("doc_embeddings",))
    >>> print(m.describe(Shift(0.8, 0.0, float("inf"), 9.0, 120), s))
    ... # doctest: +NORMALIZE_WHITESPACE
    kb: 80% of embeddings repeat content doc_embeddings embedded in the last day (usual 0%);
    read it from a shared embedding store.
    """

    kind = "shared_embedding_duplication"
    #: Paying again for embeddings another use case has.
    explains = SPEND
    metric = "shared_embedding_share"
    unit = "share"

    def __init__(self, detector: PriorShiftDetector) -> None:
        super().__init__(detector, critical_ratio=float("inf"), persistence=2, cost_scales=False)
        #: (duplicate cost, USD) of the last window's minutes.
        self._recent: deque[float] = deque(maxlen=detector.window)

    @classmethod
    def build(cls, policy: Policy, prices: PriceBook) -> SharedEmbeddingDuplication | None:
        if (t := Tuning.of(policy, cls.kind)) is None:
            return None
        detector = PriorShiftDetector(
            window=5,
            half_life=360,
            warmup=0,
            min_ratio=1.5,
            min_delta=0.2 / t.sensitivity,
            z_threshold=t.z(6.0),
            min_den=20,
            prior=200,
        )
        return cls(detector)

    def extract(self, signals: MinuteSignals) -> tuple[float, float]:
        return shared_share(signals)

    def describe(self, shift: Shift, signals: MinuteSignals) -> str:
        others = ", ".join(signals.shared_with) or "other use cases"
        return (
            f"{signals.use_case}: {shift.observed:.0%} of embeddings repeat content {others} "
            f"embedded in the last day (usual {shift.baseline:.0%}); read it from a shared "
            f"embedding store."
        )

    def observe(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        # Every shared embedding is a duplicate a shared store would not have paid for.
        share = signals.shared_embeddings / signals.embeddings if signals.embeddings else 0.0
        self._recent.append(signals.embedding_cost * share)
        finding = super().observe(signals, ctx)
        if finding is None:
            return None
        finding.severity = "info"
        per_hour = sum(self._recent) * 60.0 / max(len(self._recent), 1)
        finding.excess_cost_per_hour_usd = per_hour
        finding.details["shared_with"] = list(signals.shared_with)
        finding.details["attributed_to"] = "later_embedder"
        finding.details["monthly_saving_usd"] = round(per_hour * HOURS_PER_MONTH, 2)
        finding.summary += (
            f" A shared store would save about ${per_hour * HOURS_PER_MONTH:,.2f} a month."
        )
        return finding
