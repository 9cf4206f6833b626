"""End to end on labelled traffic: the engine diagnoses incidents, alerts are
deterministic, follow the incident life cycle, and conform to schemas/alert.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spendsentry.contracts import validate
from spendsentry.engine import Engine
from spendsentry.evaluate import parse_alerts, read_labels, score
from spendsentry.policy import PolicySet
from spendsentry.replay import Sinks, replay
from spendsentry.simulate.scenario import Scenario

ROOT = Path(__file__).resolve().parents[2]
KINDS = ["retrieval_amplification", "embedding_duplication", "agent_chatter", "fallback_drift"]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("scenario")
    return Scenario(seed=11, hours=4.5, incidents=KINDS).write(out)


def _replay(events: Path, out: Path) -> list[dict]:
    engine = Engine(PolicySet.load(ROOT / "streams" / "policies"))
    sinks = Sinks(alerts=str(out))
    try:
        replay([str(events)], engine, sinks)
    finally:
        sinks.close()
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.fixture(scope="module")
def alerts(scenario, tmp_path_factory) -> list[dict]:
    return _replay(scenario[0], tmp_path_factory.mktemp("a") / "alerts.jsonl")


def test_every_labelled_incident_is_diagnosed_without_false_alerts(scenario, alerts):
    labels = read_labels(scenario[1])
    parsed, _ = parse_alerts(alerts)
    result = score(labels, parsed)
    missed = [i.incident_id for i in result.incidents if not i.diagnosed]
    assert not missed
    assert result.total.false_alerts == 0
    assert max(i.delay_min for i in result.incidents) <= 10


def test_replay_is_deterministic(scenario, alerts, tmp_path):
    assert _replay(scenario[0], tmp_path / "again.jsonl") == alerts


def test_alerts_conform_to_the_schema_and_explain_themselves(alerts):
    assert alerts
    for alert in alerts:
        assert validate("alert", alert) == [], alert
        assert alert["summary"] and alert["use_case"] in alert["summary"]
        assert {"baseline", "observed", "score", "window_s", "metric"} <= set(alert["evidence"])


def test_one_firing_per_incident_then_resolved(alerts):
    by_id: dict[str, list[str]] = {}
    for alert in alerts:
        by_id.setdefault(alert["alert_id"], []).append(alert["status"])
    for statuses in by_id.values():
        assert statuses[0] == "firing"
        assert statuses.count("firing") == 1
        assert statuses.count("resolved") <= 1
        if "resolved" in statuses:
            assert statuses[-1] == "resolved"
