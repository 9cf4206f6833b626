"""cost_per_outcome: an outcome costs more than usual, or more than the policy's target."""

from __future__ import annotations

from typing import TYPE_CHECKING

from spendsentry.alerts import Finding
from spendsentry.detectors.base import Persistence, UseCaseContext
from spendsentry.detectors.kinds.base import Composite, Kind, Tuning
from spendsentry.detectors.kinds.ratio import RatioKind
from spendsentry.detectors.outcomes import OutcomeDropDetector
from spendsentry.detectors.shift import RatioShiftDetector, Shift
from spendsentry.detectors.signals import cost_per_outcome, top_model
from spendsentry.windows import MinuteSignals

if TYPE_CHECKING:
    from spendsentry.policy import Policy
    from spendsentry.pricing import PriceBook


class CostPerOutcome(Composite):
    """Worse than usual (:class:`UsualCostPerOutcome`), outcomes falling while calls
    go on (:class:`OutcomeDrop`, the most common cause and the most urgent), or
    worse than the policy's target (:class:`OutcomeTarget`, the economic SLO,
    when the policy sets one).

    >>> from spendsentry.policy import Policy
    >>> from spendsentry.pricing import PriceBook
    >>> m = CostPerOutcome.build(Policy("desk", cost_per_outcome_target_usd=0.02), PriceBook())
    >>> [type(lens).__name__ for lens in m.monitors]
    ['UsualCostPerOutcome', 'OutcomeDrop', 'OutcomeTarget']
    """

    kind = "cost_per_outcome"

    @classmethod
    def build(cls, policy: Policy, prices: PriceBook) -> CostPerOutcome | None:
        if (usual := UsualCostPerOutcome.build(policy, prices)) is None:
            return None
        lenses: list[Kind] = [usual]
        for lens in (OutcomeDrop.build(policy, prices), OutcomeTarget.build(policy, prices)):
            if lens is not None:
                lenses.append(lens)
        return cls(lenses)


class UsualCostPerOutcome(RatioKind):
    """Cost per outcome (the policy's named outcome) against its baseline.

    A 45-minute window with a higher z bar catches a sustained shift of a use
    case whose outcomes are sparse.

    >>> m = UsualCostPerOutcome(RatioShiftDetector(), critical_ratio=2.5)
    >>> sentence = m.describe(Shift(0.012, 0.004, 3.0, 7.0, 30), MinuteSignals("desk", 0))
    >>> print(sentence)  # doctest: +NORMALIZE_WHITESPACE
    desk: each outcome now costs $0.012, 3.0x the usual $0.004; check whether outcomes dropped
    (a broken flow) or cost per call rose.
    """

    kind = "cost_per_outcome"
    metric = "cost_per_outcome_usd"
    unit = "USD"

    @classmethod
    def build(cls, policy: Policy, prices: PriceBook) -> UsualCostPerOutcome | None:
        if (t := Tuning.of(policy, cls.kind)) is None:
            return None
        detector = RatioShiftDetector(
            window=10,
            half_life=480,
            warmup=200,
            min_ratio=t.ratio(1.5),
            z_threshold=t.z(4.0),
            min_den=15,
            long_window=45 if t.long_windows else 0,
            long_z_threshold=t.z(5.5),
            # Outcomes are sparse at times (a few an hour at a weekend).
            baseline_uncertainty=True,
        )
        return cls(detector, critical_ratio=2.5, persistence=3, num_cap=3.0)

    def extract(self, signals: MinuteSignals) -> tuple[float, float]:
        return cost_per_outcome(signals)

    def describe(self, shift: Shift, signals: MinuteSignals) -> str:
        return (
            f"{signals.use_case}: each outcome now costs ${shift.observed:.3f}, "
            f"{shift.ratio:.1f}x the usual ${shift.baseline:.3f}; check whether outcomes "
            f"dropped (a broken flow) or cost per call rose."
        )


