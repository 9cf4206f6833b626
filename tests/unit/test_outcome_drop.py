"""Outcomes that stop while calls go on are judged as counts, within minutes.

A broken outcome flow (outcomes fall 90 % while calls go on) was flagged after
26 minutes on unseen data by the cost-per-outcome ratio alone; a count that
usually brings 4 a minute and now brings 0 or 1 is unmistakable in a few.
These tests run the engine on the simulator's support chat (about 4 resolved
tickets a minute) and feed the lens minutes directly for the cases a ramp of
calls makes hard (outcomes lag their calls).
"""

from __future__ import annotations

import json
import random
from datetime import timedelta
from pathlib import Path

import pytest
from _monitors import context, feed

from spendsentry.detectors.kinds.cost_per_outcome import OutcomeDrop
from spendsentry.detectors.outcomes import OutcomeDropDetector
from spendsentry.engine import Engine
from spendsentry.policy import PolicySet
from spendsentry.replay import Sinks, replay
from spendsentry.simulate.incidents import Incident
from spendsentry.simulate.scenario import Scenario
from spendsentry.timeutil import parse_ts
from spendsentry.windows import MinuteSignals

ROOT = Path(__file__).resolve().parents[2]


def _replay(scenario: Scenario, out: Path) -> list[dict]:
    events, _ = scenario.write(out)
    engine = Engine(PolicySet.load(ROOT / "streams" / "policies"))
    sinks = Sinks(alerts=str(out / "alerts.jsonl"))
    try:
        replay([str(events)], engine, sinks)
    finally:
        sinks.close()
    return [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]


def _support_chat(seed: int, drop: float | None) -> Scenario:
    scenario = Scenario(seed=seed, hours=13, no_incidents=True)
    scenario.shapes = tuple(s for s in scenario.shapes if s.name == "support_chat")
    if drop is not None:
        start = scenario.start + timedelta(hours=12)  # near its 14:00 peak: ~4 a minute
        scenario.incidents = [
            Incident(
                "inc-drop",
                "cost_per_outcome",
                "support_chat",
                "step",
                start,
                start + timedelta(minutes=45),
                params={"variant": "outcome_drop", "outcome_factor": drop},
            )
        ]
    return scenario


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_broken_outcome_flow_is_diagnosed_within_five_minutes(seed, tmp_path):
    scenario = _support_chat(seed, drop=0.1)
    [incident] = scenario.incidents
    alerts = _replay(scenario, tmp_path)
    drops = [
        a
        for a in alerts
        if a["kind"] == "cost_per_outcome"
        and a["status"] == "firing"
        and a["evidence"]["metric"] == "outcomes_per_minute"
    ]
    assert drops, [a["summary"] for a in alerts]
    first = drops[0]
    # detected_at is the end of the minute that confirmed it, in event time.
    delay = parse_ts(first["detected_at"]) - incident.start.timestamp()
    assert 0 < delay <= 300, (delay, first["summary"])
    assert "missing" in first["summary"] and "support_chat" in first["summary"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_same_hours_without_the_drop_raise_no_drop(seed, tmp_path):
    alerts = _replay(_support_chat(seed, drop=None), tmp_path)
    assert not [a for a in alerts if a["evidence"]["metric"] == "outcomes_per_minute"]


def _minutes(calls: list[float], outcomes: list[float]) -> list[MinuteSignals]:
    return [
        MinuteSignals("desk", m, llm_calls=int(c), outcomes=int(o), cost=c * 0.01)
        for m, (c, o) in enumerate(zip(calls, outcomes, strict=True))
    ]


def _poisson(rng: random.Random, lam: float) -> int:
    # Knuth's method: small rates only (tests).
    k, p, limit = 0, rng.random(), pow(2.718281828459045, -lam)
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def test_outcomes_lagging_a_morning_ramp_of_calls_are_not_a_drop():
    rng = random.Random(5)
    # Three hours at 20 calls a minute (2 outcomes), then calls triple within
    # ten minutes and outcomes follow fifteen minutes later; then the evening:
    # calls fall to a tenth and outcomes keep arriving for a while.
    calls = [20.0] * 180 + [20.0 + 4 * i for i in range(10)] + [60.0] * 120 + [6.0] * 120
    rate = [2.0] * 195 + [2.0 + 0.4 * i for i in range(10)] + [6.0] * 105 + [0.6] * 120
    outcomes = [float(_poisson(rng, r)) for r in rate]
    lens = OutcomeDrop(OutcomeDropDetector(), "ticket_resolved")
    assert feed(lens, _minutes(calls, outcomes), context("desk")) == []


def test_a_drop_at_a_low_outcome_rate_takes_longer_but_is_found():
    rng = random.Random(9)
    calls = [30.0] * 600
    outcomes = [float(_poisson(rng, 1.0 if m < 400 else 0.1)) for m in range(600)]
    lens = OutcomeDrop(OutcomeDropDetector(), "ticket_resolved")
    found = feed(lens, _minutes(calls, outcomes), context("desk"))
    assert found and all(m >= 400 for m, _ in found)
    assert found[0][0] - 400 <= 30  # ~15 expected at a rate of 1 a minute
