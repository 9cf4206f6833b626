"""agent_chatter: live agent sessions run far longer than the use case's normal sessions."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from spendsentry.alerts import Finding
from spendsentry.detectors.base import Persistence, UseCaseContext
from spendsentry.detectors.kinds.base import SPEND, Kind, Tuning
from spendsentry.detectors.sessions import SessionLengthDetector
from spendsentry.detectors.signals import top_model
from spendsentry.windows import MinuteSignals

if TYPE_CHECKING:
    from spendsentry.policy import Policy
    from spendsentry.pricing import PriceBook


class AgentChatter(Kind):
    """Live sessions past ``factor`` x the p99 of finished sessions.

    >>> from spendsentry.policy import Policy
    >>> from spendsentry.pricing import PriceBook
    >>> AgentChatter.build(Policy("agent"), PriceBook()).detector.factor
    2.0
    >>> sentence = AgentChatter.describe("agent", 2, 41.0, 6.0, "s-17", 160)
    >>> print(sentence)  # doctest: +NORMALIZE_WHITESPACE
    agent: 2 live agent session(s) past 41 calls (typical 6); session s-17 is at 160 calls and
    still running. Check the agent's stop condition and tool errors.
    """

    kind = "agent_chatter"
    #: A session that loops calls again and again: its context grows with every
    #: turn (prompts inflate), it retrieves again, and it spends.
    explains = ("prompt_inflation", "retrieval_amplification", *SPEND)

    def __init__(self, detector: SessionLengthDetector, persistence: int = 2) -> None:
        self.detector = detector
        self.persistence = Persistence(persistence)

    @classmethod
    def build(cls, policy: Policy, prices: PriceBook) -> AgentChatter | None:
        if (t := Tuning.of(policy, cls.kind)) is None:
            return None
        return cls(
            SessionLengthDetector(quantile=0.99, factor=t.ratio(2.0), min_calls=20, warmup=30)
        )

    @staticmethod
    def describe(
        use_case: str, runaway: int, threshold: float, typical: float, session: str | None, top: int
    ) -> str:
        """The sentence a human reads about ``runaway`` sessions past ``threshold``."""
        return (
            f"{use_case}: {runaway} live agent session(s) past {threshold:.0f} "
            f"calls (typical {typical:.0f}); session {session} is at {top} "
            f"calls and still running. Check the agent's stop condition and tool errors."
        )

    def observe(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        threshold = self.detector.threshold()
        runaway = [c for c in signals.session_call_counts if threshold and c >= threshold]
        for calls in signals.ended_session_calls:
            self.detector.learn_one(calls)
        if not self.persistence.update(bool(runaway), signals.start) or not threshold:
            return None
        typical = self.detector.typical()
        top = signals.max_session_calls
        ratio = top / typical if typical else math.inf
        severity = "critical" if len(runaway) >= 3 or ratio >= 20 else "warning"
        per_call = ctx.last_5m.cost / max(ctx.last_5m.calls, 1)
        excess = (
            per_call
            * sum(max(0.0, c - typical) for c in runaway)
            * 60.0
            / max(self.persistence.streak, 1)
        )
        return Finding(
            kind=self.kind,
            severity=severity,
            score=top / threshold,
            metric="calls_per_session",
            baseline=typical,
            observed=float(top),
            window_s=60.0,
            summary=self.describe(
                ctx.use_case, len(runaway), threshold, typical, signals.max_session_id, top
            ),
            unit="calls",
            excess_cost_per_hour_usd=excess,
            example_session=signals.max_session_id,
            example_model=top_model(signals),
            details={"runaway_sessions": len(runaway), "threshold": round(threshold, 1)},
            onset=self.persistence.onset,
        )
