"""Operator feedback that teaches: expected change and false alarm (``spendsentry.feedback``)."""

from __future__ import annotations

import math
import random

import pytest
from _snapshots import plain, restart

from spendsentry.contracts import validate
from spendsentry.engine import Engine, EngineOutput
from spendsentry.events import UsageEvent
from spendsentry.feedback import apply_due, tuned_sensitivities
from spendsentry.messages.control import ControlAction, ControlError
from spendsentry.policy import DetectorSetting, Policy, PolicySet
from spendsentry.snapshot.detectors import dump_running
from spendsentry.snapshot.engine import dump_engine, load_engine

T0 = 1_793_577_600.0  # 2026-11-02T00:00:00Z
USE_CASE = "chat"
STEP_AT = 240  # minutes of normal traffic before prompts grow (warm-up is 300 calls)


def minutes(count: int, *, step_at: int | None = STEP_AT, factor: float = 2.4, seed: int = 1):
    """20 calls a minute of ~1,000 input tokens; from ``step_at`` on, ``factor`` times more."""
    rng = random.Random(seed)
    for m in range(count):
        grown = step_at is not None and m >= step_at
        yield [
            UsageEvent(
                event_id=f"e{m}-{k}",
                ts=T0 + m * 60 + k * 2.5,
                use_case=USE_CASE,
                model="gpt-4o-mini",
                input_tokens=int(rng.gauss(1000, 100) * (factor if grown else 1.0)),
                output_tokens=100,
            )
            for k in range(20)
        ]


def feedback(action: str, minute: int, kind: str = "prompt_inflation", **kw) -> ControlAction:
    return ControlAction(action, None, USE_CASE, kind, None, None, "U1", T0 + minute * 60, **kw)


def run(engine: Engine, count: int = 360, actions=(), **kw):
    """Feed ``count`` minutes a minute at a time; ``actions`` [(at minute, action)] are
    handed to the engine when that minute's events are (as the worker reads ai.control)."""
    alerts = []
    for m, batch in enumerate(minutes(count, **kw)):
        engine.process(batch)
        for when, action in actions:
            if when == m:
                engine.apply_control(action)
        alerts += engine.advance().alerts
    alerts += engine.flush().alerts
    return alerts


def statuses(alerts, kind="prompt_inflation"):
    return [(round((a.detected_at - T0) / 60), a.status) for a in alerts if a.kind == kind]


def test_without_feedback_a_lasting_step_stays_an_open_incident() -> None:
    alerts = run(Engine(PolicySet.empty()))
    assert [s for _, s in statuses(alerts)] == ["firing"]


def test_expected_change_resolves_the_incident_and_the_new_level_is_the_baseline() -> None:
    engine = Engine(PolicySet.empty())
    alerts = run(engine, actions=[(260, feedback("expected_change", 260))])
    got = statuses(alerts)
    assert got[0][1] == "firing" and got[0][0] < 260
    # Resolved at the defined event-time point (the start of the minute holding
    # ``at``), and the same step never alerts again over the next 100 minutes.
    assert got[1:] == [(260, "resolved")]
    resolved = next(a for a in alerts if a.status == "resolved")
    assert resolved.evidence["details"]["resolution"] == "expected_change"
    assert resolved.evidence["details"]["resolved_by"] == "U1"
    assert "expected change" in resolved.summary
    assert resolved.incident_id is not None and resolved.to_dict()["status"] == "resolved"
    assert validate("alert", resolved.to_dict()) == []
    state = engine.use_cases[USE_CASE]
    detector = next(m for m in state.monitors if m.kind == "prompt_inflation").detector
    assert math.exp(detector.baseline) == pytest.approx(2400, rel=0.1)  # the grown prompts
    assert state.feedback.expected_changes == {"prompt_inflation": 1}
    assert engine.firing() == []


