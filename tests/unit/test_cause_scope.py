"""Throttles take the cause: one session, agent or model when it drives the excess."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_incidents import _replay

from spendsentry.actions import ThrottlePlanner
from spendsentry.actions.cause import CAUSE_SHARE, cause_scope
from spendsentry.actions.planner import Baseline
from spendsentry.alerts import Alert
from spendsentry.policy import LadderStep, Policy

T0 = 1_793_610_000.0
POLICY = Policy(
    "research",
    auto_throttle="on",
    ladder=(LadderStep("warning", "limit_rate"), LadderStep("critical", "block")),
)


def _alert(status: str, severity: str, at: float, drivers: list[dict[str, Any]]) -> Alert:
    alert = Alert("cd" * 8, "agent_chatter", "research", severity, status, at, T0, "loop", {}, 2.0)
    alert.drivers = drivers
    return alert


def _session(share: float, name: str = "run-7") -> dict[str, Any]:
    return {"dimension": "session", "value": name, "share": share, "usual_share": 0.0}


def test_a_driver_under_the_cause_share_leaves_the_whole_use_case() -> None:
    spread = _alert("firing", "critical", T0, [_session(CAUSE_SHARE - 0.01)])
    assert cause_scope(spread).key == "research"
    assert cause_scope(_alert("firing", "critical", T0, [])).key == "research"
    model = {"dimension": "model", "value": "gpt-4o", "share": 0.9, "usual_share": 0.3}
    agent = {"dimension": "agent", "value": "planner", "share": 0.95, "usual_share": 0.5}
    both = _alert("firing", "critical", T0, [_session(0.3), agent, model])
    assert cause_scope(both).key == "research/model=gpt-4o/agent=planner"


def test_a_runaway_session_is_blocked_alone_escalated_there_and_released_there() -> None:
    planner = ThrottlePlanner()
    usual = Baseline(40.0, 80_000.0)
    first = planner.plan(_alert("firing", "warning", T0, [_session(0.92)]), POLICY, usual)
    assert first is not None and first.scope.session_id == "run-7"
    # Its usual part of the use case was nothing: one usual call a minute.
    assert first.action == "limit_rate" and first.params["requests_per_minute"] == 1
    # The escalation acts where the firing did, whatever the drivers say by then.
    later = _alert("escalated", "critical", T0 + 900, [_session(0.5, "run-8")])
    second = planner.plan(later, POLICY, usual)
    assert second is not None and second.action == "block"
    assert second.scope.key == first.scope.key and second.version == 2
    assert planner.latest("research") is None  # healthy sessions go on
    resolved = planner.plan(_alert("resolved", "critical", T0 + 1800, []), POLICY, usual)
    assert resolved is not None and resolved.action == "release"
    assert resolved.scope.key == first.scope.key


def test_a_symptom_points_at_the_narrowed_command_in_force() -> None:
    planner = ThrottlePlanner()
    cmd = planner.plan(_alert("firing", "critical", T0, [_session(0.9)]), POLICY)
    symptom = Alert("ef" * 8, "cost_spike", "research", "critical", "firing", T0 + 60, T0,
                    "spend", {}, 2.0)  # fmt: skip
    symptom.role = "symptom"
    assert planner.plan(symptom, POLICY) is None
    assert cmd is not None and symptom.action["command_id"] == cmd.command_id


def test_explicit_rate_limits_are_the_use_case_allowance_shared_by_usual_part() -> None:
    policy = Policy(
        "research",
        auto_throttle="on",
        ladder=(LadderStep("warning", "limit_rate", requests_per_minute=200),),
    )
    agent = {"dimension": "agent", "value": "planner", "share": 0.9, "usual_share": 0.25}
    cmd = ThrottlePlanner().plan(_alert("firing", "warning", T0, [agent]), policy)
    assert cmd is not None and cmd.scope.agent_id == "planner"
    assert cmd.params == {"requests_per_minute": 50}


def test_a_replayed_agent_loop_throttles_its_session_not_its_use_case(tmp_path: Path) -> None:
    # Seed 5: research_agent's loop (one session) is found by agent_chatter.
    alerts, commands = _replay(tmp_path / "r", seed=5)
    kinds = {a["alert_id"]: a["kind"] for a in alerts}
    loop = [c for c in commands if kinds.get(c["reason"]["alert_id"]) == "agent_chatter"
            and c["scope"]["use_case"] == "research_agent"]  # fmt: skip
    assert loop, "no throttle for the agent loop"
    assert all(c["scope"].get("session_id") for c in loop)
    assert [c["action"] for c in loop][-1] == "release"
    # Budgets stay the use case's: no budget command is narrowed.
    for c in commands:
        if kinds.get(c["reason"]["alert_id"]) in {"budget_burn", "budget_threshold"}:
            assert set(c["scope"]) == {"use_case"}
