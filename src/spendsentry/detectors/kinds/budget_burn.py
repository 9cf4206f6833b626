"""budget_burn: a budget is spent, or the burn rate will exhaust it before its period ends."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from spendsentry.alerts import Finding
from spendsentry.detectors.base import Persistence, UseCaseContext
from spendsentry.detectors.burn import BurnRateDetector
from spendsentry.detectors.kinds.base import Kind, Tuning
from spendsentry.timeutil import format_ts
from spendsentry.windows import MinuteSignals

if TYPE_CHECKING:
    from spendsentry.policy import Policy
    from spendsentry.pricing import PriceBook

#: A burn up to this many times what the learned days spent at the same time of
#: day is the day's shape (a nightly batch, office hours), projected along it.
EXPLAINED = 1.8

#: (period, budget, spent, projected, minutes until exhausted)
Overrun = tuple[str, float, float, float, float]


class BudgetBurn(Kind):
    """Projects spend to the end of the hour, day and month against the policy budgets.

    A budget already spent always fires, and so does a minute over the
    policy's tokens-per-minute budget. A projected overrun fires only while
    the burn rate is abnormal (:class:`BurnRateDetector`); the month projects
    the last hour, and only once the burn has lasted an hour. Use cases whose
    tuning allows no volume alerts (experiments) are never projected.

    >>> from spendsentry.policy import Policy
    >>> from spendsentry.pricing import PriceBook
    >>> BudgetBurn.build(Policy("lab", tier="experiment"), PriceBook()).detector.abnormal_ratio
    inf
    >>> sentence = BudgetBurn.describe_tokens("chat", 250_000, 100_000)
    >>> print(sentence)  # doctest: +NORMALIZE_WHITESPACE
    chat used 250,000 tokens in a minute, over its budget of 100,000/min; find the caller before
    raising the budget.
    """

    kind = "budget_burn"

    def __init__(self, detector: BurnRateDetector, persistence: int = 2) -> None:
        self.detector = detector
        self.persistence = Persistence(persistence)

    @classmethod
    def build(cls, policy: Policy, prices: PriceBook) -> BudgetBurn | None:
        if (t := Tuning.of(policy, cls.kind)) is None:
            return None
        # Without volume alerts a rate is never abnormal: only a budget already spent fires.
        return cls(BurnRateDetector(abnormal_ratio=1.8 if t.volume else math.inf))

    @staticmethod
    def describe_tokens(use_case: str, tokens: int, budget: int) -> str:
        """The sentence a human reads about a minute over the tokens budget."""
        return (
            f"{use_case} used {tokens:,} tokens in a minute, over its "
            f"budget of {budget:,}/min; find the caller before raising the budget."
        )

    @staticmethod
    def describe(use_case: str, overrun: Overrun, when: str, rate: float, typical: float) -> str:
        """The sentence a human reads about a budget spent or to be exhausted at ``when``."""
        period, budget, spent, projected, _ = overrun
        if spent >= budget:
            what = f"has spent ${spent:,.2f}, over its ${budget:,.2f}/{period} budget"
        else:
            what = f"will exhaust its ${budget:,.2f}/{period} budget at {when}"
        return (
            f"{use_case} {what} (burning ${rate * 60:,.2f}/h, typically "
            f"${typical * 60:,.2f}/h; projected ${projected:,.2f} this {period}); find what "
            f"drives the burn before raising the budget."
        )

    def observe(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        typical = self.detector.typical
        self.detector.learn_one(signals.cost)
        rate = self.detector.rate
        rate_60 = ctx.last_1h.cost / max(ctx.last_1h.minutes_filled, 1)
        worst = _worst_budget(signals, ctx, rate, rate_60, self.detector.streak)
        tokens_over = None
        tpm = ctx.policy.budgets.tokens_per_minute
        if tpm and signals.input_tokens + signals.output_tokens > tpm:
            tokens_over = signals.input_tokens + signals.output_tokens
        anomalous = worst is not None or tokens_over is not None
        if not self.persistence.update(anomalous, signals.start):
            return None
        if worst is None:
            assert tokens_over is not None and tpm
            return Finding(
                kind=self.kind,
                severity="warning",
                score=tokens_over / tpm,
                metric="tokens_per_minute",
                baseline=float(tpm),
                observed=float(tokens_over),
                window_s=60.0,
                summary=self.describe_tokens(ctx.use_case, tokens_over, tpm),
                unit="tokens/min",
                onset=self.persistence.onset,
            )
        period, budget, spent, projected, exhaust_in = worst
        when = format_ts(signals.end + exhaust_in * 60.0)
        severity = "critical" if spent >= budget or exhaust_in < 120 else "warning"
        return Finding(
            kind=self.kind,
            severity=severity,
            score=projected / budget,
            metric=f"projected_cost_per_{period}_usd",
            baseline=budget,
            observed=projected,
            window_s=60.0 * self.detector.window,
            summary=self.describe(
                ctx.use_case,
                worst,
                _clock(signals.end + exhaust_in * 60.0, signals.end),
                rate,
                typical,
            ),
            unit="USD",
            excess_cost_per_hour_usd=max(0.0, rate - typical) * 60.0,
            details={
                "period": period,
                "spent_usd": round(spent, 4),
                "budget_usd": budget,
                "exhausted_at": when,
            },
            onset=self.persistence.onset,
        )


def _worst_budget(
    signals: MinuteSignals, ctx: UseCaseContext, rate_15: float, rate_60: float, streak: int
) -> Overrun | None:
    """The budget most overrun (projected / budget), if any is spent or projected over."""
    b = ctx.policy.budgets
    end = signals.minute + 1
    # The hour and day project the last 15 minutes; the month projects the
    # last hour, and only once the burn has lasted an hour.
    periods = (
        ("hour", b.cost_per_hour_usd, ctx.periods.cost_hour, (60 - end % 60) % 60, rate_15, 1),
        ("day", b.cost_per_day_usd, ctx.periods.cost_day, (1440 - end % 1440) % 1440, rate_15, 1),
        (
            "month",
            b.cost_per_month_usd,
            ctx.periods.cost_month,
            _minutes_left_in_month(end),
            rate_60,
            60,
        ),
    )
    worst = None
    for period, budget, spent, left, rate, needed in periods:
        if not budget:
            continue
        projected = spent + _rest(ctx, end, rate, left, 60 if needed > 1 else 15)
        if spent >= budget or (streak >= needed and projected > budget):
            exhaust_in = max(0.0, (budget - spent) / rate) if rate > 0 else 0.0
            if worst is None or projected / budget > worst[3] / worst[1]:
                worst = (period, budget, spent, projected, exhaust_in)
    return worst


def _rest(ctx: UseCaseContext, end: int, rate: float, left: float, window: int) -> float:
    """Spend until a period ends in ``left`` minutes, at ``rate`` (the mean of the last
    ``window`` minutes) along the use case's daily shape.

    A nightly batch burns at ten times the day's mean for half an hour, office
    hours at twice it: projecting that burn over the rest of the day pages every
    night and every noon. Divided by the shape of the minutes it was measured
    over and multiplied by the shape of the minutes to come, the same burn
    projects what this use case's days actually spend. Months and use cases
    without a day of history project flat (``share`` counts minutes).

    The shape explains a burn only when the burn matches it: at most
    ``EXPLAINED`` times what the learned days spent at this time. A burn
    beyond that (an incident) is projected flat, as if it went on; and the
    shape only ever lowers the flat projection: divided by the shape of a
    quiet hour (a night at a twentieth of the mean), a few calls would project
    a busy day's spend.
    """
    flat = rate * left
    daily = ctx.daily
    if not daily.ready or left > 2 * 1440:
        return flat
    recent = daily.share(end - window, window) / window
    if rate > EXPLAINED * daily.mean * recent:
        return flat
    return min(flat, rate / max(recent, daily.floor) * daily.share(end, int(left)))


def _minutes_left_in_month(now_min: int) -> float:
    now = datetime.fromtimestamp(now_min * 60, tz=UTC)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    end = datetime(year, month, 1, tzinfo=UTC)
    return (end - now).total_seconds() / 60.0


def _clock(ts: float, now: float) -> str:
    """A time in a sentence: "23:15 UTC", with the date when it is not today's (UTC).

    >>> _clock(1793610000.0 + 3600, 1793610000.0), _clock(1793610000.0 + 86400, 1793610000.0)
    ('10:00 UTC', 'Nov 03 09:00 UTC')
    """
    when, today = datetime.fromtimestamp(ts, UTC), datetime.fromtimestamp(now, UTC)
    return when.strftime("%H:%M UTC" if when.date() == today.date() else "%b %d %H:%M UTC")