class OutcomeDrop(Kind):
    """Outcomes per minute far below what the use case's calls usually bring.

    The ratio lens needs a window of outcomes to move past its noise (8 to 26
    minutes on a broken flow); the outcomes themselves are counts, judged
    minute by minute by :class:`OutcomeDropDetector`. Off for experiments,
    whose outcomes change on purpose.

    >>> lens = OutcomeDrop(OutcomeDropDetector(), "ticket_resolved")
    >>> print(lens.describe("desk", 0.3, 3.0, 120.0, minutes=4))  # doctest: +NORMALIZE_WHITESPACE
    desk: 0.3 ticket_resolved a minute over the last 4 minutes, against 3.0 expected from
    its calls (90% missing) while calls go on at 120/min; check the outcome flow (a
    broken integration or a failing last step).
    """

    kind = "cost_per_outcome"

    def __init__(self, detector: OutcomeDropDetector, outcome: str | None = None) -> None:
        self.detector = detector
        self.outcome = outcome
        self._onset: float | None = None

    @classmethod
    def build(cls, policy: Policy, prices: PriceBook) -> OutcomeDrop | None:
        t = Tuning.of(policy, cls.kind)
        if t is None or not t.long_windows:
            return None
        return cls(OutcomeDropDetector(threshold=10.0 / t.sensitivity), policy.outcome)

    def describe(
        self, use_case: str, observed: float, expected: float, calls: float, minutes: int
    ) -> str:
        """The sentence for ``observed`` outcomes a minute against ``expected``."""
        name = self.outcome or "outcomes"
        missing = 1.0 - observed / expected if expected > 0 else 0.0
        return (
            f"{use_case}: {observed:.1f} {name} a minute over the last {minutes} minutes, "
            f"against {expected:.1f} expected from its calls ({missing:.0%} missing) while "
            f"calls go on at {calls:.0f}/min; check the outcome flow (a broken integration "
            f"or a failing last step)."
        )

    def observe(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        d = self.detector
        score = d.learn_one(float(signals.outcomes), float(signals.calls))
        if d.minutes == 1:
            self._onset = signals.start
        if score < 1.0 or d.expected <= 0:
            return None
        minutes = max(d.minutes, 1)
        observed, expected = d.observed / minutes, d.expected / minutes
        calls = ctx.last_5m.calls / max(ctx.last_5m.minutes_filled, 1)
        missing = 1.0 - observed / expected
        spend = ctx.last_5m.cost / max(ctx.last_5m.minutes_filled, 1) * 60.0
        return Finding(
            kind=self.kind,
            severity="critical" if missing >= 0.75 else "warning",
            score=score,
            metric="outcomes_per_minute",
            baseline=expected,
            observed=observed,
            window_s=60.0 * minutes,
            summary=self.describe(ctx.use_case, observed, expected, calls, minutes),
            unit="outcomes/min",
            # The share of the spend whose outcomes are missing.
            excess_cost_per_hour_usd=spend * missing,
            example_model=top_model(signals),
            details={
                "missing_share": round(missing, 3),
                "dispersion": round(d.dispersion, 3),
                "calls_per_minute": round(calls, 2),
            },
            onset=self._onset,
        )


class OutcomeTarget(Kind):
    """The economic SLO: cost per outcome over the last hour above the policy's target.

    The baseline-relative lens asks "worse than usual?"; this asks "worse than
    promised?", which is what a target in a policy means. A use case can drift
    over its target slowly enough that no window ever looks unusual; the hour's
    ratio catches that, and a sudden regression past the target too, once it
    has moved the hour. The hour, not a few minutes: outcomes are sparse (a
    ticket resolves every few minutes), and a breach of an hourly promise is
    what is reported.

    Parameters
    ----------
    target
        USD per outcome (the policy's ``cost_per_outcome.target_usd``).
    outcome
        The outcome's name, for the sentence.
    min_outcomes
        Outcomes the hour must hold before its ratio is judged.
    min_minutes
        Minutes of the hour that must be filled (after a start or a gap).
    persistence
        Minutes the breach must hold.
    """

    kind = "cost_per_outcome"

    def __init__(
        self,
        target: float,
        outcome: str | None = None,
        min_outcomes: int = 20,
        min_minutes: int = 30,
        persistence: int = 5,
    ) -> None:
        self.target = target
        self.outcome = outcome
        self.min_outcomes = min_outcomes
        self.min_minutes = min_minutes
        self.persistence = Persistence(persistence)

    @classmethod
    def build(cls, policy: Policy, prices: PriceBook) -> OutcomeTarget | None:
        """The target check of ``policy``; None without a target (or with the kind off)."""
        target = policy.cost_per_outcome_target_usd
        if not target or Tuning.of(policy, cls.kind) is None:
            return None
        return cls(target, policy.outcome)

    def describe(self, ctx: UseCaseContext, per_outcome: float) -> str:
        """The sentence a human reads about an hour at ``per_outcome``."""
        name = self.outcome or "outcome"
        return (
            f"{ctx.use_case}: each {name} cost ${per_outcome:.4f} over the last hour, "
            f"{per_outcome / self.target:.1f}x its ${self.target:.4f} target; check whether "
            f"outcomes dropped (a broken flow) or cost per call rose."
        )

    def observe(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        hour = ctx.last_1h
        per_outcome = hour.cost_per_outcome
        judged = hour.minutes_filled >= self.min_minutes and hour.outcomes >= self.min_outcomes
        breached = judged and per_outcome is not None and per_outcome > self.target
        if not self.persistence.update(breached, signals.start) or per_outcome is None:
            return None
        ratio = per_outcome / self.target
        hours = hour.minutes_filled / 60.0
        return Finding(
            kind=self.kind,
            severity="critical" if ratio >= 2.0 else "warning",
            score=ratio,
            metric="cost_per_outcome_usd_1h",
            baseline=self.target,
            observed=per_outcome,
            window_s=60.0 * hour.minutes_filled,
            summary=self.describe(ctx, per_outcome),
            unit="USD",
            # What the hour spent beyond what its outcomes were allowed to cost.
            excess_cost_per_hour_usd=max(0.0, hour.cost - self.target * hour.outcomes) / hours,
            example_model=top_model(signals),
            details={"target_usd": self.target, "outcomes_1h": hour.outcomes},
            onset=self.persistence.onset,
        )
