"""unowned_spend: a use case that no policy names spends enough that somebody should own it.

A use case without a policy of its own falls back to ``[defaults]``: nobody
set its owner, budget or tier, and every other kind learns its first hour as
its baseline. Once its spend over the last hour reaches both floors of
``[defaults.unowned_spend]`` (dollars, and a share of what the whole fleet
spent), or its pace over the last 5 minutes has for 3 minutes in a row (a use
case minutes old has not had an hour to spend in), this kind says so at once,
with who calls it (team, agent, service from the events) and on which models,
so the platform team knows whom to ask.
Once per use case: the incident stays open while the spend stays above the
floors and never fires again for that use case (the latch is in the
snapshot); a policy that names the use case builds no such monitor at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spendsentry.alerts import Finding
from spendsentry.detectors.base import Persistence, UseCaseContext
from spendsentry.detectors.kinds.base import Kind, Tuning
from spendsentry.windows import MinuteSignals

if TYPE_CHECKING:
    from spendsentry.policy import Policy, UnownedFloors
    from spendsentry.pricing import PriceBook

#: Callers and models remembered per use case (evidence, not statistics).
MAX_NAMED = 16
#: Where callers or models beyond :data:`MAX_NAMED` are counted.
OTHERS = "(others)"
#: Callers and models an alert names.
SHOWN = 3

#: Minutes a pace over the floors must hold before it counts (one dear call is
#: not a rate).
PACE_MINUTES = 3

#: The latch: watching, reporting (the one incident is open), done.
WATCHING, REPORTING, DONE = 0, 1, 2


def caller_label(team: str | None, agent: str | None, service: str | None) -> str:
    """How a caller is named in the evidence.

    >>> caller_label("growth", None, "pilot-api")
    'team=growth service=pilot-api'
    >>> caller_label(None, None, None)
    'unnamed (no team, agent_id or service on the events)'
    """
    parts = [f"{k}={v}" for k, v in (("team", team), ("agent", agent), ("service", service)) if v]
    return " ".join(parts) or "unnamed (no team, agent_id or service on the events)"


class UnownedSpend(Kind):
    """Spend over the last hour at both floors, for a use case that no policy names.

    >>> from spendsentry.policy import Policy
    >>> from spendsentry.pricing import PriceBook
    >>> UnownedSpend.build(Policy("pilot", explicit=True), PriceBook()) is None
    True
    >>> m = UnownedSpend.build(Policy("pilot"), PriceBook())
    >>> m.min_usd, m.min_share
    (5.0, 0.0)
    """

    kind = "unowned_spend"

    def __init__(self, floors: UnownedFloors, sensitivity: float = 1.0) -> None:
        self.min_usd = floors.min_cost_per_hour_usd / sensitivity
        self.min_share = min(1.0, floors.min_fleet_share / sensitivity)
        self.state = WATCHING
        #: Minutes in a row whose pace alone reached the floors.
        self.pace = Persistence(PACE_MINUTES)
        #: Calls per caller label and USD per model since the use case appeared.
        self.callers: dict[str, int] = {}
        self.models: dict[str, float] = {}
        #: Start of its first closed minute with data (epoch seconds).
        self.first_seen: float | None = None

    @classmethod
    def build(cls, policy: Policy, prices: PriceBook) -> UnownedSpend | None:
        # A policy of its own is an owner: nothing to say.
        if policy.explicit or (t := Tuning.of(policy, cls.kind)) is None:
            return None
        return cls(policy.unowned, t.sensitivity)

    def observe(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        if self.state == DONE:
            return None
        self._remember(signals)
        spent = ctx.last_1h.cost
        # A use case minutes old has not had an hour to spend in: its pace
        # (the last 5 minutes, per hour) counts once it has held for PACE_MINUTES.
        pace = ctx.last_5m.cost * 12.0
        paced = self.pace.update(self._over(pace, spent, ctx), signals.start)
        hourly = max(spent, pace) if paced else spent
        if not self._over(hourly, spent, ctx):
            if self.state == REPORTING:
                self.state = DONE  # its one incident ends; resolves after quiet minutes
            return None
        self.state = REPORTING
        share = self._share(hourly, spent, ctx) if self.min_share > 0 else None
        return self._finding(signals, spent, pace, hourly, share)

    def _share(self, hourly: float, spent: float, ctx: UseCaseContext) -> float:
        """``hourly`` over the fleet's last hour with this use case's at ``hourly``.

        The fleet total holds this use case's last hour; a lone monitor (0) is its own fleet.
        """
        fleet = max(ctx.fleet_cost_1h, spent) - spent + hourly
        return hourly / fleet if fleet > 0 else 0.0

    def _over(self, hourly: float, spent: float, ctx: UseCaseContext) -> bool:
        # Without a share floor the fleet is not consulted: the alert is then
        # the same whatever partitions the use cases fall on (replay = worker).
        return (
            hourly > 0
            and hourly >= self.min_usd
            and (self.min_share <= 0 or self._share(hourly, spent, ctx) >= self.min_share)
        )

    def _remember(self, s: MinuteSignals) -> None:
        if s.calls and self.first_seen is None:
            self.first_seen = s.start
        for team, agent, service, n in s.callers:
            _count(self.callers, caller_label(team, agent, service), n)
        for model, m in s.models.items():
            _count(self.models, model, m.cost)

    def _finding(
        self, s: MinuteSignals, spent: float, pace: float, hourly: float, share: float | None
    ) -> Finding:
        callers = _top(self.callers)
        models = _top(self.models)
        by = "; ".join(callers) or "no caller named"
        on = ", ".join(models) or "no model named"
        summary = (
            f"{s.use_case}: no policy names this use case and it spent ${spent:,.2f} in the "
            f"last hour, at ${pace:,.2f} an hour over the last 5 minutes"
            + ("" if share is None else f" ({share:.0%} of all AI spend)")
            + f", on {on}; called by {by}. Ask them for an owner and write its policy "
            f"(owner, budget, tier)."
        )
        return Finding(
            kind=self.kind,
            severity="warning",
            score=hourly / self.min_usd if self.min_usd > 0 else hourly,
            metric="cost_per_hour_usd",
            baseline=self.min_usd,
            observed=hourly,
            window_s=3600.0,
            summary=summary,
            unit="usd",
            example_model=models[0] if models else None,
            details={
                "policy": "none: [defaults] applies",
                "cost_last_hour_usd": round(spent, 4),
                "pace_per_hour_usd": round(pace, 4),
                "fleet_share": None if share is None else round(share, 4),
                "min_cost_per_hour_usd": self.min_usd,
                "min_fleet_share": self.min_share,
                "callers": callers,
                "models": models,
            },
            onset=self.first_seen,
        )


def _count(into: dict[str, int] | dict[str, float], key: str, n: float) -> None:
    """Add ``n`` under ``key``, or under :data:`OTHERS` once :data:`MAX_NAMED` are held."""
    if key not in into and len(into) >= MAX_NAMED:
        key = OTHERS
    into[key] = into.get(key, 0) + n  # type: ignore[assignment]


def _top(counts: dict[str, int] | dict[str, float]) -> list[str]:
    """The largest :data:`SHOWN` names (ties by name), others last."""
    named = sorted(((v, k) for k, v in counts.items() if k != OTHERS), key=lambda x: (-x[0], x[1]))
    return [k for _, k in named[:SHOWN]]
