"""Detectors: River-style online models, one per cost behaviour.

:func:`build_monitors` is the registry the engine uses: it returns the
monitors a use case's policy enables, with thresholds scaled by the policy's
sensitivity (2.0 = twice as sensitive).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from spendsentry.alerts import HOURS_PER_MONTH, Finding, severity_rank
from spendsentry.detectors.base import Monitor, PeriodTotals, UseCaseContext
from spendsentry.detectors.monitors import (
    BudgetBurnMonitor,
    ChatterMonitor,
    CostSpikeMonitor,
    OutcomeTargetMonitor,
    RatioMonitor,
    cost_per_outcome,
    duplicate_share,
    fallback_share,
    log_input_tokens_per_call,
    price_tier,
    retrievals_per_request,
    routing_saving,
    small_calls_on_large_models,
)
from spendsentry.detectors.sessions import SessionLengthDetector
from spendsentry.detectors.shift import (
    LogRateShiftDetector,
    RateSpikeDetector,
    RatioShiftDetector,
    Shift,
)
from spendsentry.windows import MinuteSignals

if TYPE_CHECKING:
    from spendsentry.policy import Policy

__all__ = [
    "AnyOf",
    "LogRateShiftDetector",
    "Monitor",
    "PeriodTotals",
    "RateSpikeDetector",
    "RatioShiftDetector",
    "SessionLengthDetector",
    "UseCaseContext",
    "build_monitors",
]


def _ratio(base: float, sensitivity: float) -> float:
    """Scale a ratio threshold's excess over 1 by 1/sensitivity."""
    return 1.0 + (base - 1.0) / sensitivity


