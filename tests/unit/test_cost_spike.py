"""Cost spikes on use cases whose minutes swing a lot on their own.

The code-assistant traffic (calibrated on the Azure code trace: bursts of
hundreds of calls, a few huge prompts) swings 20x from one minute to the next,
so the arithmetic lens of :class:`CostSpike` sets its bar above those
swings and a step of the whole traffic can hide under it. The incidents here
are the ones the benchmark (``benchmarks/bench_detection.py``) once missed;
they are pinned so a change cannot lose them again, next to quiet days of the
same traffic that must page nobody.
"""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import pytest
from _monitors import context, feed

from spendsentry.detectors import build_monitors
from spendsentry.detectors.kinds.cost_spike import CostSpike
from spendsentry.engine import Engine
from spendsentry.policy import PolicySet
from spendsentry.replay import Sinks, replay
from spendsentry.simulate.scenario import Scenario
from spendsentry.snapshot.legacy import _CostSpike
from spendsentry.windows import MinuteSignals

ROOT = Path(__file__).resolve().parents[2]


def _without_lens(use_case: str, policy, prices) -> list:
    monitors = build_monitors(use_case, policy, prices)
    for m in monitors:
        if isinstance(m, CostSpike):
            m.shift = None
    return monitors


def _alerts(scenario: Scenario, use_case: str, out: Path, *, lens: bool = True) -> list[dict]:
    """Replay ``scenario`` restricted to one use case (its traffic is its own
    random stream, so it is the same as in the full scenario)."""
    scenario.shapes = tuple(s for s in scenario.shapes if s.name == use_case)
    scenario.incidents = [i for i in scenario.incidents if i.use_case == use_case]
    events, _ = scenario.write(out)
    engine = Engine(
        PolicySet.load(ROOT / "streams" / "policies"),
        monitor_factory=build_monitors if lens else _without_lens,
    )
    sinks = Sinks(alerts=str(out / "alerts.jsonl"))
    try:
        replay([str(events)], engine, sinks)
    finally:
        sinks.close()
    alerts = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
    # The run's newcomers (a shadow pilot judged against the fleet) are not this use case.
    return [a for a in alerts if a["use_case"] == use_case]


def _firing(alerts: list[dict], kind: str = "cost_spike") -> list[str]:
    return [a["detected_at"][:16] for a in alerts if a["kind"] == kind and a["status"] == "firing"]


@pytest.mark.parametrize(
    ("seed", "use_case", "why"),
    [
        # 4.3x arrivals while the minutes' own noise ran low: 2.5x in cost.
        (8, "code_assistant", "volatile minutes"),
        # 4.2x at dusk on a use case spending $0.60/h: under its midday peak x 1.5.
        (32, "underwriting_rag", "small spend"),
    ],
)
def test_a_spike_the_arithmetic_lens_missed_is_diagnosed(seed, use_case, why, tmp_path):
    scenario = Scenario(seed=seed, hours=24)
    [incident] = [
        i for i in scenario.incidents if i.use_case == use_case and i.kind == "cost_spike"
    ]
    fired = _firing(_alerts(scenario, use_case, tmp_path / "a"))
    assert any(_within(t, incident) for t in fired), (why, fired)
    # Any other cost_spike is collateral of another incident there (a prompt
    # inflation raises the spend too), never a false alarm.
    assert all(any(_within(t, i) for i in scenario.incidents) for t in fired), fired
    # ... and the arithmetic lens alone does miss it: the geometric one is why.
    alone = _firing(_alerts(Scenario(seed=seed, hours=24), use_case, tmp_path / "b", lens=False))
    assert not any(_within(t, incident) for t in alone), alone


def _within(detected: str, incident) -> bool:
    return incident.start.isoformat()[:16] <= detected <= incident.end.isoformat()[:16]


@pytest.mark.parametrize("seed", [201, 202])
def test_the_geometric_lens_adds_no_alert_on_quiet_days(seed, tmp_path):
    """Quiet days of the volatile traffic: the same alerts with the lens as without."""
    with_lens = _alerts(
        Scenario(seed=seed, hours=24, no_incidents=True), "code_assistant", tmp_path / "a"
    )
    without = _alerts(
        Scenario(seed=seed, hours=24, no_incidents=True),
        "code_assistant",
        tmp_path / "b",
        lens=False,
    )
    assert _firing(with_lens) == _firing(without)


def _run(monitor: CostSpike, minutes: list[MinuteSignals]) -> list[int]:
    return [m for m, _ in feed(monitor, minutes, context("code"))]


def _cost_spike_monitor() -> CostSpike:
    policy = PolicySet.empty().for_use_case("code")
    monitor = next(m for m in build_monitors("code", policy) if m.kind == "cost_spike")
    assert isinstance(monitor, CostSpike) and monitor.shift is not None
    return monitor


def test_a_monitor_pickled_before_the_geometric_lens_still_works() -> None:
    monitor = _cost_spike_monitor()
    monitor.shift = None
    state = pickle.loads(pickle.dumps(monitor)).__dict__
    for name in ("shift", "shift_persistence"):
        del state[name]
    # Such a monitor now exists only inside a version-2 pickle being converted.
    old = _CostSpike.__new__(_CostSpike)
    old.__dict__.update(state)
    rng = random.Random(1)
    minutes = [
        MinuteSignals(
            "code",
            m,
            llm_calls=60,
            cost=(8.0 if 600 <= m < 640 else 1.0) * rng.lognormvariate(-3, 0.3),
        )
        for m in range(900)
    ]
    fired = _run(old, minutes)
    assert fired and fired == _run(monitor, minutes)
    assert 600 <= fired[0] < 610
