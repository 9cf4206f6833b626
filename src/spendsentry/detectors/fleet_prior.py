"""No blind first hour: a new use case judged against the fleet until its own baseline warms up.

Every kind learns a use case's first 60 to 120 minutes as its normal: a new
use case that starts out expensive (gpt-4o twice a second with 10k-token
prompts) would become its own baseline and never alert. Until it has been
watched for :attr:`~spendsentry.policy.FleetPrior.warmup_minutes`, two lenses
compare it with the fleet instead, and say so in the alert:

* :class:`PromptPrior` (``prompt_inflation``): input tokens per LLM call
  against the size 95% of the fleet's use cases stay under;
* :class:`SpendPrior` (``cost_spike``): spend per hour against what the
  fleet's largest use cases spend, with each call's cost against a typical
  call of the fleet on the same model (the price book's price of it).

The fleet is :class:`~spendsentry.policy.FleetPrior`, figures from the policy
(``[defaults.fleet_prior]``), not statistics the engine gathers: a worker's
engine sees only the use cases of its own input partitions, replay sees them
all, and alerts must not depend on how use cases fall on partitions.

A lens that fired keeps judging after the warm-up while its finding holds (a
problem does not end because the clock passed two hours); otherwise it falls
silent and the kind's own baseline takes over.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from spendsentry.alerts import Finding
from spendsentry.detectors.base import Persistence, UseCaseContext
from spendsentry.detectors.signals import finite, times, top_model
from spendsentry.windows import MinuteSignals

if TYPE_CHECKING:
    from spendsentry.policy import FleetPrior
    from spendsentry.pricing import PriceBook

#: What ``evidence.details.compared_with`` says of a finding judged against the fleet.
FLEET = "fleet"
#: Minutes of the window both lenses judge.
WINDOW = 5
#: Minutes a finding must hold before it is reported.
PERSISTENCE = 3
#: Dollars an hour of excess below which nothing is worth a look (the
#: ``unowned_spend`` floor): a new feature spending cents is left alone.
MIN_EXCESS_PER_HOUR_USD = 5.0


class FleetLens:
    """What both lenses share: the warm-up clock, the window and persistence."""

    kind: str

    def __init__(self, prior: FleetPrior, prices: PriceBook, sensitivity: float = 1.0) -> None:
        self.prior = prior
        self.prices = prices
        self.sensitivity = sensitivity
        #: Minutes watched since the use case's first event.
        self.minutes = 0
        self.persistence = Persistence(PERSISTENCE)
        #: The last minutes' (LLM calls, their input tokens, cost).
        self.recent: deque[tuple[float, float, float]] = deque(maxlen=WINDOW)

    def warmed(self) -> None:
        """Mark the use case as established (an older snapshot had no such lens)."""
        self.minutes = self.prior.warmup_minutes + 1

    def observe(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        if self.minutes == 0 and not ctx.new_use_case:
            # There when the engine began watching: established, not new.
            self.warmed()
        self.minutes += 1
        if self.minutes > self.prior.warmup_minutes and not self.persistence.active:
            if self.recent:
                self.recent.clear()  # its own baseline has taken over
            return None
        self.recent.append(
            (float(signals.llm_calls), float(signals.llm_input_tokens), signals.cost)
        )
        finding = self.judge(signals, ctx)
        if not self.persistence.update(finding is not None, signals.start) or finding is None:
            return None
        finding.onset = self.persistence.onset
        return finding

    def judge(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        raise NotImplementedError

    def window(self) -> tuple[float, float, float]:
        """LLM calls, their input tokens and the cost over the window."""
        calls = sum(r[0] for r in self.recent)
        tokens = sum(r[1] for r in self.recent)
        cost = sum(r[2] for r in self.recent)
        return calls, tokens, cost

    def typical_call_usd(self, model: str | None) -> float | None:
        """What a typical call of the fleet costs on ``model`` (None: no price)."""
        p = self.prior
        return self.prices.cost(
            model, None, round(p.typical_prompt_tokens), round(p.typical_output_tokens), 0
        )

    def age(self) -> str:
        return f"{self.minutes} minute{'s' if self.minutes != 1 else ''}"

    def details(self, signals: MinuteSignals, calls: float, cost: float) -> dict[str, object]:
        """The evidence both lenses give: what was compared with what."""
        model = top_model(signals)
        typical = self.typical_call_usd(model)
        per_call = cost / calls if calls else 0.0
        return {
            "compared_with": FLEET,
            "minutes_observed": self.minutes,
            "warmup_minutes": self.prior.warmup_minutes,
            "cost_per_call_usd": round(per_call, 6),
            "fleet_cost_per_call_usd": None if typical is None else round(typical, 6),
            "cost_per_call_ratio": (finite(per_call / typical) if typical and calls else None),
        }

    def per_call_sentence(self, signals: MinuteSignals, calls: float, cost: float) -> str:
        model = top_model(signals)
        typical = self.typical_call_usd(model)
        if not typical or not calls:
            return ""
        per_call = cost / calls
        return (
            f" Each call costs ${per_call:,.4f}, {times(per_call / typical)} a typical "
            f"{model} call in the fleet (${typical:,.4f})."
        )

    def caveat(self) -> str:
        return (
            f" Compared with the fleet, not with its own history: it is {self.age()} old "
            f"and its own baseline takes {self.prior.warmup_minutes} minutes to learn."
        )


class PromptPrior(FleetLens):
    """Input tokens per LLM call over the last 5 minutes against the fleet's 95th percentile.

    >>> from spendsentry.policy import FleetPrior
    >>> from spendsentry.pricing import PriceBook
    >>> lens = PromptPrior(FleetPrior(), PriceBook())
    >>> lens.threshold
    2.0
    """

    kind = "prompt_inflation"
    #: LLM calls in the window before their mean size means anything.
    MIN_CALLS = 15

    def __init__(self, prior: FleetPrior, prices: PriceBook, sensitivity: float = 1.0) -> None:
        super().__init__(prior, prices, sensitivity)
        #: Twice the fleet's 95th percentile (excess over 1 scaled by sensitivity).
        self.threshold = 1.0 + 1.0 / sensitivity

    def judge(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        calls, tokens, cost = self.window()
        reference = self.prior.prompt_tokens_p95
        if calls < self.MIN_CALLS or reference <= 0:
            return None
        size = tokens / calls
        ratio = size / reference
        # The cost of what is over the fleet's size, assuming cost follows prompts.
        excess = cost * 60.0 / len(self.recent) * (1.0 - 1.0 / ratio) if ratio > 1 else 0.0
        if ratio < self.threshold or excess < MIN_EXCESS_PER_HOUR_USD / self.sensitivity:
            return None
        details = self.details(signals, calls, cost)
        details.update(ratio=round(ratio, 3), fleet_prompt_tokens_p95=reference)
        summary = (
            f"{signals.use_case}: a new use case sends {size:,.0f} input tokens per call, "
            f"{times(ratio)} the {reference:,.0f} that 95% of the fleet's use cases stay "
            f"under, about ${excess:,.2f} an hour more than at the fleet's size."
            + self.per_call_sentence(signals, calls, cost)
            + self.caveat()
            + " Check its prompts, context and retrieval."
        )
        return Finding(
            kind=self.kind,
            severity="warning",
            score=ratio / self.threshold,
            metric="input_tokens_per_call",
            baseline=reference,
            observed=size,
            window_s=60.0 * WINDOW,
            summary=summary,
            unit="tokens",
            excess_cost_per_hour_usd=excess,
            example_session=signals.max_session_id,
            example_model=top_model(signals),
            details=details,
        )


class SpendPrior(FleetLens):
    """Spend per hour over the last 5 minutes against the fleet's largest use cases.

    >>> from spendsentry.policy import FleetPrior
    >>> from spendsentry.pricing import PriceBook
    >>> SpendPrior(FleetPrior(), PriceBook(), sensitivity=2.0).threshold
    12.5
    """

    kind = "cost_spike"
    #: Calls in the window before a rate means anything (a handful of dear
    #: calls is not a rate).
    MIN_CALLS = 30

    def __init__(self, prior: FleetPrior, prices: PriceBook, sensitivity: float = 1.0) -> None:
        super().__init__(prior, prices, sensitivity)
        self.threshold = prior.largest_use_case_per_hour_usd / sensitivity

    def judge(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        calls, _, cost = self.window()
        if ctx.last_5m.calls < self.MIN_CALLS or self.threshold <= 0:
            return None
        pace = cost * 60.0 / len(self.recent)
        if pace < self.threshold:
            return None
        largest = self.prior.largest_use_case_per_hour_usd
        details = self.details(signals, calls, cost)
        details.update(ratio=finite(pace / largest), fleet_largest_use_case_per_hour_usd=largest)
        summary = (
            f"{signals.use_case} is spending ${pace:,.2f}/h, {times(pace / largest)} what the "
            f"fleet's largest use cases spend (${largest:,.2f}/h)."
            + self.per_call_sentence(signals, calls, cost)
            + self.caveat()
            + " Check call volume by caller and whether it should run at this rate."
        )
        return Finding(
            kind=self.kind,
            severity="warning",
            score=pace / self.threshold,
            metric="cost_usd_per_minute",
            baseline=largest / 60.0,
            observed=pace / 60.0,
            window_s=60.0 * WINDOW,
            summary=summary,
            unit="USD/min",
            excess_cost_per_hour_usd=max(0.0, pace - largest),
            example_model=top_model(signals),
            details=details,
        )
