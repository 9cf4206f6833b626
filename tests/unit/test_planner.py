"""The action ladder: ThrottlePlanner rules, and the engine that runs it."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from spendsentry.actions import Baseline, ControlAction, ControlError, ThrottleKeys, ThrottlePlanner
from spendsentry.actions.planner import MAX_COMMAND_S
from spendsentry.alerts import Alert
from spendsentry.contracts import validate
from spendsentry.engine import Engine
from spendsentry.events import UsageEvent
from spendsentry.policy import DEFAULT_LADDER, LadderStep, Policy, PolicySet
from spendsentry.timeutil import format_ts

T0 = 1793610000.0
LADDER = (
    LadderStep("warning", "limit_rate", requests_per_minute=600),
    LadderStep("critical", "limit_rate", requests_per_minute=60, tokens_per_minute=90_000),
)
#: The ladder support_chat once shipped: its critical step lifted the rate limit.
LOOSENING_LADDER = (
    LadderStep("warning", "limit_rate", requests_per_minute=600),
    LadderStep("critical", "route_model", target_model="gpt-4o-mini"),
)


def policy(**changes: Any) -> Policy:
    base: dict[str, Any] = {
        "use_case": "support_chat",
        "auto_throttle": "on",
        "ladder": LADDER,
        "cooldown_s": 600.0,
        "max_duration_s": 3600.0,
    }
    return Policy(**{**base, **changes})


def alert(
    severity: str = "warning",
    status: str = "firing",
    at: float = T0,
    kind: str = "cost_spike",
    alert_id: str = "a1" * 8,
) -> Alert:
    return Alert(alert_id, kind, "support_chat", severity, status, at, T0 - 300, "cost x4", {}, 2.0)


def test_the_ladder_step_follows_the_severity() -> None:
    planner = ThrottlePlanner()
    a = alert("warning")
    cmd = planner.plan(a, policy())
    assert cmd is not None and cmd.action == "limit_rate"
    assert cmd.params == {"requests_per_minute": 600}
    assert a.action == {
        "type": "throttle",
        "command_id": cmd.command_id,
        "throttle_action": "limit_rate",
    }
    b = alert("critical", "escalated", at=T0 + 900)
    cmd2 = planner.plan(b, policy())
    assert cmd2 is not None and cmd2.action == "limit_rate" and cmd2.version == 2
    assert cmd2.params == {"requests_per_minute": 60, "tokens_per_minute": 90_000}
    info = alert("info", kind="model_oversizing", alert_id="b2" * 8)
    assert ThrottlePlanner().plan(info, policy()) is None and info.action == {"type": "none"}


def test_a_none_step_only_alerts() -> None:
    p = policy(ladder=(LadderStep("warning", "none"),))
    a = alert("critical")
    assert ThrottlePlanner().plan(a, p) is None
    assert a.action == {"type": "none"}


def test_cooldown_holds_the_next_step_back_and_the_alert_points_at_the_command_in_force() -> None:
    planner = ThrottlePlanner()
    first = planner.plan(alert("warning"), policy())
    assert first is not None
    b = alert("critical", "escalated", at=T0 + 120)
    assert planner.plan(b, policy()) is None
    assert b.action["command_id"] == first.command_id
    # After the cooldown the escalation would go through.
    c = alert("critical", "escalated", at=T0 + 600)
    later = planner.plan(c, policy())
    assert later is not None and later.version == 2


def test_no_cooldown_lets_an_escalation_through_at_once() -> None:
    planner = ThrottlePlanner()
    planner.plan(alert("warning"), policy(cooldown_s=0.0))
    cmd = planner.plan(alert("critical", "escalated", at=T0 + 60), policy(cooldown_s=0.0))
    assert cmd is not None and cmd.params["requests_per_minute"] == 60


def test_an_escalation_never_lifts_the_enforced_limit_in_force() -> None:
    planner = ThrottlePlanner()
    p = policy(ladder=LOOSENING_LADDER, cooldown_s=0.0)
    limit = planner.plan(alert("warning"), p)
    assert limit is not None and limit.action == "limit_rate"
    crit = alert("critical", "escalated", at=T0 + 60)
    assert planner.plan(crit, p) is None
    assert crit.action["command_id"] == limit.command_id
    assert planner.active(T0 + 61) == [limit] and planner.kept_stricter == 1
    # Without a command in force the step applies as written.
    fresh = ThrottlePlanner().plan(alert("critical"), p)
    assert fresh is not None and fresh.action == "route_model"


def test_a_block_replaces_anything_and_nothing_else_replaces_a_block() -> None:
    p = policy(ladder=(LadderStep("warning", "block"),
                       LadderStep("critical", "cap_input_tokens", max_input_tokens=8000)),
               cooldown_s=0.0)  # fmt: skip
    planner = ThrottlePlanner()
    block = planner.plan(alert("warning"), p)
    assert block is not None and block.action == "block"
    assert planner.plan(alert("critical", "escalated", at=T0 + 60), p) is None
    up = policy(ladder=(LadderStep("warning", "cap_input_tokens", max_input_tokens=8000),
                        LadderStep("critical", "block")), cooldown_s=0.0)  # fmt: skip
    planner = ThrottlePlanner()
    planner.plan(alert("warning"), up)
    cmd = planner.plan(alert("critical", "escalated", at=T0 + 60), up)
    assert cmd is not None and cmd.action == "block"


def test_rate_limits_merge_to_the_lower_of_each_and_a_looser_one_changes_nothing() -> None:
    p = policy(ladder=(LadderStep("warning", "limit_rate", requests_per_minute=600),
                       LadderStep("critical", "limit_rate", requests_per_minute=900,
                                  tokens_per_minute=50_000)),
               cooldown_s=0.0)  # fmt: skip
    planner = ThrottlePlanner()
    planner.plan(alert("warning"), p)
    cmd = planner.plan(alert("critical", "escalated", at=T0 + 60), p)
    assert cmd is not None
    assert cmd.params == {"requests_per_minute": 600, "tokens_per_minute": 50_000}
    looser = policy(ladder=(LadderStep("warning", "limit_rate", requests_per_minute=600),
                            LadderStep("critical", "limit_rate", requests_per_minute=900)),
                    cooldown_s=0.0)  # fmt: skip
    planner = ThrottlePlanner()
    first = planner.plan(alert("warning"), looser)
    crit = alert("critical", "escalated", at=T0 + 60)
    assert planner.plan(crit, looser) is None
    assert crit.action["command_id"] == first.command_id if first else False


def test_a_dry_run_command_in_force_restricts_nothing_so_any_step_replaces_it() -> None:
    planner = ThrottlePlanner()
    p = policy(ladder=LOOSENING_LADDER, cooldown_s=0.0, auto_throttle="dry_run")
    planner.plan(alert("warning"), p)
    cmd = planner.plan(alert("critical", "escalated", at=T0 + 60), p)
    assert cmd is not None and cmd.action == "route_model" and cmd.dry_run


def test_the_same_command_is_not_repeated_and_a_lower_severity_does_not_loosen_it() -> None:
    planner = ThrottlePlanner()
    p = policy(cooldown_s=0.0)
    crit = planner.plan(alert("critical"), p)
    assert crit is not None
    other = alert("critical", kind="prompt_inflation", alert_id="c3" * 8, at=T0 + 60)
    assert planner.plan(other, p) is None
    assert other.action["command_id"] == crit.command_id
    weaker = alert("warning", kind="agent_chatter", alert_id="d4" * 8, at=T0 + 120)
    assert planner.plan(weaker, p) is None
    assert weaker.action["command_id"] == crit.command_id


def test_every_command_expires_after_max_duration_and_never_after_a_day() -> None:
    cmd = ThrottlePlanner().plan(alert(), policy(max_duration_s=1800.0))
    assert cmd is not None and cmd.expires_at - cmd.issued_at == 1800.0
    assert cmd.issued_at == T0  # the alert's detected_at: event time
    long = ThrottlePlanner().plan(alert(), policy(max_duration_s=10 * 86400.0))
    assert long is not None and long.expires_at - long.issued_at == MAX_COMMAND_S


def test_the_owning_incident_releases_the_command_when_it_resolves() -> None:
    planner = ThrottlePlanner()
    cmd = planner.plan(alert("warning"), policy())
    assert cmd is not None
    other = alert(status="resolved", kind="prompt_inflation", alert_id="e5" * 8, at=T0 + 300)
    assert planner.plan(other, policy()) is None
    done = alert(status="resolved", at=T0 + 600)
    release = planner.plan(done, policy())
    assert release is not None and release.action == "release" and release.version == 2
    assert release.params == {} and release.issued_at == T0 + 600
    assert done.action == {"type": "throttle", "command_id": release.command_id,
                           "throttle_action": "release"}  # fmt: skip
    assert planner.active(T0 + 601) == []


def test_an_expired_command_needs_no_release() -> None:
    planner = ThrottlePlanner()
    planner.plan(alert(), policy(max_duration_s=600.0))
    assert planner.plan(alert(status="resolved", at=T0 + 900), policy()) is None


def test_dry_run_marks_the_command_and_off_or_experiment_issue_nothing() -> None:
    a = alert()
    cmd = ThrottlePlanner().plan(a, policy(auto_throttle="dry_run"))
    assert cmd is not None and cmd.dry_run and a.action["type"] == "dry_run"
    for p in (policy(auto_throttle="off"), policy(tier="experiment")):
        b = alert("critical")
        assert ThrottlePlanner().plan(b, p) is None and b.action == {"type": "none"}


def test_a_dry_run_release_is_a_dry_run_too() -> None:
    planner = ThrottlePlanner()
    planner.plan(alert(), policy(auto_throttle="dry_run"))
    release = planner.plan(alert(status="resolved", at=T0 + 60), policy(auto_throttle="dry_run"))
    assert release is not None and release.dry_run


def test_the_default_ladder_limits_to_the_baseline_rate() -> None:
    p = policy(ladder=DEFAULT_LADDER)
    cmd = ThrottlePlanner().plan(alert("critical"), p, Baseline(41.5, 52_000.2))
    assert cmd is not None and cmd.action == "limit_rate"
    assert cmd.params == {"requests_per_minute": 42, "tokens_per_minute": 52001}
    # Nothing learned yet: no number is defensible, so no command.
    assert ThrottlePlanner().plan(alert("critical"), p, None) is None
    assert ThrottlePlanner().plan(alert("critical"), p, Baseline(0.0, 0.0)) is None


def test_versions_grow_by_one_per_scope_and_commands_are_deterministic() -> None:
    def run() -> list[Any]:
        planner = ThrottlePlanner()
        p = policy(cooldown_s=0.0)
        out = []
        for i, (sev, status) in enumerate(
            [("warning", "firing"), ("critical", "escalated"), ("critical", "resolved")] * 3
        ):
            cmd = planner.plan(alert(sev, status, at=T0 + 60 * i, alert_id=f"{i // 3:016x}"), p)
            if cmd is not None:
                out.append(cmd)
        return out

    first, second = run(), run()
    assert [c.version for c in first] == list(range(1, len(first) + 1)) and len(first) == 9
    assert first == second
    assert [c.command_id for c in first] == [c.command_id for c in second]
    assert len({c.command_id for c in first}) == len(first)


def control(action: str, **changes: Any) -> ControlAction:
    doc: dict[str, Any] = {
        "action": action,
        "alert_id": "a1" * 8,
        "use_case": "support_chat",
        "kind": "cost_spike",
        "scope_key": None,
        "until": None,
        "user": "U1",
        "at": format_ts(T0 + 120),
    }
    return ControlAction.parse({**doc, **changes})


def test_an_operator_release_issues_a_release_and_the_cooldown_then_holds() -> None:
    planner = ThrottlePlanner()
    cmd = planner.plan(alert(), policy())
    assert cmd is not None
    (release,) = planner.apply_control(control("release"), policy())
    assert release.action == "release" and release.version == 2 and release.issued_at == T0 + 120
    assert release.reason.summary == "released by U1"
    assert planner.active(T0 + 121) == []
    # Released twice: nothing more to release.
    assert planner.apply_control(control("release"), policy()) == []
    # The incident escalates within the cooldown: no new throttle yet.
    assert planner.plan(alert("critical", "escalated", at=T0 + 300), policy()) is None


def test_a_release_published_by_the_cli_moves_the_version_on() -> None:
    planner = ThrottlePlanner()
    planner.plan(alert(), policy())
    assert planner.apply_control(control("release", version=5), policy()) == []
    assert planner.version("support_chat") == 5 and planner.active(T0 + 121) == []
    cmd = planner.plan(alert("critical", "escalated", at=T0 + 3000), policy())
    assert cmd is not None and cmd.version == 6


def test_snooze_mutes_throttling_until_it_ends_and_ack_is_recorded() -> None:
    planner = ThrottlePlanner()
    until = format_ts(T0 + 3600)
    assert planner.apply_control(control("snooze", until=until), policy()) == []
    assert planner.snoozed("support_chat", "cost_spike", T0 + 60)
    assert not planner.snoozed("support_chat", "prompt_inflation", T0 + 60)
    assert planner.plan(alert(at=T0 + 60), policy()) is None
    assert not planner.snoozed("support_chat", "cost_spike", T0 + 3600)
    assert planner.plan(alert(at=T0 + 3600), policy()) is not None
    planner.apply_control(control("ack"), policy())
    assert planner.acks["a1" * 8] == {"user": "U1", "at": T0 + 120}


def test_bad_control_messages_are_rejected_with_a_reason() -> None:
    with pytest.raises(ControlError, match="not JSON"):
        ControlAction.parse(b"{nope")
    with pytest.raises(ControlError, match=r"\$\.user"):
        ControlAction.parse({**control("ack").to_dict(), "user": ""})
    with pytest.raises(ControlError, match="needs until"):
        ControlAction.parse(control("ack").to_dict() | {"action": "snooze"})
    with pytest.raises(ControlError, match=r"\$\.scope_key"):
        control("release", scope_key="a/b")
    # Built past parse (an embedding caller): the planner refuses it too.
    bad = dataclasses.replace(control("release"), scope_key="a/b")
    with pytest.raises(ControlError, match="scope key"):
        ThrottlePlanner().apply_control(bad, policy())


def test_versions_seen_on_the_topic_keep_new_commands_newer() -> None:
    planner = ThrottlePlanner()
    planner.observe_version("support_chat", 41)
    cmd = planner.plan(alert(), policy())
    assert cmd is not None and cmd.version == 42


# -- the engine runs the planner -----------------------------------------------

POLICY = """
[use_cases.support_chat]
auto_throttle = "on"
cooldown_s = 0
max_duration_s = 3600
[[use_cases.support_chat.ladder]]
at = "warning"
action = "limit_rate"
requests_per_minute = 600
[[use_cases.support_chat.ladder]]
at = "critical"
action = "block"
"""


def spike_events(seed: int = 1) -> list[UsageEvent]:
    """Steady traffic, a 10x burst at minutes 100-114, then normal again."""
    rng = random.Random(seed)
    out = []
    for m in range(150):
        k = 10 if 100 <= m < 115 else 1
        for i in range(20 * k):
            out.append(
                UsageEvent(
                    event_id=f"e{m}-{i}",
                    ts=T0 + m * 60 + rng.uniform(0, 59),
                    use_case="support_chat",
                    model="gpt-4o-mini",
                    input_tokens=rng.randint(500, 1500),
                    output_tokens=200,
                    cost_usd=0.001 * rng.uniform(0.8, 1.2),
                )
            )
    return sorted(out, key=lambda e: e.ts)


def run_engine(events: list[UsageEvent]) -> tuple[list[Alert], list[Any]]:
    engine = Engine(PolicySet.from_toml_text(POLICY))
    out = engine.process(events)
    out.extend(engine.flush())
    return out.alerts, out.commands


def test_the_engine_throttles_an_incident_and_releases_it_deterministically() -> None:
    alerts, commands = run_engine(spike_events())
    assert [c.action for c in commands] == ["limit_rate", "block", "release"]
    assert [c.version for c in commands] == [1, 2, 3]
    by_id = {c.command_id: c for c in commands}
    for a in alerts:
        assert a.action.get("command_id") in by_id
        assert by_id[a.action["command_id"]].issued_at == a.detected_at
        assert validate("alert", a.to_dict()) == []
    keys = ThrottleKeys.of("k")
    for c in commands:
        assert validate("throttle-command", c.to_dict(keys)) == []
        assert validate("throttle-command", c.to_dict()) == []  # unsigned, for replay
    # Shuffled within the lateness: the same commands, byte for byte.
    events = spike_events()
    rng = random.Random(7)
    events.sort(key=lambda e: e.ts + rng.uniform(-40, 40))
    assert run_engine(events)[1] == commands


def test_engine_apply_control_releases_and_rejects_bad_input() -> None:
    engine = Engine(PolicySet.from_toml_text(POLICY))
    events = [e for e in spike_events() if e.ts < T0 + 110 * 60]
    engine.process(events)
    out = engine.advance()
    assert [c.action for c in out.commands] == ["limit_rate", "block"]
    message = control("release", at=format_ts(T0 + 108 * 60)).to_dict()
    released = engine.apply_control(message)
    assert [c.action for c in released.commands] == ["release"]
    assert released.commands[0].version == 3
    with pytest.raises(ControlError):
        engine.apply_control(b"[]")


def test_a_snoozed_kind_raises_no_alert_and_no_command() -> None:
    engine = Engine(PolicySet.from_toml_text(POLICY))
    engine.apply_control(control("snooze", at=format_ts(T0), until=format_ts(T0 + 6 * 3600)))
    out = engine.process(spike_events())
    out.extend(engine.flush())
    assert [a for a in out.alerts if a.status != "resolved"] == []
    assert out.commands == []
