"""new_model through the engine, and new models and unowned use cases on the status page."""

from __future__ import annotations

from datetime import datetime

from test_unowned_spend import HOUR, T0, _calls, _run

from spendsentry.engine import Engine
from spendsentry.policy import PolicySet
from spendsentry.worker.status_page import StatusBoard, build_snapshot, render

_POLICY = '[use_cases.support_chat]\nowner = "#care"\n'


def _policies() -> PolicySet:
    return PolicySet.from_toml_text(_POLICY, auto_throttle="off")


def _firing(alerts: list[dict]) -> list[dict]:
    return [a for a in alerts if a["kind"] == "new_model" and a["status"] == "firing"]


def test_a_dearer_model_adopted_after_warm_up_is_an_info_alert_with_the_monthly_cost() -> None:
    usual = _calls("support_chat", T0, T0 + 5 * HOUR, 2.0, "gpt-4o-mini", 1500, 1)
    trial = _calls("support_chat", T0 + 4 * HOUR, T0 + 5 * HOUR, 20.0, "gpt-4.1", 3000, 2)
    for i, e in enumerate(trial):
        e.event_id = f"trial-{i}"
    [alert] = _firing(_run(_policies(), usual + trial))
    assert alert["severity"] == "info"
    assert alert["evidence"]["example_model"] == "gpt-4.1"
    assert "a month more" in alert["summary"]
    monthly = alert["evidence"]["observed"]
    # 3 calls a minute at ~$0.008 a call more than gpt-4o-mini's: hundreds a month.
    assert 200 < monthly < 3_000, monthly


def test_models_of_the_warm_up_and_a_stray_call_are_not_new() -> None:
    usual = _calls("support_chat", T0, T0 + 5 * HOUR, 2.0, "gpt-4o-mini", 1500, 1)
    # Two models from the start (learned), and one lone call to a third later.
    other = _calls("support_chat", T0, T0 + 5 * HOUR, 30.0, "gpt-4o", 1500, 3)
    stray = _calls("support_chat", T0 + 4 * HOUR, T0 + 4 * HOUR + 60, 100.0, "o3", 3000, 4)
    for i, e in enumerate(other + stray):
        e.event_id = f"x-{i}"
    assert stray
    assert not _firing(_run(_policies(), usual + other + stray))


def test_the_status_page_shows_new_models_and_use_cases_without_a_policy() -> None:
    usual = _calls("support_chat", T0, T0 + 5 * HOUR, 2.0, "gpt-4o-mini", 1500, 1)
    trial = _calls("support_chat", T0 + 4 * HOUR, T0 + 5 * HOUR, 20.0, "gpt-4.1", 3000, 2)
    shadow = _calls("shadow-ai-pilot", T0 + 4 * HOUR, T0 + 5 * HOUR, 1.0, "gpt-4o", 9000, 3)
    for i, e in enumerate(trial + shadow):
        e.event_id = f"y-{i}"
    engine = Engine(_policies())
    engine.process(sorted(usual + trial + shadow, key=lambda e: e.ts))
    engine.flush()
    snapshot = build_snapshot(engine, StatusBoard(), now=T0 + 5 * HOUR)
    rows = {r["name"]: r for r in snapshot["use_cases"]}
    assert rows["support_chat"]["named"] and not rows["shadow-ai-pilot"]["named"]
    [new] = rows["support_chat"]["new_models"]
    assert new["model"] == "gpt-4.1" and new["monthly_usd"] > 100
    page = render(snapshot)
    assert "new model gpt-4.1 since 2026-11-02 04:" in page
    assert "no policy" in page


def test_a_trial_adopted_at_once_is_reported_within_five_minutes() -> None:
    # Three calls a minute from 4:00: the adoption bar (5 calls over 3 minutes)
    # is met long before the 10-minute watch ends; the first look, at 5 minutes,
    # reports it, with the pace measured over those 5 minutes.
    usual = _calls("support_chat", T0, T0 + 5 * HOUR, 2.0, "gpt-4o-mini", 1500, 1)
    trial = _calls("support_chat", T0 + 4 * HOUR, T0 + 5 * HOUR, 20.0, "gpt-4.1", 3000, 2)
    for i, e in enumerate(trial):
        e.event_id = f"trial-{i}"
    [alert] = _firing(_run(_policies(), usual + trial))
    detected = datetime.fromisoformat(alert["detected_at"].replace("Z", "+00:00")).timestamp()
    first_minute = trial[0].ts // 60 * 60
    assert detected - first_minute <= 5 * 60, detected - first_minute
    assert "in 5 minutes" in alert["summary"]


def test_a_trial_too_sparse_for_the_first_look_is_reported_once_it_meets_the_bar() -> None:
    # One call every 90 s: fewer than 5 calls in the first 5 minutes, 8 in 10;
    # reported in the minute of its fifth call, within the 10-minute watch.
    usual = _calls("support_chat", T0, T0 + 5 * HOUR, 2.0, "gpt-4o-mini", 1500, 1)
    trial = _calls("support_chat", T0 + 4 * HOUR, T0 + 4 * HOUR + 660, 90.0, "gpt-4.1", 30000, 3)
    for i, e in enumerate(trial):
        e.event_id = f"trial-{i}"
    first_minute = trial[0].ts // 60 * 60
    early = [e for e in trial if e.ts < first_minute + 5 * 60]
    assert len(early) < 5 <= len(trial), (len(early), len(trial))
    fifth = trial[4].ts // 60 * 60
    [alert] = _firing(_run(_policies(), usual + trial))
    detected = datetime.fromisoformat(alert["detected_at"].replace("Z", "+00:00")).timestamp()
    assert detected == fifth + 60, (detected, fifth)
    assert f"5 calls in {int(fifth - first_minute) // 60 + 1} minutes" in alert["summary"]