def build_monitors(use_case: str, policy: Policy) -> list[Monitor]:
    """The monitors for one use case, honouring its policy's detector settings."""
    monitors: list[Monitor] = []

    # Experiments are erratic by design: half as sensitive, and info only (engine).
    tier_factor = 0.5 if policy.tier == "experiment" else 1.0
    # ... and their prompts and outcomes shift on purpose for hours at a time: no
    # long windows, which exist to catch exactly such sustained moderate shifts.
    long_windows = policy.tier != "experiment"

    def enabled(kind: str) -> float | None:
        setting = policy.detector(kind)
        return setting.sensitivity * tier_factor if setting.enabled else None

    if (s := enabled("prompt_inflation")) is not None:
        monitors.append(
            RatioMonitor(
                "prompt_inflation",
                "input_tokens_per_call_geomean",
                "tokens",
                log_input_tokens_per_call,
                describe_prompt_inflation,
                # ln-space: min_delta ln(1.35) is a 1.35x growth of the geometric mean.
                RatioShiftDetector(
                    window=5,
                    half_life=360,
                    warmup=300,
                    min_ratio=0.0,
                    min_delta=math.log(_ratio(1.5, s)),
                    z_threshold=3.5 / math.sqrt(s),
                    min_den=15,
                    long_window=30 if long_windows else 0,
                    long_z_threshold=5.0 / math.sqrt(s),
                ),
                critical_ratio=2.0,
                log_scale=True,
            )
        )
    if (s := enabled("retrieval_amplification")) is not None:
        monitors.append(
            RatioMonitor(
                "retrieval_amplification",
                "retrievals_per_request",
                "retrievals",
                retrievals_per_request,
                describe_retrieval_amplification,
                RatioShiftDetector(
                    window=5,
                    half_life=360,
                    warmup=200,
                    min_ratio=_ratio(1.6, s),
                    z_threshold=6.0 / math.sqrt(s),
                    min_den=10,
                ),
                critical_ratio=3.0,
                cost_scales=False,
            )
        )
    if (s := enabled("fallback_drift")) is not None:
        flagged = RatioMonitor(
            "fallback_drift",
            "fallback_share",
            "share",
            fallback_share,
            describe_fallback_flagged,
            RatioShiftDetector(
                window=5,
                half_life=360,
                warmup=300,
                min_ratio=1.5,
                min_delta=0.15 / s,
                z_threshold=6.0 / math.sqrt(s),
                min_den=15,
                # Drifts ramp in: don't let the ramp teach the noise.
                hold_z_fraction=0.5,
            ),
            critical_ratio=4.0,
        )
        silent = RatioMonitor(
            "fallback_drift",
            "price_tier_ln_usd_per_mtok",
            "USD/Mtok input",
            price_tier,
            describe_fallback_silent,
            RatioShiftDetector(
                window=5,
                half_life=360,
                warmup=300,
                min_ratio=0.0,
                min_delta=math.log(_ratio(1.8, s)),
                z_threshold=6.0 / math.sqrt(s),
                min_den=15,
                hold_z_fraction=0.5,
            ),
            critical_ratio=4.0,
            log_scale=True,
        )
        # Flagged (fallback / re-routed calls) or silent (a pricier default model).
        monitors.append(AnyOf("fallback_drift", [flagged, silent]))
    if (s := enabled("cost_per_outcome")) is not None:
        usual = RatioMonitor(
            "cost_per_outcome",
            "cost_per_outcome_usd",
            "USD",
            cost_per_outcome,
            describe_cost_per_outcome,
            RatioShiftDetector(
                window=10,
                half_life=480,
                warmup=200,
                min_ratio=_ratio(1.5, s),
                z_threshold=4.0 / math.sqrt(s),
                min_den=15,
                long_window=45 if long_windows else 0,
                long_z_threshold=5.5 / math.sqrt(s),
            ),
            critical_ratio=2.5,
            persistence=3,
            num_cap=3.0,
        )
        # Worse than usual, or worse than the policy's target (the economic SLO).
        target = policy.cost_per_outcome_target_usd
        if target:
            monitors.append(
                AnyOf(
                    "cost_per_outcome",
                    [usual, OutcomeTargetMonitor(target, policy.outcome)],
                )
            )
        else:
            monitors.append(usual)
    if (s := enabled("embedding_duplication")) is not None:
        monitors.append(
            RatioMonitor(
                "embedding_duplication",
                "duplicate_embedding_share",
                "share",
                duplicate_share,
                describe_embedding_duplication,
                RatioShiftDetector(
                    window=5,
                    half_life=360,
                    warmup=300,
                    min_ratio=1.5,
                    min_delta=0.2 / s,
                    z_threshold=6.0 / math.sqrt(s),
                    min_den=20,
                ),
                critical_ratio=4.0,
                cost_scales=False,
            )
        )
    if (s := enabled("model_oversizing")) is not None:
        monitors.append(
            _Oversizing(
                "model_oversizing",
                "small_calls_on_large_model_share",
                "share",
                small_calls_on_large_models,
                describe_oversizing,
                # 120 calls of warm-up: a share that is ~0 over 120 calls is already a
                # firm baseline, and an office-hours use case can regress within its
                # first half hour of the day (seen: 20 minutes in, missed with 200).
                RatioShiftDetector(
                    window=5,
                    half_life=480,
                    warmup=120,
                    min_ratio=1.5,
                    min_delta=0.3 / s,
                    z_threshold=6.0 / math.sqrt(s),
                    min_den=15,
                ),
                critical_ratio=float("inf"),
                persistence=2,
            )
        )
    # Experiments change volume on purpose: no volume alerts, budgets only when spent.
    experiment = policy.tier == "experiment"
    if (s := enabled("cost_spike")) is not None and not experiment:
        monitors.append(
            CostSpikeMonitor(
                # 10 minutes: long enough that one minute of a few huge calls
                # (the Azure code trace has them hourly) or a benign 3-minute
                # burst stays under 3x, short enough to catch a spike in ~5.
                RateSpikeDetector(
                    window=10,
                    min_ratio_level=_ratio(3.0, s),
                    min_ratio_peak=_ratio(1.5, s),
                    # $0.50/h: below that, a spike costs less than looking at it.
                    min_excess=0.5 / 60 / s,
                    warmup=90,
                ),
                persistence=2,
                # A 10-minute geometric mean, 2x over the level: a use case
                # whose minutes swing 20x (bursts of hundreds of calls, a few
                # huge prompts) hides a 4x step from the arithmetic lens.
                shift=LogRateShiftDetector(
                    window=10,
                    min_ratio=_ratio(2.0, s),
                    z_threshold=4.0 / s,
                    # A twentieth of min_excess: low enough that a use case
                    # spending under a dollar an hour still shows its ratio
                    # (the size bar is the monitor's: min_excess, usual peak).
                    floor=0.025 / 60 / s,
                    warmup=240,
                ),
            )
        )
    if (s := enabled("agent_chatter")) is not None:
        monitors.append(
            ChatterMonitor(
                SessionLengthDetector(quantile=0.99, factor=_ratio(2.0, s), min_calls=20, warmup=30)
            )
        )
    if enabled("budget_burn") is not None:
        monitors.append(BudgetBurnMonitor(projections=not experiment))
    return monitors


