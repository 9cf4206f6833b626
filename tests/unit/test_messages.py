"""The message vocabulary: one owner per concept, old import paths and old pickles still work."""

from __future__ import annotations

import pickle

import pytest

from spendsentry import messages
from spendsentry.actions import commands, control
from spendsentry.actions.commands import CommandReason, ThrottleCommand
from spendsentry.alerts import Alert
from spendsentry.messages import (
    ALERT_STATUSES,
    DEFAULT_TOPICS,
    SEVERITIES,
    AlertView,
    ControlAction,
    Scope,
    dedupe_key,
    dedupe_key_of,
    scope_keys_of_call,
    severity_rank,
)
from spendsentry.policy import Policy
from spendsentry.slack.interactions import control_message
from spendsentry.slack.notifier import STATUSES, alert_key
from spendsentry.worker.topics import TopicsConfig

T0 = 1793610000.0


def test_one_owner_per_concept() -> None:
    """The old homes hand out the vocabulary's objects, not copies."""
    assert commands.Scope is Scope and control.ControlAction is ControlAction
    assert commands.scope_keys_of_call is scope_keys_of_call
    from spendsentry import alerts, contracts

    assert alerts.SEVERITIES is SEVERITIES is contracts.SEVERITIES
    assert alerts.severity_rank is severity_rank
    assert STATUSES is ALERT_STATUSES
    from spendsentry.client import ThrottleGuard, ThrottleKeys, UsageReporter  # public API

    assert ThrottleGuard and ThrottleKeys and UsageReporter


def test_severity_order_is_the_policy_ladder_order() -> None:
    assert sorted(reversed(SEVERITIES), key=severity_rank) == list(SEVERITIES)
    with pytest.raises(KeyError):
        severity_rank("page")
    assert Policy("u", tier="experiment").max_severity == SEVERITIES[0]


def test_dedupe_key_is_the_same_from_the_alert_and_from_its_message() -> None:
    alert = Alert("ab" * 12, "cost_spike", "u", "critical", "escalated", T0, T0 - 120,
                  "cost x9", {}, 1.0, incident_seq=3)  # fmt: skip
    doc = alert.to_dict()
    assert alert.dedupe_key == dedupe_key_of(doc) == alert_key(doc)
    assert alert.dedupe_key == f"{'ab' * 12}:escalated:critical:3"
    assert dedupe_key_of({}) == "None:None:None:None"  # a foreign record still gets a key
    assert dedupe_key("a", "firing", "info", 1) == "a:firing:info:1"


def test_alert_view_reads_what_the_engine_writes() -> None:
    alert = Alert("ab" * 12, "cost_spike", "u", "warning", "firing", T0, T0 - 120,
                  "cost x4", {}, 1.0)  # fmt: skip
    view = AlertView.from_dict(alert.to_dict())
    assert view == AlertView("ab" * 12, "cost_spike", "u", "warning", "firing", T0, T0 - 120)
    for bad in ([], {**alert.to_dict(), "kind": None}, {**alert.to_dict(), "started_at": "x"}):
        with pytest.raises(ValueError):
            AlertView.from_dict(bad)


def test_scope_keys_are_byte_for_byte_unchanged() -> None:
    assert Scope("support_chat").key == "support_chat"
    assert Scope("a/b=c%", "m/1", "x=y").key == "a%2Fb%3Dc%25/model=m%2F1/agent=x%3Dy"
    assert scope_keys_of_call("u", "m", "a") == ["u", "u/model=m", "u/agent=a", "u/model=m/agent=a"]


def test_a_pickle_naming_the_old_scope_module_still_loads() -> None:
    """Snapshots written before the move name ``spendsentry.actions.commands.Scope``."""
    reason = CommandReason(None, None, "x")
    command = ThrottleCommand.build(
        Scope("u", "m"), "block", {}, version=1, issued_at=T0, expires_at=T0 + 60, reason=reason
    )
    new = pickle.dumps(command, protocol=2)  # protocol 2 names classes as "module\nname"
    assert b"spendsentry.messages.scope\nScope" in new
    old = new.replace(b"spendsentry.messages.scope\nScope", b"spendsentry.actions.commands\nScope")
    assert pickle.loads(old) == command


def test_both_control_message_builders_agree_with_the_parser() -> None:
    value = {"alert_id": "ab12", "use_case": "u/x", "kind": "cost_spike", "scope_key": None}
    doc = control_message("snooze", value, "U1", now=T0)
    assert doc == {"action": "snooze", "alert_id": "ab12", "use_case": "u/x",
                   "kind": "cost_spike", "scope_key": None, "until": "2026-11-02T10:00:00.000Z",
                   "user": "U1", "at": "2026-11-02T09:00:00.000Z"}  # fmt: skip
    assert ControlAction.parse(doc).to_dict() == doc
    release = ControlAction("release", None, "u", None, "u", None, "cli", T0, version=4)
    assert ControlAction.parse(release.to_dict()) == release


def test_default_topics_are_the_worker_defaults() -> None:
    topics = TopicsConfig.defaults()
    assert {name: getattr(topics, name).name for name in DEFAULT_TOPICS} == dict(DEFAULT_TOPICS)
    assert messages.USAGE_TOPIC == "ai.usage" and messages.THROTTLE_TOPIC == "ai.throttle"