def test_expected_change_of_a_cost_spike_rebases_both_lenses() -> None:
    def calls(seed: int = 3):
        rng = random.Random(seed)
        for m in range(420):
            n = rng.randint(15, 25) * (5 if m >= 300 else 1)
            yield [
                UsageEvent(
                    event_id=f"e{m}-{k}",
                    ts=T0 + m * 60 + k * 59 / n,
                    use_case=USE_CASE,
                    model="gpt-4o",
                    input_tokens=1000,
                    output_tokens=100,
                )
                for k in range(n)
            ]

    def spikes(actions):
        engine = Engine(PolicySet.empty())
        out = []
        for m, batch in enumerate(calls()):
            engine.process(batch)
            for when, action in actions:
                if when == m:
                    engine.apply_control(action)
            out += engine.advance().alerts
        out += engine.flush().alerts
        return statuses(out, "cost_spike")

    assert [s for _, s in spikes([])] == ["firing", "escalated"]
    taught = spikes([(320, feedback("expected_change", 320, kind="cost_spike"))])
    assert [s for _, s in taught] == ["firing", "escalated", "resolved"]
    assert taught[-1][0] == 320


def test_expected_change_on_an_older_alert_is_only_counted() -> None:
    engine = Engine(PolicySet.empty())
    stale = feedback("expected_change", 260)
    stale = ControlAction(**{**_fields(stale), "alert_id": "not-the-open-one"})
    alerts = run(engine, actions=[(260, stale)])
    # A click on an old message: the level then is not the level now.
    assert [s for _, s in statuses(alerts)] == ["firing"]
    assert engine.use_cases[USE_CASE].feedback.expected_changes == {"prompt_inflation": 1}
    # Naming the open alert resolves it.
    engine = Engine(PolicySet.empty())
    first = statuses(run(Engine(PolicySet.empty()), count=250))
    open_id = next(a.alert_id for a in run(Engine(PolicySet.empty()), count=250))
    named = ControlAction(**{**_fields(stale), "alert_id": open_id})
    assert first and statuses(run(engine, actions=[(260, named)]))[-1] == (260, "resolved")


def _fields(action: ControlAction) -> dict:
    return {name: getattr(action, name) for name in action.__dataclass_fields__}


def test_false_alarm_lowers_the_sensitivity_one_step_at_a_time_down_to_the_floor() -> None:
    policy = Policy(USE_CASE, detectors={"prompt_inflation": DetectorSetting(min_sensitivity=0.6)})
    engine = Engine(PolicySet([policy]))
    run(engine, count=120, step_at=None)
    state = engine.use_cases[USE_CASE]
    before = next(m for m in state.monitors if m.kind == "prompt_inflation")
    learned = dump_running(before.detector)
    seen = []
    for _ in range(5):
        engine.apply_control(feedback("false_alarm", 100))  # due before the next close
        # Applied alone (no minute closes), so what it learned can be compared.
        apply_due(engine, engine.closed_until, EngineOutput())
        seen.append(round(state.sensitivity("prompt_inflation"), 3))
    assert seen == [0.8, 0.64, 0.6, 0.6, 0.6]
    assert state.feedback.false_alarms == {"prompt_inflation": 5}
    assert tuned_sensitivities(engine) == {(USE_CASE, "prompt_inflation"): 0.6}
    after = next(m for m in state.monitors if m.kind == "prompt_inflation")
    # Rebuilt at the floor's bar (ratio 1.5 at sensitivity 1 -> 1 + 0.5 / 0.6)...
    assert after is not before
    assert math.exp(after.detector.min_delta) == pytest.approx(1 + 0.5 / 0.6)
    # ... keeping what it had learned (no warm-up again).
    assert dump_running(after.detector) == learned
    # Other kinds are untouched.
    assert state.sensitivity("cost_spike") == 1.0


def test_false_alarms_make_a_modest_step_stop_alerting() -> None:
    modest = {"factor": 1.7}
    assert statuses(run(Engine(PolicySet.empty()), **modest))  # alerts at sensitivity 1
    engine = Engine(PolicySet.empty())
    actions = [(10 + i, feedback("false_alarm", 10 + i)) for i in range(4)]  # -> 0.5
    assert statuses(run(engine, actions=actions, **modest)) == []


