"""Per-use-case monitors: one detector each, reading closed minutes, returning Findings.

A monitor owns the persistence rule (a shift must hold for a few minutes, so
one odd minute never pages anyone), the severity ladder, and the sentence a
human reads. The statistics live in the River-style detectors of
:mod:`spendsentry.detectors.shift` and :mod:`spendsentry.detectors.sessions`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from spendsentry.alerts import Finding
from spendsentry.detectors.base import UseCaseContext
from spendsentry.detectors.sessions import SessionLengthDetector
from spendsentry.detectors.shift import RateSpikeDetector, RatioShiftDetector, Shift
from spendsentry.windows import MinuteSignals

#: Blended $/Mtok at or above which a model counts as "large" for routine requests.
LARGE_MODEL_USD_PER_MTOK = 1.0


def _excess_from_ratio(ctx: UseCaseContext, ratio: float) -> float:
    """Excess $/h when cost scales with the shifted metric: rate x (1 - 1/ratio)."""
    rate_per_hour = ctx.last_5m.cost / max(ctx.last_5m.minutes_filled, 1) * 60.0
    if not math.isfinite(ratio) or ratio <= 1.0:
        return 0.0
    return rate_per_hour * (1.0 - 1.0 / ratio)


def _excess_over_hour(ctx: UseCaseContext) -> float:
    """Excess $/h of the last 5 minutes over the last hour's average."""
    now = ctx.last_5m.cost / max(ctx.last_5m.minutes_filled, 1)
    hour = ctx.last_1h.cost / max(ctx.last_1h.minutes_filled, 1)
    return max(0.0, now - hour) * 60.0


class _Persistence:
    """Counts consecutive anomalous minutes; remembers when the streak began."""

    def __init__(self, needed: int) -> None:
        self.needed = needed
        self.streak = 0
        self.onset: float | None = None
        self.active = False

    def update(self, anomalous: bool, minute_start: float) -> bool:
        if not anomalous:
            self.streak = 0
            self.active = False
            return False
        if self.streak == 0:
            self.onset = minute_start
        self.streak += 1
        # Once confirmed, stay confirmed while anomalous (no re-confirmation).
        self.active = self.active or self.streak >= self.needed
        return self.active


Extract = Callable[[MinuteSignals], tuple[float, float]]
Describe = Callable[[Shift, MinuteSignals], str]