def describe_prompt_inflation(sh: Shift, sig: MinuteSignals) -> str:
    return (
        f"{sig.use_case}: prompts grew to {sh.observed:,.0f} input tokens per call, "
        f"{sh.ratio:.1f}x the usual {sh.baseline:,.0f}; check recent prompt, "
        f"context or retrieval changes."
    )


def describe_retrieval_amplification(sh: Shift, sig: MinuteSignals) -> str:
    return (
        f"{sig.use_case}: {sh.observed:.1f} retrieval calls per request, "
        f"{sh.ratio:.1f}x the usual {sh.baseline:.1f}; check the retriever's "
        f"fan-out, retries and re-ranking loops."
    )


def describe_fallback_flagged(sh: Shift, sig: MinuteSignals) -> str:
    return (
        f"{sig.use_case}: {sh.observed:.0%} of calls go to a fallback or re-routed "
        f"model (usual {sh.baseline:.0%}); check the primary model's errors and "
        f"rate limits."
    )


def describe_fallback_silent(sh: Shift, sig: MinuteSignals) -> str:
    top = max(sig.models, key=lambda m: (sig.models[m].calls, m), default="?")
    return (
        f"{sig.use_case}: the model mix got pricier: {sh.ratio:.1f}x the usual price per "
        f"input token (top model now {top}); check whether a fallback or larger model "
        f"became the default."
    )


def describe_cost_per_outcome(sh: Shift, sig: MinuteSignals) -> str:
    return (
        f"{sig.use_case}: each outcome now costs ${sh.observed:.3f}, "
        f"{sh.ratio:.1f}x the usual ${sh.baseline:.3f}; check whether outcomes "
        f"dropped (a broken flow) or cost per call rose."
    )


def describe_embedding_duplication(sh: Shift, sig: MinuteSignals) -> str:
    return (
        f"{sig.use_case}: {sh.observed:.0%} of embeddings re-embed content already "
        f"embedded (usual {sh.baseline:.0%}); add a cache keyed by content hash."
    )


def describe_oversizing(sh: Shift, sig: MinuteSignals) -> str:
    return (
        f"{sig.use_case}: {sh.observed:.0%} of routine small requests are served "
        f"by a large model (usual {sh.baseline:.0%}); route them to a smaller model."
    )


class AnyOf:
    """Several monitors of one kind; the strongest finding of the minute wins."""

    def __init__(self, kind: str, monitors: Sequence[Monitor]) -> None:
        self.kind = kind
        self.monitors = monitors

    def observe(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        found = [f for m in self.monitors if (f := m.observe(signals, ctx)) is not None]
        if not found:
            return None
        return max(found, key=lambda f: (severity_rank(f.severity), f.score))


class _Oversizing(RatioMonitor):
    """model_oversizing is a recommendation: always severity info, with the saving."""

    def observe(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        finding = super().observe(signals, ctx)
        if finding is None:
            return None
        finding.severity = "info"
        smaller, per_hour = routing_saving(signals)
        if smaller is not None:
            finding.excess_cost_per_hour_usd = per_hour
            finding.details["suggested_model"] = smaller
            finding.details["monthly_saving_usd"] = round(per_hour * HOURS_PER_MONTH, 2)
            finding.summary += (
                f" Routing them to {smaller} would save about "
                f"${per_hour * HOURS_PER_MONTH:,.0f} a month."
            )
        return finding
