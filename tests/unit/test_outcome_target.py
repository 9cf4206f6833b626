"""The cost-per-outcome target of a policy is an economic SLO: breaching it alerts.

The baseline-relative detector asks "worse than usual?"; a slow drift that
never looks unusual still breaks the target, and that must be said.
"""

from __future__ import annotations

import random

from _monitors import context, feed

from spendsentry.detectors import build_monitors
from spendsentry.detectors.kinds.cost_per_outcome import CostPerOutcome, OutcomeTarget
from spendsentry.policy import PolicySet
from spendsentry.windows import MinuteSignals

POLICY = """
[use_cases.desk]
owner = "#desk"
[use_cases.desk.cost_per_outcome]
outcome = "ticket_resolved"
target_usd = 0.02
"""


def _minutes(rng: random.Random, hours: float, cost_per_outcome, start: int = 0):
    """A desk resolving ~3 tickets a minute (Poisson-ish), spending ``cost_per_outcome(m)``
    per ticket on average, with ordinary noise on the spend."""
    out = []
    for m in range(start, start + int(hours * 60)):
        outcomes = sum(rng.random() < 0.5 for _ in range(6))
        cost = 3.0 * cost_per_outcome(m) * rng.lognormvariate(-0.02, 0.2)
        out.append(MinuteSignals("desk", m, llm_calls=20, cost=cost, outcomes=outcomes))
    return out


def _target_monitor() -> OutcomeTarget:
    policy = PolicySet.from_toml_text(POLICY).for_use_case("desk")
    [monitor] = [m for m in build_monitors("desk", policy) if m.kind == "cost_per_outcome"]
    assert isinstance(monitor, CostPerOutcome)  # worse than usual, or worse than the target
    [target] = [m for m in monitor.monitors if isinstance(m, OutcomeTarget)]
    return target


def test_a_policy_without_a_target_gets_no_target_monitor() -> None:
    policy = PolicySet.from_toml_text('[use_cases.desk]\nowner = "#desk"\n').for_use_case("desk")
    [monitor] = [m for m in build_monitors("desk", policy) if m.kind == "cost_per_outcome"]
    assert isinstance(monitor, CostPerOutcome)
    assert not any(isinstance(m, OutcomeTarget) for m in monitor.monitors)


def test_a_use_case_within_its_target_is_silent() -> None:
    found = feed(_target_monitor(), _minutes(random.Random(1), 48, lambda m: 0.01), context("desk"))
    assert found == []


def test_a_slow_drift_past_the_target_alerts_with_the_target_as_evidence() -> None:
    # 0.010 -> 0.030 per ticket over 20 hours: never a jump.
    def drift(m: int) -> float:
        return 0.010 + 0.020 * min(1.0, m / (20 * 60))

    found = feed(_target_monitor(), _minutes(random.Random(2), 24, drift), context("desk"))
    assert found, "the target breach was not reported"
    minute, finding = found[0]
    # The true ratio crosses 0.02 at hour 10; the hour lags it by half an hour, and
    # the hour's own count of tickets (~180) moves it by ~8 %: hours 8 to 12.
    assert 8 * 60 <= minute <= 12 * 60, minute / 60
    assert finding.kind == "cost_per_outcome" and finding.metric == "cost_per_outcome_usd_1h"
    assert finding.baseline == 0.02 and finding.observed > 0.02
    assert "ticket_resolved" in finding.summary and "$0.0200 target" in finding.summary
    assert finding.excess_cost_per_hour_usd > 0
    # ... and holds from there on (the drift only grows), but for a few minutes
    # when the hour's noise dips back under: shorter than the engine's resolve delay.
    assert len(found) >= 0.95 * (24 * 60 - minute)


def test_the_breach_ends_when_the_hour_is_back_under_target() -> None:
    rng = random.Random(3)
    minutes = _minutes(rng, 3, lambda m: 0.01)
    minutes += _minutes(rng, 2, lambda m: 0.05, start=180)
    minutes += _minutes(rng, 3, lambda m: 0.01, start=300)
    found = [m for m, _ in feed(_target_monitor(), minutes, context("desk"))]
    assert found and 180 <= found[0] < 240
    assert max(found) < 300 + 60  # the hour forgets the breach within the hour


def test_too_few_outcomes_are_not_judged() -> None:
    monitor = OutcomeTarget(0.02, "ticket_resolved", min_outcomes=20)
    ctx = context("desk")
    # One ticket every ten minutes at ten times the target: 6 an hour, never judged.
    minutes = [
        MinuteSignals("desk", m, llm_calls=5, cost=0.02, outcomes=int(m % 10 == 0))
        for m in range(600)
    ]
    assert feed(monitor, minutes, ctx) == []