def test_feedback_applies_at_event_time_not_when_it_is_read() -> None:
    """Handed over early or late (before the minute of ``at`` closes), the same alerts."""
    early = run(Engine(PolicySet.empty()), actions=[(200, feedback("expected_change", 260))])
    late = run(Engine(PolicySet.empty()), actions=[(261, feedback("expected_change", 260))])
    assert [a.to_dict() for a in early] == [a.to_dict() for a in late]
    assert statuses(early)[-1] == (260, "resolved")


def test_feedback_for_a_use_case_the_engine_does_not_hold_is_not_its_own() -> None:
    engine = Engine(PolicySet.empty())
    out = engine.apply_control(feedback("false_alarm", 0))
    assert out.feedback == [] and engine.pending_feedback == []
    engine.process(next(minutes(1)))
    assert engine.apply_control(feedback("false_alarm", 0)).feedback != []


def test_feedback_needs_a_kind_and_validates_against_the_schema() -> None:
    message = feedback("expected_change", 1).to_dict()
    assert validate("control-action", message) == []
    assert ControlAction.parse(message).is_feedback
    with pytest.raises(ControlError, match=r"\$\.kind"):
        ControlAction.parse({**message, "kind": None})


def test_feedback_and_pending_feedback_survive_a_snapshot_and_restore() -> None:
    policy = Policy(USE_CASE, detectors={"prompt_inflation": DetectorSetting(min_sensitivity=0.6)})
    engine = Engine(PolicySet([policy]))
    run(engine, count=100, step_at=None)
    engine.apply_control(feedback("false_alarm", 100))
    engine.apply_control(feedback("false_alarm", 100))
    engine.advance(T0 + 105 * 60)
    engine.apply_control(feedback("expected_change", 500))  # not due yet
    restored = restart(engine)
    state = restored.use_cases[USE_CASE]
    assert state.feedback.false_alarms == {"prompt_inflation": 2}
    assert tuned_sensitivities(restored) == tuned_sensitivities(engine)
    assert tuned_sensitivities(engine)[USE_CASE, "prompt_inflation"] == pytest.approx(0.64)
    # Built tuned from the snapshot: the same thresholds and the same learning.
    mine = next(m for m in engine.use_cases[USE_CASE].monitors if m.kind == "prompt_inflation")
    theirs = next(m for m in state.monitors if m.kind == "prompt_inflation")
    assert theirs.detector.min_delta == mine.detector.min_delta
    assert dump_running(theirs.detector) == dump_running(mine.detector)
    assert restored.pending_feedback == engine.pending_feedback
    assert dump_engine(restored) == dump_engine(engine)


def test_a_snapshot_without_feedback_restores_with_none() -> None:
    engine = Engine(PolicySet.empty())
    run(engine, count=30, step_at=None)
    doc = dump_engine(engine)
    assert "pending_feedback" not in doc and "feedback" not in doc["use_cases"][USE_CASE]
    fresh = Engine(PolicySet.empty())
    restored = load_engine(fresh, plain(doc))
    assert not restored.use_cases[USE_CASE].feedback
    assert restored.pending_feedback == [] and tuned_sensitivities(restored) == {}


