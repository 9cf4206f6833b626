"""Per-use-case monitors: one detector each, reading closed minutes, returning Findings.

A monitor owns the persistence rule (a shift must hold for a few minutes, so
one odd minute never pages anyone), the severity ladder, and the sentence a
human reads. The statistics live in the River-style detectors of
:mod:`spendsentry.detectors.shift` and :mod:`spendsentry.detectors.sessions`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

from river import stats

from spendsentry.alerts import Finding
from spendsentry.detectors.base import UseCaseContext
from spendsentry.detectors.sessions import SessionLengthDetector
from spendsentry.detectors.shift import (
    LogRateShiftDetector,
    RateSpikeDetector,
    RatioShiftDetector,
    Shift,
)
from spendsentry.pricing import PriceBook
from spendsentry.timeutil import format_ts
from spendsentry.windows import MinuteSignals

#: Input $/Mtok at or above which a model counts as "large" (gpt-4o, Sonnet, Opus,
#: gpt-4.1 are; the -mini, Haiku and Flash tiers are not).
LARGE_MODEL_INPUT_USD_PER_MTOK = 2.0

_CATALOGUE = PriceBook()


def is_large_model(model: str) -> bool:
    """Whether the catalogue prices ``model`` as a large (expensive) model.

    >>> is_large_model("gpt-4o"), is_large_model("gpt-4o-mini")
    (True, False)
    """
    rates = _CATALOGUE.rates(model)
    return rates is not None and rates.input * 1e6 >= LARGE_MODEL_INPUT_USD_PER_MTOK


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


def _supports(num: float, den: float, shift: Shift) -> bool:
    """Whether a minute's own data lean at least halfway to the window's shift."""
    if den <= 0:
        return num > 0  # cost with no outcome at all: the ratio's extreme
    return num / den - shift.baseline >= 0.5 * (shift.observed - shift.baseline)


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
        log_scale: bool = False,
        num_cap: float | None = None,
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
        #: The detector watches ln(1 + x); findings speak in x (geometric means).
        self.log_scale = log_scale
        #: Cap one minute's numerator at this many times its typical value: a
        #: minute in which a few huge calls land must not read as a regression.
        self.num_cap = num_cap
        self._num_level = stats.EWMean(fading_factor=0.02)
        self._minutes = 0

    def observe(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        num, den = self.extract(signals)
        if self.num_cap is not None:
            typical = self._num_level.get() or 0.0
            self._num_level.update(num)
            self._minutes += 1
            if self._minutes > 30 and typical > 0:
                num = min(num, self.num_cap * typical)
        shift = self.detector.check(num, den)
        self.detector.learn_one(num, den)
        if shift is not None and not _supports(num, den, shift):
            # The window is anomalous but this minute's own calls are not (or
            # there are none): the window still holds the same odd calls, so
            # this minute may keep a confirmed shift alive but not confirm one.
            # One minute of a few long-context calls of a sparse agent,
            # followed by idle or ordinary minutes, is not a shift that held.
            if not self.persistence.active:
                return None
        elif not self.persistence.update(shift is not None, signals.start) or shift is None:
            return None
        if self.log_scale:
            shift = Shift(
                math.expm1(shift.observed),
                math.expm1(shift.baseline),
                math.exp(shift.observed - shift.baseline),
                shift.z,
                shift.sample,
            )
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
    """Cost per minute far above the recent level and the usual peaks.

    Two lenses on the same minutes: ``detector`` (arithmetic means against the
    level and the usual peak) and, optionally, ``shift`` (geometric means
    against the level, see :class:`LogRateShiftDetector`), which sees a step of
    the whole traffic of a use case whose minutes swing too much on their own
    for the first. A shift seen by the second lens must also have the spend
    above the usual peak of the first: a level shift that stays within what
    the use case already spends at its busiest hour is growth, not a spike;
    and the same ``min_excess`` over the level.
    """

    kind = "cost_spike"
    #: Default for monitors pickled before the second lens existed (without
    #: one, its persistence is never read).
    shift: LogRateShiftDetector | None = None

    def __init__(
        self,
        detector: RateSpikeDetector,
        persistence: int = 2,
        min_calls: int = 30,
        shift: LogRateShiftDetector | None = None,
        shift_persistence: int = 6,
    ) -> None:
        self.detector = detector
        self.shift = shift
        # The second lens must hold longer: such a use case also swings 2-3x
        # for a few minutes on its own; an incident holds for half an hour.
        self.shift_persistence = _Persistence(shift_persistence)
        self.persistence = _Persistence(persistence)
        self.min_calls = min_calls

    def observe(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        score, observed, level, peak = self.detector.measure(signals.cost)
        self.detector.learn_one(signals.cost)
        shift_score, geo_ratio, lens_hit = 0.0, 1.0, False
        if (lens := self.shift) is not None:
            shift_score, geo_ratio, _ = lens.measure(signals.cost)
            lens.learn_one(signals.cost)
            if observed <= peak or observed - level < self.detector.min_excess:
                shift_score = 0.0
            held = self.shift_persistence.update(shift_score >= 1.0, signals.start)
            lens_hit = held or (shift_score >= 1.0 and self.persistence.active)
        # A handful of calls is never a spike, whatever the ratio (sparse use cases).
        enough = ctx.last_5m.calls >= self.min_calls
        anomalous = (score >= 1.0 or lens_hit) and enough
        score = max(score, shift_score)
        if not self.persistence.update(anomalous, signals.start):
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
            details={
                "usual_peak_usd_per_minute": round(peak, 6),
                "ratio": _finite(ratio),
                "typical_minute_ratio": _finite(geo_ratio),
            },
            onset=self.persistence.onset,
        )


class OutcomeTargetMonitor:
    """The economic SLO: cost per outcome over the last hour above the policy's target.

    The baseline-relative detector (a :class:`RatioMonitor` on cost per
    outcome) asks "worse than usual?"; this asks "worse than promised?", which
    is what a target in a policy means. A use case can drift over its target
    slowly enough that no window ever looks unusual; the hour's ratio catches
    that, and a sudden regression past the target too, once it has moved the
    hour. The hour, not a few minutes: outcomes are sparse (a ticket resolves
    every few minutes), and a breach of an hourly promise is what is reported.

    Parameters
    ----------
    target
        USD per outcome (the policy's ``cost_per_outcome.target_usd``).
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
        self.persistence = _Persistence(persistence)

    def observe(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        hour = ctx.last_1h
        per_outcome = hour.cost_per_outcome
        judged = hour.minutes_filled >= self.min_minutes and hour.outcomes >= self.min_outcomes
        breached = judged and per_outcome is not None and per_outcome > self.target
        if not self.persistence.update(breached, signals.start) or per_outcome is None:
            return None
        ratio = per_outcome / self.target
        hours = hour.minutes_filled / 60.0
        name = self.outcome or "outcome"
        return Finding(
            kind=self.kind,
            severity="critical" if ratio >= 2.0 else "warning",
            score=ratio,
            metric="cost_per_outcome_usd_1h",
            baseline=self.target,
            observed=per_outcome,
            window_s=60.0 * hour.minutes_filled,
            summary=(
                f"{ctx.use_case}: each {name} cost ${per_outcome:.4f} over the last hour, "
                f"{ratio:.1f}x its ${self.target:.4f} target; check whether outcomes "
                f"dropped (a broken flow) or cost per call rose."
            ),
            unit="USD",
            # What the hour spent beyond what its outcomes were allowed to cost.
            excess_cost_per_hour_usd=max(0.0, hour.cost - self.target * hour.outcomes) / hours,
            example_model=_top_model(signals),
            details={"target_usd": self.target, "outcomes_1h": hour.outcomes},
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


#: $0.50/h in $/min: rates below this are "idle" for the volatility estimate.
_RATE_FLOOR = 0.5 / 60


class BudgetBurnMonitor:
    """Projects spend to the end of the hour, day and month against the policy budgets.

    A budget already spent always fires. A projected overrun fires only while
    the burn rate is abnormal: above ``abnormal_ratio`` x the typical rate
    (River ``stats.EWMean``) *and* ``peak_ratio`` x the usual peak rate of the
    last 12 h (River ``stats.RollingQuantile``), both frozen while abnormal.
    A flat projection of the 10:00 peak, or of a nightly batch job, over the
    whole day would overrun any sensible daily budget, which is noise.

    Parameters
    ----------
    window
        Minutes averaged into the current burn rate.
    abnormal_ratio
        Current rate / typical rate beyond which projections are trusted.
    fading
        Fading factor of the typical rate (0.01: a half-life of about 70 minutes).
    warmup
        Minutes of history before projecting.
    """

    kind = "budget_burn"

    def __init__(
        self,
        window: int = 15,
        abnormal_ratio: float = 1.8,
        peak_ratio: float = 1.3,
        fading: float = 0.002,
        peak_window: int = 720,
        warmup: int = 60,
        persistence: int = 2,
        projections: bool = True,
    ) -> None:
        self.window = window
        #: False: fire only on a budget already spent (experiments burn erratically).
        self.projections = projections
        self.abnormal_ratio = abnormal_ratio
        self.peak_ratio = peak_ratio
        self.warmup = warmup
        self._ring: deque[float] = deque(maxlen=window)
        self._typical = stats.EWMean(fading_factor=fading)
        self._peak = stats.RollingQuantile(q=0.99, window_size=peak_window)
        # Short-term swing of the rate around its typical level (not the daily
        # curve, which the typical level follows): high for batch jobs.
        self._log_var = stats.EWVar(fading_factor=0.01)
        #: (minute index, minute cost, 15-min rate) learned later, see observe().
        self._pending: deque[tuple[int, float, float]] = deque()
        self._streak = 0
        self._n = 0
        self.persistence = _Persistence(persistence)

    def observe(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        self._ring.append(signals.cost)
        rate = sum(self._ring) / len(self._ring)
        rate_60 = ctx.last_1h.cost / max(ctx.last_1h.minutes_filled, 1)
        typical = self._typical.get() or 0.0
        peak = self._peak.get() or 0.0
        # A use case whose rate swings on its own (batch jobs) needs a higher
        # bar before its current rate is projected over a whole day.
        sigma = math.sqrt(max(self._log_var.get() or 0.0, 0.0))
        ratio = max(self.abnormal_ratio, math.exp(3.0 * sigma))
        abnormal = (
            self.projections
            and self._n >= self.warmup
            and rate > ratio * max(typical, 1e-9)
            and rate > self.peak_ratio * peak
        )
        if abnormal:
            self._streak += 1
            # The rise that led here is an incident, not a usual peak.
            self._pending.clear()
        else:
            self._streak = 0
            if self._n >= self.warmup and rate > 1.4 * max(typical, 1e-9):
                # A rise that is not (yet) abnormal: learn it only if no burn
                # is confirmed within 30 minutes, so a slow burn cannot teach
                # the baselines that it is normal on its way up.
                self._pending.append((self._n, signals.cost, rate))
            else:
                self._learn(signals.cost, rate, typical)
        while self._pending and self._pending[0][0] <= self._n - 30:
            _, cost, old_rate = self._pending.popleft()
            self._learn(cost, old_rate, self._typical.get() or 0.0)
        self._n += 1
        worst = self._worst_budget(signals, ctx, rate, rate_60, self._streak)
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
                summary=(
                    f"{ctx.use_case} used {tokens_over:,} tokens in a minute, over its "
                    f"budget of {tpm:,}/min; find the caller before raising the budget."
                ),
                unit="tokens/min",
                onset=self.persistence.onset,
            )
        period, budget, spent, projected, exhaust_in = worst
        when = format_ts(signals.end + exhaust_in * 60.0)
        severity = "critical" if spent >= budget or exhaust_in < 120 else "warning"
        if spent >= budget:
            what = f"has spent ${spent:,.2f}, over its ${budget:,.2f}/{period} budget"
        else:
            what = f"will exhaust its ${budget:,.2f}/{period} budget at {when}"
        return Finding(
            kind=self.kind,
            severity=severity,
            score=projected / budget,
            metric=f"projected_cost_per_{period}_usd",
            baseline=budget,
            observed=projected,
            window_s=60.0 * self.window,
            summary=(
                f"{ctx.use_case} {what} (burning ${rate * 60:,.2f}/h, typically "
                f"${typical * 60:,.2f}/h; projected ${projected:,.2f} this {period}); find what "
                f"drives the burn before raising the budget."
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

    def _learn(self, cost: float, rate: float, typical: float) -> None:
        self._typical.update(cost)
        self._peak.update(rate)
        self._log_var.update(math.log((rate + _RATE_FLOOR) / (typical + _RATE_FLOOR)))

    @staticmethod
    def _worst_budget(
        signals: MinuteSignals, ctx: UseCaseContext, rate_15: float, rate_60: float, streak: int
    ) -> tuple[str, float, float, float, float] | None:
        b = ctx.policy.budgets
        end = signals.minute + 1
        # The hour and day project the last 15 minutes; the month projects the
        # last hour, and only once the burn has lasted an hour.
        periods = (
            ("hour", b.cost_per_hour_usd, ctx.periods.cost_hour, (60 - end % 60) % 60, rate_15, 1),
            (
                "day",
                b.cost_per_day_usd,
                ctx.periods.cost_day,
                (1440 - end % 1440) % 1440,
                rate_15,
                1,
            ),
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
            projected = spent + rate * left
            if spent >= budget or (streak >= needed and projected > budget):
                exhaust_in = max(0.0, (budget - spent) / rate) if rate > 0 else 0.0
                if worst is None or projected / budget > worst[3] / worst[1]:
                    worst = (period, budget, spent, projected, exhaust_in)
        return worst


def _minutes_left_in_month(now_min: int) -> float:
    from datetime import UTC, datetime

    now = datetime.fromtimestamp(now_min * 60, tz=UTC)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    end = datetime(year, month, 1, tzinfo=UTC)
    return (end - now).total_seconds() / 60.0


# -- extractors ---------------------------------------------------------------


def input_tokens_per_call(s: MinuteSignals) -> tuple[float, float]:
    return float(s.llm_input_tokens), float(s.llm_calls)


def log_input_tokens_per_call(s: MinuteSignals) -> tuple[float, float]:
    """Sum of ln(1 + input tokens) and LLM calls: a geometric mean of prompt sizes."""
    return s.llm_log_input / 1e6, float(s.llm_calls)


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


def price_tier(s: MinuteSignals) -> tuple[float, float]:
    """Sum over priced LLM calls of ln(input $/Mtok), and those calls.

    The mean is the model mix's price tier: a switch from gpt-4o-mini to
    gpt-4o moves it by ln(16.7) whatever the prompt sizes do, and the log
    keeps one stray premium call from dominating a quiet minute.
    """
    total = 0.0
    calls = 0
    for name, m in s.models.items():
        rates = _CATALOGUE.rates(name)
        if rates is None or rates.input <= 0:
            continue
        total += m.calls * math.log(rates.input * 1e6)
        calls += m.calls
    return total, float(calls)


#: Size assumed for a routine small request when pricing the saving (half the bounds).
_SMALL_INPUT, _SMALL_OUTPUT = 250, 75


def routing_saving(s: MinuteSignals) -> tuple[str | None, float]:
    """The smaller model to route routine requests to, and the saving in $/h.

    The smaller model is the cheapest model the use case already uses that is
    not large (else gpt-4o-mini); each routine request on a large model is
    priced at half the "small" bounds on both models.

    >>> from spendsentry.windows import ModelMinute
    >>> sig = MinuteSignals("u", 0, llm_calls=100, models={
    ...     "gpt-4o": ModelMinute(60, 0.3, 12000, 4000, 60),
    ...     "gpt-4o-mini": ModelMinute(40, 0.01, 8000, 3000, 40)})
    >>> model, per_hour = routing_saving(sig)
    >>> model, round(per_hour, 2)
    ('gpt-4o-mini', 4.65)
    """
    candidates = []
    for name in s.models:
        rates = _CATALOGUE.rates(name)
        if rates is not None and not is_large_model(name):
            candidates.append((rates.input + rates.output, name))
    smaller = min(candidates)[1] if candidates else "gpt-4o-mini"
    small = _CATALOGUE.rates(smaller)
    if small is None:
        return None, 0.0
    saving = 0.0
    for name, m in s.models.items():
        big = _CATALOGUE.rates(name)
        if big is None or not m.small_calls or not is_large_model(name):
            continue
        per_call = (big.input - small.input) * _SMALL_INPUT + (
            big.output - small.output
        ) * _SMALL_OUTPUT
        saving += max(0.0, per_call) * m.small_calls
    return smaller, saving * 60.0


def small_calls_on_large_models(s: MinuteSignals) -> tuple[float, float]:
    large = total = 0
    for name, m in s.models.items():
        total += m.small_calls
        if m.small_calls and is_large_model(name):
            large += m.small_calls
    return float(large), float(total)