class RatioMonitor:
    """Adapts a :class:`RatioShiftDetector` to one alert kind."""

    def __init__(
        self,
        kind: str,
        metric: str,
        unit: str,
        extract: Extract,
        describe: Describe,
        detector: RatioShiftDetector,
        *,
        critical_ratio: float,
        persistence: int = 2,
        cost_scales: bool = True,
    ) -> None:
        self.kind = kind
        self.metric = metric
        self.unit = unit
        self.extract = extract
        self.describe = describe
        self.detector = detector
        self.critical_ratio = critical_ratio
        self.persistence = _Persistence(persistence)
        self.cost_scales = cost_scales

    def observe(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        num, den = self.extract(signals)
        shift = self.detector.check(num, den)
        self.detector.learn_one(num, den)
        if not self.persistence.update(shift is not None, signals.start) or shift is None:
            return None
        severity = "critical" if shift.ratio >= self.critical_ratio else "warning"
        excess = (
            _excess_from_ratio(ctx, shift.ratio) if self.cost_scales else _excess_over_hour(ctx)
        )
        return Finding(
            kind=self.kind,
            severity=severity,
            score=shift.z,
            metric=self.metric,
            baseline=shift.baseline,
            observed=shift.observed,
            window_s=60.0 * self.detector.window,
            summary=self.describe(shift, signals),
            unit=self.unit,
            excess_cost_per_hour_usd=excess,
            example_session=signals.max_session_id,
            example_model=_top_model(signals),
            details={"ratio": round(shift.ratio, 3), "sample": shift.sample},
            onset=self.persistence.onset,
        )


def _top_model(signals: MinuteSignals) -> str | None:
    if not signals.models:
        return None
    return max(signals.models.items(), key=lambda kv: (kv[1].calls, kv[0]))[0]


class CostSpikeMonitor:
    """Cost per minute far above the recent level and the usual peaks."""

    kind = "cost_spike"

    def __init__(self, detector: RateSpikeDetector, persistence: int = 2) -> None:
        self.detector = detector
        self.persistence = _Persistence(persistence)

    def observe(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        score, observed, level, peak = self.detector.measure(signals.cost)
        self.detector.learn_one(signals.cost)
        if not self.persistence.update(score >= 1.0, signals.start):
            return None
        ratio = observed / level if level > 0 else math.inf
        severity = "critical" if score >= 2.0 else "warning"
        excess = max(0.0, observed - level) * 60.0
        return Finding(
            kind=self.kind,
            severity=severity,
            score=score,
            metric="cost_usd_per_minute",
            baseline=level,
            observed=observed,
            window_s=60.0 * self.detector.window,
            summary=(
                f"{ctx.use_case} is spending ${observed * 60:,.2f}/h, "
                f"{_times(ratio)} its recent ${level * 60:,.2f}/h and above its usual peak "
                f"(${peak * 60:,.2f}/h); check call volume by caller and any new batch job."
            ),
            unit="USD/min",
            excess_cost_per_hour_usd=excess,
            example_model=_top_model(signals),
            details={"usual_peak_usd_per_minute": round(peak, 6), "ratio": _finite(ratio)},
            onset=self.persistence.onset,
        )


def _times(ratio: float) -> str:
    return f"{ratio:.1f}x" if math.isfinite(ratio) else "far above"


def _finite(x: float) -> float:
    return round(x, 3) if math.isfinite(x) else 1e9


class ChatterMonitor:
    """Agent sessions running far longer than the use case's normal sessions."""

    kind = "agent_chatter"

    def __init__(self, detector: SessionLengthDetector, persistence: int = 2) -> None:
        self.detector = detector
        self.persistence = _Persistence(persistence)

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
            summary=(
                f"{ctx.use_case}: {len(runaway)} live agent session(s) past {threshold:.0f} "
                f"calls (typical {typical:.0f}); session {signals.max_session_id} is at {top} "
                f"calls and still running. Check the agent's stop condition and tool errors."
            ),
            unit="calls",
            excess_cost_per_hour_usd=excess,
            example_session=signals.max_session_id,
            example_model=_top_model(signals),
            details={"runaway_sessions": len(runaway), "threshold": round(threshold, 1)},
            onset=self.persistence.onset,
        )


class BudgetBurnMonitor:
    """Projects spend to the end of the hour, day and month against the policy budgets.

    Fires when the current rate, held, exhausts a budget before its period
    ends *and* that rate alone is above the budget's rate: a budget nearly
    spent by a normal day does not page at 23:00, a 3x burn does at 10:00.
    """

    kind = "budget_burn"

    def __init__(self, persistence: int = 3) -> None:
        self.persistence = _Persistence(persistence)

    def observe(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        b = ctx.policy.budgets
        now_min = signals.minute + 1
        rate_15 = ctx.last_5m.cost / max(ctx.last_5m.minutes_filled, 1)
        rate_60 = ctx.last_1h.cost / max(ctx.last_1h.minutes_filled, 1)
        checks: list[tuple[str, float, float, float, float]] = []
        if b.cost_per_hour_usd:
            left = 60 - now_min % 60 if now_min % 60 else 0
            checks.append(("hour", b.cost_per_hour_usd, ctx.periods.cost_hour, rate_15, left))
        if b.cost_per_day_usd:
            left = (1440 - now_min % 1440) % 1440
            checks.append(("day", b.cost_per_day_usd, ctx.periods.cost_day, rate_60, left))
        if b.cost_per_month_usd:
            checks.append(
                (
                    "month",
                    b.cost_per_month_usd,
                    ctx.periods.cost_month,
                    rate_60,
                    _minutes_left_in_month(now_min),
                )
            )
        worst: tuple[float, str, float, float, float, float] | None = None
        for period, budget, spent, rate, left in checks:
            period_minutes = {"hour": 60, "day": 1440}.get(period, 30 * 1440)
            over_rate = rate * period_minutes > budget
            projected = spent + rate * left
            if (over_rate and projected > budget) or spent > budget:
                exhaust_in = max(0.0, (budget - spent) / rate) if rate > 0 else 0.0
                score = projected / budget
                if worst is None or score > worst[0]:
                    worst = (score, period, budget, spent, projected, exhaust_in)
        tokens_over = None
        if b.tokens_per_minute:
            tokens = signals.input_tokens + signals.output_tokens
            if tokens > b.tokens_per_minute:
                tokens_over = tokens
        if not self.persistence.update(worst is not None or tokens_over is not None, signals.start):
            return None
        from spendsentry.timeutil import format_ts

        if worst is None:
            assert tokens_over is not None and b.tokens_per_minute
            return Finding(
                kind=self.kind,
                severity="warning",
                score=tokens_over / b.tokens_per_minute,
                metric="tokens_per_minute",
                baseline=float(b.tokens_per_minute),
                observed=float(tokens_over),
                window_s=60.0,
                summary=(
                    f"{ctx.use_case} used {tokens_over:,} tokens in a minute, over its "
                    f"budget of {b.tokens_per_minute:,}/min."
                ),
                unit="tokens/min",
                onset=self.persistence.onset,
            )
        score, period, budget, spent, projected, exhaust_in = worst
        when = format_ts(signals.end + exhaust_in * 60.0)
        severity = "critical" if spent >= budget or exhaust_in < 60 else "warning"
        return Finding(
            kind=self.kind,
            severity=severity,
            score=score,
            metric=f"projected_cost_per_{period}_usd",
            baseline=budget,
            observed=projected,
            window_s=3600.0 if period != "hour" else 300.0,
            summary=(
                f"{ctx.use_case} will exhaust its ${budget:,.0f}/{period} budget at {when} "
                f"(spent ${spent:,.2f}, projected ${projected:,.2f} this {period}); find "
                f"what drives the burn before raising the budget."
            ),
            unit="USD",
            excess_cost_per_hour_usd=max(
                0.0, (rate_60 - budget / {"hour": 60, "day": 1440}.get(period, 43200)) * 60.0
            ),
            details={"period": period, "spent_usd": round(spent, 4), "exhausted_at": when},
            onset=self.persistence.onset,
        )


def _minutes_left_in_month(now_min: int) -> float:
    from datetime import UTC, datetime

    now = datetime.fromtimestamp(now_min * 60, tz=UTC)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    end = datetime(year, month, 1, tzinfo=UTC)
    return (end - now).total_seconds() / 60.0


# -- extractors ---------------------------------------------------------------


def input_tokens_per_call(s: MinuteSignals) -> tuple[float, float]:
    return float(s.llm_input_tokens), float(s.llm_calls)


def retrievals_per_request(s: MinuteSignals) -> tuple[float, float]:
    return float(s.retrievals), float(s.retrieval_requests)


def fallback_share(s: MinuteSignals) -> tuple[float, float]:
    return float(s.fallback_calls), float(s.llm_calls)


def cost_per_mtok(s: MinuteSignals) -> tuple[float, float]:
    llm_tokens = sum(m.input_tokens + m.output_tokens for m in s.models.values())
    llm_cost = sum(m.cost for m in s.models.values())
    return llm_cost, llm_tokens / 1e6


def cost_per_outcome(s: MinuteSignals) -> tuple[float, float]:
    return s.cost, float(s.outcomes)


def duplicate_share(s: MinuteSignals) -> tuple[float, float]:
    return float(s.embedding_duplicates), float(s.embeddings)


def small_calls_on_large_models(s: MinuteSignals) -> tuple[float, float]:
    large = total = 0
    for m in s.models.values():
        total += m.small_calls
        tokens = m.input_tokens + m.output_tokens
        if tokens and m.cost / tokens * 1e6 >= LARGE_MODEL_USD_PER_MTOK:
            large += m.small_calls
    return float(large), float(total)
