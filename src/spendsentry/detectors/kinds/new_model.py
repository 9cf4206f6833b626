"""new_model: a use case starts calling a model it never used, at a cost that shows in the bill.

During its first :data:`WARMUP_MINUTES` minutes (from its first event, idle
minutes included: a sparse use case is not young for days) a use case's models
are learned as its own. After that, the first call to a model it never used
starts a watch of up to :data:`WATCH_MINUTES` minutes: its calls, and what
they cost against the same calls at the use case's usual cost per call (a
decayed average over the models it knows). A model adopted (at least
:data:`MIN_CALLS` calls over :data:`MIN_MINUTES` minutes) whose extra cost,
at the watch's pace, comes to :data:`MIN_MONTHLY_USD` a month or more gives
one info alert with that monthly difference. The watch is judged each minute
from its :data:`EARLY_MINUTES`-th on, with the pace over the minutes watched
so far: a trial that meets the adoption bar (calls in distinct minutes) in
half the watch is reported then, one that starts slowly when it meets it,
and a watch that never does ends after :data:`WATCH_MINUTES`. Every new model, adopted or not,
is listed in :attr:`NewModel.recent` for the status page. Experiments try
models on purpose: no monitor for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spendsentry.alerts import Finding
from spendsentry.detectors.base import UseCaseContext
from spendsentry.detectors.kinds.base import EXPERIMENT, Kind, Tuning
from spendsentry.windows import MinuteSignals

if TYPE_CHECKING:
    from spendsentry.policy import Policy
    from spendsentry.pricing import PriceBook

#: Minutes from its first event whose models are the use case's own.
WARMUP_MINUTES = 120
#: Minutes a new model is watched from its first call.
WATCH_MINUTES = 10
#: The first look at a watch: the adoption bar (MIN_CALLS over MIN_MINUTES)
#: met within this many minutes is the same evidence of adoption, not a
#: stray fallback, as over the whole watch (the bar counts calls, not
#: minutes); the monthly pace is then measured over the minutes watched.
EARLY_MINUTES = 5
#: Adoption, not a stray fallback: calls, in this many minutes of the watch.
MIN_CALLS = 5
MIN_MINUTES = 3
#: The extra cost a month that is worth an info alert (sensitivity 1).
MIN_MONTHLY_USD = 100.0
#: Models remembered per use case (model names come from producers).
MAX_MODELS = 64
#: New models listed for the status page.
MAX_RECENT = 5
#: Half-life, in minutes, of the usual cost per call (a day).
HALF_LIFE = 1440.0
MINUTES_PER_MONTH = 30 * 1440


class NewModel(Kind):
    """First calls to a model the use case never used, with the cost difference per month.

    >>> from spendsentry.policy import Policy
    >>> from spendsentry.pricing import PriceBook
    >>> NewModel.build(Policy("lab", tier="experiment"), PriceBook()) is None
    True
    >>> NewModel.build(Policy("chat"), PriceBook()).min_monthly
    100.0
    """

    kind = "new_model"

    def __init__(self, min_monthly: float) -> None:
        self.min_monthly = min_monthly
        #: Model -> the minute it was first seen.
        self.known: dict[str, int] = {}
        self.minutes = 0
        #: Decayed cost and calls of the known models (the usual cost per call).
        self.usual_cost = 0.0
        self.usual_calls = 0.0
        #: New model -> [first minute, calls, cost, minutes with calls] while watched.
        self.watch: dict[str, list[float]] = {}
        #: [model, first seen (epoch s), monthly difference or None while watched].
        self.recent: list[list[float | str | None]] = []

    @classmethod
    def build(cls, policy: Policy, prices: PriceBook) -> NewModel | None:
        if policy.tier == EXPERIMENT or (t := Tuning.of(policy, cls.kind)) is None:
            return None
        return cls(MIN_MONTHLY_USD / t.sensitivity)

    def observe(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        models = signals.models
        self.minutes += 1
        decay = 0.5 ** (1.0 / HALF_LIFE)
        self.usual_cost *= decay
        self.usual_calls *= decay
        for name in sorted(models):
            m = models[name]
            if name in self.known and name not in self.watch:
                self.usual_cost += m.cost
                self.usual_calls += m.calls
            elif name not in self.known and m.calls and len(self.known) < MAX_MODELS:
                self.known[name] = signals.minute
                if self.minutes > WARMUP_MINUTES:
                    self.watch[name] = [float(signals.minute), 0.0, 0.0, 0.0]
                    self.recent = [*self.recent, [name, signals.start, None]][-MAX_RECENT:]
        return self._judge(signals)

    def _judge(self, signals: MinuteSignals) -> Finding | None:
        found: list[tuple[float, str, list[float]]] = []
        for name in sorted(self.watch):
            w = self.watch[name]
            m = signals.models.get(name)
            if m is not None and m.calls:
                w[1] += m.calls
                w[2] += m.cost
                w[3] += 1
            watched = int(signals.minute - w[0]) + 1
            if watched < EARLY_MINUTES:
                continue
            monthly = self.monthly_difference(w, watched)
            adopted = w[1] >= MIN_CALLS and w[3] >= MIN_MINUTES and monthly >= self.min_monthly
            if not adopted and watched < WATCH_MINUTES:
                continue
            del self.watch[name]
            for row in self.recent:
                if row[0] == name:
                    row[2] = round(monthly, 2)
            if adopted:
                found.append((monthly, name, [*w, float(watched)]))
        if not found:
            return None
        monthly, name, w = max(found)
        return self._finding(signals, name, w, monthly)

    def monthly_difference(self, w: list[float], minutes: int = WATCH_MINUTES) -> float:
        """Extra USD a month of a watch's calls over ``minutes`` at its pace, against the
        usual cost per call."""
        usual = self.usual_cost / self.usual_calls if self.usual_calls > 0 else 0.0
        return (w[2] - w[1] * usual) * MINUTES_PER_MONTH / minutes

    def _finding(self, s: MinuteSignals, name: str, w: list[float], monthly: float) -> Finding:
        usual = self.usual_cost / self.usual_calls if self.usual_calls > 0 else 0.0
        per_call = w[2] / w[1] if w[1] else 0.0
        watched = int(w[4])
        summary = (
            f"{s.use_case}: started calling {name}, a model it never used before "
            f"({w[1]:.0f} calls in {watched} minutes at ${per_call:,.4f} a call against "
            f"its usual ${usual:,.4f}); at this pace that is ${monthly:,.0f} a month more."
        )
        return Finding(
            kind=self.kind,
            severity="info",
            score=monthly / self.min_monthly if self.min_monthly > 0 else monthly,
            metric="new_model_cost_per_month_usd",
            baseline=self.min_monthly,
            observed=monthly,
            window_s=watched * 60.0,
            summary=summary,
            unit="usd",
            example_model=name,
            details={
                "model": name,
                "calls": int(w[1]),
                "cost_per_call_usd": round(per_call, 6),
                "usual_cost_per_call_usd": round(usual, 6),
                "known_models": sorted(m for m in self.known if m != name)[:10],
            },
            onset=w[0] * 60.0,
        )