def test_replay_and_evaluate_take_the_control_records(tmp_path, capsys) -> None:
    """``replay --control`` applies feedback at its event time, as the worker does;
    ``evaluate --control`` reports it per use case and kind with the verdicts."""
    import json

    from spendsentry.cli import main

    events = tmp_path / "events.jsonl"
    events.write_text(
        "".join(json.dumps(e.to_dict()) + "\n" for batch in minutes(330) for e in batch)
    )
    first = tmp_path / "alerts-first.jsonl"
    assert main(["replay", str(events), "--alerts-out", str(first), "--quiet"]) == 0
    fired = [json.loads(line) for line in first.read_text().splitlines()]
    alert_id = next(a["alert_id"] for a in fired if a["kind"] == "prompt_inflation")
    control = tmp_path / "control.jsonl"
    named = ControlAction(**{**_fields(feedback("expected_change", 260)), "alert_id": alert_id})
    control.write_text(
        json.dumps(named.to_dict()) + "\n" + json.dumps(feedback("false_alarm", 300).to_dict())
    )
    taught = tmp_path / "alerts.jsonl"
    args = ["replay", str(events), "--alerts-out", str(taught), "--quiet", "--control"]
    assert main([*args, str(control)]) == 0
    records = [json.loads(line) for line in taught.read_text().splitlines()]
    resolved = [r for r in records if r["status"] == "resolved"]
    assert [r["alert_id"] for r in resolved] == [alert_id]
    assert resolved[0]["evidence"]["details"]["resolution"] == "expected_change"
    assert resolved[0]["resolved_at"] == "2026-11-02T04:20:00.000Z"  # minute 260, event time

    labels = tmp_path / "labels.json"
    start = "2026-11-02T00:00:00Z"
    labels.write_text(
        json.dumps(
            {
                "start": start,
                "hours": 5.5,
                "use_cases": [USE_CASE],
                "incidents": [
                    {
                        "incident_id": "i1",
                        "kind": "prompt_inflation",
                        "use_case": USE_CASE,
                        "start": "2026-11-02T04:00:00Z",
                        "end": "2026-11-02T05:30:00Z",
                    }
                ],
            }
        )
    )
    capsys.readouterr()
    report = tmp_path / "report.json"
    evaluate = ["evaluate", str(labels), str(taught), "--control", str(control)]
    assert main([*evaluate, "--json", str(report)]) == 0
    text = capsys.readouterr().out
    assert "operator feedback" in text and "expected_change: 1 diagnosis" in text
    rows = json.loads(report.read_text())["feedback"]
    assert rows == [
        {
            "use_case": USE_CASE,
            "kind": "prompt_inflation",
            "expected_change": 1,
            "false_alarm": 1,
            "sensitivity": 0.8,
            "on_verdict": {"expected_change": {"diagnosis": 1}},
        }
    ]


def test_the_floor_is_read_from_the_policy_files() -> None:
    from spendsentry.setup import default_policies_dir

    policies = PolicySet.load(default_policies_dir())
    setting = policies.for_use_case("support_chat").detector("prompt_inflation")
    assert (setting.sensitivity, setting.min_sensitivity, setting.floor) == (1.25, 0.8, 0.8)
    assert policies.for_use_case("support_chat").detector("cost_spike").floor == 0.5


def test_an_accepted_episode_opens_no_incident_until_it_has_been_quiet() -> None:
    """A kind whose bar is not learned (a budget, a first call, runaway sessions) goes on
    finding what the operator called expected: no new incident until it is over."""
    from spendsentry.alerts import Finding, IncidentTracker
    from spendsentry.snapshot.incidents import dump_tracker, load_tracker

    f = Finding("agent_chatter", "warning", 5.0, "calls", 10.0, 50.0, 60, "u: a loop.")
    t = IncidentTracker("u", "agent_chatter", resolve_after=3)
    assert [a.status for a in t.observe(f, 60.0)] == ["firing"]
    resolved = t.resolve(120.0, "expected", resolution="expected_change")
    assert resolved is not None and resolved.status == "resolved"
    assert resolved.evidence["details"] == {"resolution": "expected_change"}
    assert t.resolve(130.0, "again") is None  # nothing open
    steps = [f, None, f, None, None]  # a gap shorter than resolve_after: the same episode
    assert [t.observe(x, 180.0 + 60 * i) for i, x in enumerate(steps)] == [[]] * 5
    restored = IncidentTracker("u", "agent_chatter", resolve_after=3)
    load_tracker(restored, plain(dump_tracker(t)))
    assert restored.accepted == t.accepted == 2
    assert restored.observe(None, 500.0) == [] and restored.accepted is None  # over
    assert [a.status for a in restored.observe(f, 560.0)] == ["firing"]  # a new one
