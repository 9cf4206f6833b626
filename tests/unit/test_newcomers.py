"""The simulator's newcomers: use cases no policy names and a model trial, labelled."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson

from spendsentry.engine import Engine
from spendsentry.evaluate import evaluate
from spendsentry.policy import PolicySet
from spendsentry.replay import Sinks, replay
from spendsentry.simulate.scenario import Scenario
from spendsentry.timeutil import parse_ts

ROOT = Path(__file__).resolve().parents[2]


def test_newcomers_only_come_with_incidents_and_are_labelled() -> None:
    assert Scenario(seed=2, hours=8, no_incidents=True).newcomers == []
    assert Scenario(seed=2, hours=8, incidents=["cost_spike"]).newcomers == []
    sc = Scenario(seed=2, hours=8)
    labels = sc.labels()
    roles = {n["role"]: n for n in labels["newcomers"]}
    assert set(roles) == {"shadow_pilot", "backfill", "benign_feature", "model_trial"}
    assert not roles["benign_feature"]["labelled"]
    incidents = {(i["kind"], i["use_case"]) for i in labels["incidents"]}
    assert ("unowned_spend", "shadow-ai-pilot") in incidents
    assert ("unowned_spend", "search-reindex-backfill") in incidents
    assert ("new_model", roles["model_trial"]["use_case"]) in incidents
    assert not any(u == "release-notes-helper" for _, u in incidents)
    # The twelve shapes stay the use cases the false-alert rate is counted over.
    assert "shadow-ai-pilot" not in labels["use_cases"]


def test_newcomer_traffic_is_where_and_what_the_labels_say() -> None:
    sc = Scenario(seed=2, hours=8)
    spans = {n.use_case: n for n in sc.newcomers if n.role != "model_trial"}
    trial = next(n for n in sc.newcomers if n.role == "model_trial")
    seen: Counter[str] = Counter()
    trial_calls = 0
    for e in sc.iter_events():
        minute = int((parse_ts(e["ts"]) - sc.start.timestamp()) // 60)
        n = spans.get(e["use_case"])
        if n is not None:
            assert n.start_minute <= minute < n.end_minute
            assert e["model"] == n.params["model"]
            assert e.get("team") == n.params["team"] and e.get("service") == n.params["service"]
            seen[e["use_case"]] += 1
        elif e.get("request_id", "").startswith("model_trial"):
            assert e["use_case"] == trial.use_case and e["model"] == trial.params["model"]
            assert trial.start_minute <= minute < trial.end_minute
            trial_calls += 1
    assert set(seen) == set(spans) and trial_calls > 0


def test_evaluate_scores_the_newcomers(tmp_path: Path) -> None:
    sc = Scenario(seed=2, hours=8)
    events, labels = sc.write(tmp_path)
    alerts = tmp_path / "alerts.jsonl"
    replay(
        [str(events)],
        Engine(PolicySet.load(ROOT / "streams" / "policies")),
        Sinks(alerts=str(alerts)),
    )
    report = evaluate(labels, alerts)
    rows = {r.kind: r for r in report.engine.rows}
    assert rows["unowned_spend"].incidents == 2 and rows["unowned_spend"].diagnosed == 2
    assert rows["new_model"].incidents == 1 and rows["new_model"].diagnosed == 1
    records = [orjson.loads(line) for line in alerts.read_bytes().splitlines() if line]
    assert records and not [a for a in records if a["use_case"] == "release-notes-helper"]
