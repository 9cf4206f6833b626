"""budget_threshold: spend crossed a share of a budget this period (50 %, 80 %, 100 % by default).

``budget_burn`` pages when the burn is abnormal (or the budget is spent);
this kind warns early, whatever the rate: one finding when the spend of the
current hour, day or month (UTC; each budget the policy sets) first reaches a
threshold of ``Budgets.thresholds``, never again for that threshold in that
period, re-armed when the period resets. Severity rises with the threshold:
info below 80 %, warning below 100 %, critical from 100 % (the budget spent).

Below 100 % the finding says when the budget runs out: the last hour's rate
along the use case's daily shape (:func:`budget_burn._rest`) up to the
period's end. A projection that stays under the budget until the period
resets says the budget holds this period, not a time after the reset.

Its alerts are one per period and budget (:class:`spendsentry.budget_periods.PeriodTracker`):
``firing`` at the first threshold, ``escalated`` at each next one (one
page that escalates, threaded in Slack under one incident), ``resolved``
when the period resets.

>>> severity_of(0.5), severity_of(0.8), severity_of(1.0), severity_of(1.2)
('info', 'warning', 'critical', 'critical')
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from spendsentry.alerts import Finding
from spendsentry.detectors.base import UseCaseContext
from spendsentry.detectors.kinds.base import Kind, Tuning
from spendsentry.detectors.kinds.budget_burn import _clock, _rest
from spendsentry.timeutil import format_ts
from spendsentry.windows import NANO, MinuteSignals

if TYPE_CHECKING:
    from spendsentry.policy import Policy
    from spendsentry.pricing import PriceBook

#: Budget periods in the order a tie between two crossings of one minute is broken.
PERIODS: tuple[str, ...] = ("hour", "day", "month")


def severity_of(threshold: float) -> str:
    """The severity of crossing ``threshold`` (a share of the budget)."""
    if threshold >= 1.0:
        return "critical"
    return "warning" if threshold >= 0.8 else "info"


def period_bounds(period: str, minute: int) -> tuple[int, int]:
    """The first minute of ``period`` holding ``minute`` and the first of the next one (UTC).

    >>> period_bounds("day", 29_893_000)
    (29892960, 29894400)
    >>> [format_ts(m * 60) for m in period_bounds("month", 29_893_000)]
    ['2026-11-01T00:00:00.000Z', '2026-12-01T00:00:00.000Z']
    """
    if period == "hour":
        return minute // 60 * 60, minute // 60 * 60 + 60
    if period == "day":
        return minute // 1440 * 1440, minute // 1440 * 1440 + 1440
    now = datetime.fromtimestamp(minute * 60, tz=UTC)
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    end = datetime(year, month, 1, tzinfo=UTC)
    return int(start.timestamp()) // 60, int(end.timestamp()) // 60


class BudgetThreshold(Kind):
    """One finding per threshold of a budget crossed, per period; re-armed at the reset.

    :attr:`fired` holds, per period, ``[first minute of the period, thresholds
    fired]``: what a snapshot keeps, so a restore mid-period does not warn again.

    >>> from spendsentry.policy import Budgets, Policy
    >>> from spendsentry.pricing import PriceBook
    >>> BudgetThreshold.build(Policy("chat", budgets=Budgets(cost_per_day_usd=10.0)),
    ...                       PriceBook()).thresholds
    (0.5, 0.8, 1.0)
    """

    kind = "budget_threshold"

    def __init__(self, thresholds: tuple[float, ...]) -> None:
        self.thresholds = thresholds
        self.fired: dict[str, list[int]] = {}

    @classmethod
    def build(cls, policy: Policy, prices: PriceBook) -> BudgetThreshold | None:
        # Built without a cost budget too (it then finds nothing): the policy's
        # budgets are read each minute, as budget_burn reads them.
        if Tuning.of(policy, cls.kind) is None:
            return None
        return cls(tuple(policy.budgets.thresholds))

    def observe(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        b = ctx.policy.budgets
        p = ctx.periods
        budgets = {
            "hour": (b.cost_per_hour_usd, p.cost_hour),
            "day": (b.cost_per_day_usd, p.cost_day),
            "month": (b.cost_per_month_usd, p.cost_month),
        }
        best: tuple[float, str, int] | None = None
        for period in PERIODS:
            budget, spent = budgets[period]
            if not budget:
                continue
            start, _ = period_bounds(period, signals.minute)
            row = self.fired.get(period)
            if row is None or row[0] != start:
                row = self.fired[period] = [start, 0]  # a new period: re-armed
            # In nano-dollars: a float sum of cents drifts under the threshold.
            spent_nano = round(spent * NANO)
            crossed = sum(1 for t in self.thresholds if spent_nano >= round(t * budget * NANO))
            # The highest crossing of the minute is said; one of another period
            # in the same minute is said the next minute (it stays crossed).
            if crossed > row[1] and (best is None or self.thresholds[crossed - 1] > best[0]):
                best = (self.thresholds[crossed - 1], period, crossed)
        if best is None:
            return None
        threshold, period, crossed = best
        self.fired[period][1] = crossed
        budget, spent = budgets[period]
        assert budget
        return self._finding(signals, ctx, period, threshold, budget, spent)

    def _finding(
        self,
        s: MinuteSignals,
        ctx: UseCaseContext,
        period: str,
        threshold: float,
        budget: float,
        spent: float,
    ) -> Finding:
        start, end = period_bounds(period, s.minute)
        now = s.minute + 1
        left = end - now
        rate = ctx.last_1h.cost / max(ctx.last_1h.minutes_filled, 1)
        projected = spent + (_rest(ctx, now, rate, left, 60) if left > 0 else 0.0)
        details: dict[str, object] = {
            "period": period,
            "threshold": threshold,
            "spent_usd": round(spent, 4),
            "budget_usd": budget,
            "share": round(spent / budget, 4),
            "period_start": format_ts(start * 60.0),
            "resets_at": format_ts(end * 60.0),
            "projected_usd": round(projected, 4),
            "exhausted_at": None,
        }
        said = f"{threshold:.0%} of its ${budget:,.2f}/{period} budget"
        head = f"{s.use_case} has spent ${spent:,.2f} this {period}, past {said}"
        if round(spent * NANO) >= round(budget * NANO):
            tail = "; find what drives the spend before raising the budget."
        elif projected <= budget:
            tail = (
                f"; at the last hour's rate the budget holds this {period} "
                f"(projected ${projected:,.2f} by the reset at {_clock(end * 60.0, s.end)})."
            )
        else:
            # Along the projection, linearly: always before the reset.
            runs_out = now + left * (budget - spent) / (projected - spent)
            details["exhausted_at"] = format_ts(runs_out * 60.0)
            tail = (
                f"; at the last hour's rate it runs out at {_clock(runs_out * 60.0, s.end)}, "
                f"before the {period} resets (projected ${projected:,.2f})."
            )
        return Finding(
            kind=self.kind,
            severity=severity_of(threshold),
            score=spent / budget,
            metric=f"cost_per_{period}_usd",
            baseline=budget,
            observed=spent,
            window_s=60.0 * (now - start),
            summary=head + tail,
            unit="USD",
            details=details,
            onset=start * 60.0,
        )
