"""budget_threshold through the engine: one alert per threshold and period, re-armed."""

from __future__ import annotations

import pytest
from _snapshots import restart

from spendsentry.contracts import validator
from spendsentry.engine import Engine
from spendsentry.events import UsageEvent
from spendsentry.policy import PolicySet

T0 = 1_793_577_600.0  # 2026-11-02T00:00:00Z (a Monday)
KIND = "budget_threshold"

DESK = """
[use_cases.desk.budgets]
cost_per_day_usd = 100.0
"""


def spend(minutes: range, per_minute: float, use_case: str = "desk") -> list[UsageEvent]:
    """One call a minute reporting ``per_minute`` dollars, in the middle of each minute."""
    return [
        UsageEvent(
            event_id=f"{use_case}-{m}",
            ts=T0 + 60.0 * m + 30.0,
            use_case=use_case,
            model="gpt-4o-mini",
            input_tokens=100,
            output_tokens=10,
            cost_usd=per_minute,
        )
        for m in minutes
    ]


def run(events, policy: str = DESK, engine: Engine | None = None, flush: bool = True):
    engine = engine or Engine(PolicySet.from_toml_text(policy))
    out = engine.process(events)
    out.extend(engine.advance())
    if flush:
        out.extend(engine.flush())
    return engine, [a for a in out.alerts if a.kind == KIND]


def minute_of(alert) -> int:
    return round((alert.detected_at - T0) / 60.0)


def test_a_day_crossing_50_80_100_gives_one_alert_each_then_rearms_next_day():
    # $0.10 a minute: $50 at minute 500, $80 at 800, $100 at 1000, each day.
    _, alerts = run(spend(range(2 * 1440), 0.1))
    seen = [
        (minute_of(a), a.status, a.severity, a.evidence["details"]["threshold"]) for a in alerts
    ]
    assert seen == [
        (500, "firing", "info", 0.5),
        (800, "escalated", "warning", 0.8),
        (1000, "escalated", "critical", 1.0),
        (1441, "resolved", "critical", 1.0),
        (1440 + 500, "firing", "info", 0.5),
        (1440 + 800, "escalated", "warning", 0.8),
        (1440 + 1000, "escalated", "critical", 1.0),
    ]
    day1, day2 = alerts[:4], alerts[4:]
    # One page per period that escalates: one alert id and one incident a day.
    assert len({a.alert_id for a in day1}) == 1 and len({a.alert_id for a in day2}) == 1
    assert day1[0].alert_id != day2[0].alert_id
    assert len({a.incident_id for a in day1}) == 1 and day1[0].incident_id != day2[0].incident_id
    assert {(a.root_cause, a.role) for a in alerts} == {(KIND, "cause")}
    assert len({a.dedupe_key for a in alerts}) == len(alerts)
    assert day1[-1].resolved_at == T0 + 86400.0
    for a in alerts:
        validator("alert").validate(a.to_dict())
        assert a.action == {"type": "none"}  # warns; budget_burn throttles


def test_the_alert_says_threshold_period_spend_and_when_it_runs_out():
    _, alerts = run(spend(range(1000), 0.1))
    first = alerts[0]
    d = first.evidence["details"]
    assert (d["period"], d["threshold"], d["spent_usd"], d["budget_usd"]) == (
        "day",
        0.5,
        50.0,
        100.0,
    )
    assert d["resets_at"] == "2026-11-03T00:00:00.000Z"
    # $50 left at $0.10 a minute: 500 minutes after 08:20, 16:40 the same day.
    assert d["exhausted_at"] == "2026-11-02T16:40:00.000Z"
    assert "past 50% of its $100.00/day budget" in first.summary
    assert "runs out at 16:40 UTC" in first.summary
    critical = alerts[-1]
    assert critical.severity == "critical" and critical.evidence["details"]["exhausted_at"] is None


def test_a_projection_past_the_reset_says_the_budget_holds_this_period():
    # Quiet until 22:00, then $0.50 a minute: 50% at 23:40, 20 minutes before the reset.
    _, alerts = run(spend(range(1320, 1440), 0.5))
    assert [(minute_of(a), a.status) for a in alerts] == [(1420, "firing")]
    d = alerts[0].evidence["details"]
    assert d["exhausted_at"] is None
    assert d["projected_usd"] == pytest.approx(60.0)
    assert "the budget holds this day" in alerts[0].summary
    assert "runs out" not in alerts[0].summary


def test_a_snapshot_mid_period_does_not_fire_again():
    events = spend(range(2 * 1440), 0.1)
    _, whole = run(events)
    engine, first = run(events[:600], flush=False)  # 50% fired at minute 500
    assert [a.status for a in first] == ["firing"]
    _, rest = run(events[600:], engine=restart(engine))
    assert [a.to_dict() for a in first + rest] == [a.to_dict() for a in whole]


def test_a_jump_over_several_thresholds_says_the_highest_once():
    events = spend(range(10), 1.0) + spend(range(10, 11), 120.0)
    _, alerts = run(events)
    assert [(a.status, a.severity, a.evidence["details"]["threshold"]) for a in alerts] == [
        ("firing", "critical", 1.0)
    ]


def test_thresholds_from_the_policy_and_each_budget_period_on_its_own():
    policy = """
[use_cases.desk.budgets]
cost_per_hour_usd = 40.0
cost_per_day_usd = 100.0
thresholds = [0.25, 0.5]
"""
    # $0.10 a minute: the hour never reaches $10; the day reaches $25 at minute 250.
    _, alerts = run(spend(range(600), 0.1), policy)
    assert [(minute_of(a), a.status, a.evidence["details"]["threshold"]) for a in alerts] == [
        (250, "firing", 0.25),
        (500, "escalated", 0.5),
    ]
    assert {a.severity for a in alerts} == {"info"}
    # $0.50 a minute: every hour crosses 25% and 50% of $40 (re-armed each hour),
    # while the day crosses its own: each period is its own alert. Two crossings
    # in one minute (minute 100) are said one a minute, the hour's first.
    _, hourly = run(spend(range(120), 0.5), policy)
    hour = [(minute_of(a), a.status, a.evidence["details"]["period"]) for a in hourly]
    assert hour == [
        (20, "firing", "hour"),
        (40, "escalated", "hour"),
        (50, "firing", "day"),
        (61, "resolved", "hour"),
        (80, "firing", "hour"),
        (100, "escalated", "hour"),
        (101, "escalated", "day"),
    ]
    assert len({a.alert_id for a in hourly}) == 3  # two hours and a day


def test_no_budget_no_monitor():
    _, alerts = run(spend(range(100), 5.0), "[use_cases.desk]\nowner = 'x'\n")
    assert alerts == []
