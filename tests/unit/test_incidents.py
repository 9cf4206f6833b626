"""Incidents: a use case's overlapping alerts are one incident, named after its root cause."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from spendsentry.alerts import Alert
from spendsentry.budget_periods import PERIOD_KINDS
from spendsentry.detectors.kinds.base import SPEND
from spendsentry.detectors.registry import KINDS, kind_class
from spendsentry.engine import Engine
from spendsentry.incidents import IncidentGroup, root_cause_of
from spendsentry.policy import PolicySet
from spendsentry.replay import Sinks, replay
from spendsentry.simulate.scenario import Scenario

ROOT = Path(__file__).resolve().parents[2]
EXPLAINS = {kind: kind_class(kind).explains for kind in KINDS}


def _alert(alert_id: str, kind: str, status: str, at: float, started: float) -> Alert:
    return Alert(alert_id, kind, "u", "warning", status, at, started, "s", {}, 1.0)


def test_every_kind_explains_only_other_known_kinds_and_spend_explains_nothing() -> None:
    for kind, explained in EXPLAINS.items():
        assert kind not in explained
        assert set(explained) <= set(KINDS)
    for kind in SPEND:
        assert EXPLAINS[kind] == ()
    # What the issue names: an agent loop explains inflated prompts and a spike;
    # a model switch explains over-sizing and cost per outcome.
    assert {"prompt_inflation", "cost_spike"} <= set(EXPLAINS["agent_chatter"])
    assert {"model_oversizing", "cost_per_outcome"} <= set(EXPLAINS["fallback_drift"])


def test_the_explaining_kind_is_the_cause_whatever_order_they_fire_in() -> None:
    for order in (
        ["cost_spike", "prompt_inflation", "agent_chatter"],
        ["agent_chatter", "cost_spike", "prompt_inflation"],
        ["prompt_inflation", "agent_chatter", "cost_spike"],
    ):
        assert root_cause_of(order, EXPLAINS) == "agent_chatter"
    # Two spend kinds: neither explains the other, the first named stays.
    assert root_cause_of(["budget_burn", "cost_spike"], EXPLAINS) == "budget_burn"


def test_alerts_that_overlap_share_one_incident_and_a_later_one_starts_another() -> None:
    group = IncidentGroup("u", EXPLAINS)
    spike = _alert("a1", "cost_spike", "firing", 600.0, 480.0)
    group.assign([spike])
    loop = _alert("a2", "agent_chatter", "firing", 720.0, 540.0)
    group.assign([loop])
    assert loop.incident_id == spike.incident_id
    assert (loop.role, loop.root_cause) == ("cause", "agent_chatter")
    # The earlier alert's next update says it is a symptom now.
    spike_done = _alert("a1", "cost_spike", "resolved", 1500.0, 480.0)
    group.assign([spike_done])
    assert (spike_done.incident_id, spike_done.role) == (spike.incident_id, "symptom")
    loop_done = _alert("a2", "agent_chatter", "resolved", 1800.0, 540.0)
    group.assign([loop_done])
    # Began before the incident resolved: it overlaps, so it joins.
    late = _alert("a3", "budget_burn", "firing", 1900.0, 1700.0)
    group.assign([late])
    assert late.incident_id == spike.incident_id
    group.assign([_alert("a3", "budget_burn", "resolved", 2600.0, 1700.0)])
    # Began after everything resolved: a new incident, named after its first kind.
    other = _alert("a4", "cost_spike", "firing", 4000.0, 3900.0)
    group.assign([other])
    assert other.incident_id != spike.incident_id
    assert (other.root_cause, other.role) == ("cost_spike", "cause")


def test_kinds_firing_in_one_minute_agree_on_the_cause_at_once() -> None:
    group = IncidentGroup("u", EXPLAINS)
    spike = _alert("a1", "cost_spike", "firing", 600.0, 480.0)
    switch = _alert("a2", "fallback_drift", "firing", 600.0, 540.0)
    group.assign([spike, switch])
    assert spike.incident_id == switch.incident_id
    assert (spike.role, switch.role) == ("symptom", "cause")
    assert spike.root_cause == switch.root_cause == "fallback_drift"


def _replay(tmp_path: Path, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    tmp_path.mkdir()
    events_path, _ = Scenario(seed=seed, hours=5).write(tmp_path)
    alerts_path, commands_path = tmp_path / "alerts.jsonl", tmp_path / "commands.jsonl"
    sinks = Sinks(alerts=str(alerts_path), commands=str(commands_path))
    try:
        replay([str(events_path)], Engine(PolicySet.load(ROOT / "streams" / "policies")), sinks)
    finally:
        sinks.close()

    def lines(path: Path) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]

    return lines(alerts_path), lines(commands_path)


def _overlapping_share_incidents(alerts: list[dict[str, Any]]) -> None:
    spans: dict[str, dict[str, list[Any]]] = defaultdict(dict)
    for a in alerts:
        span = spans[a["use_case"]].setdefault(a["alert_id"], [a["started_at"], None, None])
        span[2] = a["incident_id"]
        if a["status"] == "resolved":
            span[1] = a["resolved_at"]
    for by_alert in spans.values():
        ordered = sorted(by_alert.values(), key=lambda s: s[0])
        end, incident = None, None
        for started, resolved, incident_id in ordered:
            if incident is not None and (end is None or started <= end):
                assert incident_id == incident
            if incident_id != incident:
                end = resolved
            elif end is not None:
                end = None if resolved is None else max(end, resolved)
            incident = incident_id


def test_a_replay_groups_overlapping_alerts_and_only_causes_throttle(tmp_path: Path) -> None:
    alerts, commands = _replay(tmp_path / "a", seed=3)
    assert alerts and all(a["incident_id"].startswith("inc-") for a in alerts)
    # Budget threshold warnings are each their budget period's own incident.
    warnings = [a for a in alerts if a["kind"] in PERIOD_KINDS]
    assert all((a["root_cause"], a["role"]) == (a["kind"], "cause") for a in warnings)
    assert not {a["incident_id"] for a in warnings} & {
        a["incident_id"] for a in alerts if a["kind"] not in PERIOD_KINDS
    }
    everything, alerts = alerts, [a for a in alerts if a["kind"] not in PERIOD_KINDS]
    _overlapping_share_incidents(alerts)
    # Each incident's last word names a kind of it that none of its kinds explains.
    kinds: dict[str, list[str]] = defaultdict(list)
    last: dict[str, str] = {}
    for a in alerts:
        kinds[a["incident_id"]].append(a["kind"])
        last[a["incident_id"]] = a["root_cause"]
        assert a["role"] == ("cause" if a["kind"] == a["root_cause"] else "symptom")
        assert isinstance(a.get("drivers"), list) or a["status"] == "resolved"
    assert any(len(set(k)) > 1 for k in kinds.values()), "no incident with symptoms"
    for incident_id, cause in last.items():
        assert cause == root_cause_of(list(dict.fromkeys(kinds[incident_id])), EXPLAINS)
    # A symptom issues no command of its own.
    issued = {(c["reason"]["alert_id"], c["issued_at"]) for c in commands}
    for a in alerts:
        if a["role"] == "symptom" and a["status"] != "resolved":
            assert (a["alert_id"], a["detected_at"]) not in issued
    # Deterministic: a second replay names the same incidents.
    again, _ = _replay(tmp_path / "b", seed=3)
    assert [a["incident_id"] for a in again] == [a["incident_id"] for a in everything]
