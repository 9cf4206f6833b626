"""Block Kit rendering of alerts: content an on-call can act on, within Slack's limits."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spendsentry.alerts import ALERT_KINDS, Alert
from spendsentry.contracts import validate
from spendsentry.slack.blocks import (
    ACTION_IDS,
    CHECKLISTS,
    button_value,
    render_alert,
    render_update,
)


def _alert(**over: Any) -> dict[str, Any]:
    doc = Alert(
        alert_id="63412823acbdd60e66b2b4c7",
        kind="cost_spike",
        use_case="support_chat",
        severity="warning",
        status="firing",
        detected_at=1793610240.0,
        started_at=1793610000.0,
        summary="cost per minute 4.0x the usual level",
        evidence={
            "metric": "cost_per_min",
            "baseline": 0.05,
            "observed": 0.2,
            "window_s": 300,
            "score": 6.5,
            "unit": "usd",
            "example_session": "t-81",
        },
        excess_cost_per_hour_usd=9.0,
        owner="#support-ai-oncall",
        tier="production",
    ).to_dict()
    doc.update(over)
    return doc


def _all_text(blocks: list[dict[str, Any]]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


def _mrkdwn(node: Any) -> list[str]:
    """Every mrkdwn text in the blocks (what Slack parses for mentions and links)."""
    if isinstance(node, list):
        return [t for item in node for t in _mrkdwn(item)]
    if not isinstance(node, dict):
        return []
    own = [node["text"]] if node.get("type") == "mrkdwn" else []
    return own + [t for k, v in node.items() if k != "value" for t in _mrkdwn(v)]


def _buttons(blocks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    actions = [b for b in blocks if b["type"] == "actions"]
    return {e["action_id"]: e for a in actions for e in a["elements"]}


def test_the_sample_alert_is_valid_and_renders_what_why_cost_action_and_checklist() -> None:
    alert = _alert(action={"type": "throttle", "command_id": "c1", "throttle_action": "limit_rate"})
    assert validate("alert", alert) == []
    msg = render_alert(alert)
    header = msg.blocks[0]
    assert header["type"] == "header"
    assert header["text"]["text"] == ":large_orange_circle: WARNING · cost_spike · support_chat"
    fields = [f["text"] for f in msg.blocks[2]["fields"]]
    assert fields[:4] == [
        "*Baseline*\n$0.05",
        "*Now*\n$0.20 (4.0x)",
        "*Excess cost*\n$9.00/h",
        "*Projected*\n$6,570/month",
    ]
    assert "Throttled: `limit_rate`" in fields[4]
    assert "#support-ai-oncall" in fields[5]
    text = _all_text(msg.blocks)
    assert "*Check first*" in text
    assert CHECKLISTS["cost_spike"][0] in text
    assert "session `t-81`" in text and "alert `63412823acbdd60e66b2b4c7`" in text
    assert msg.text.startswith("[WARNING] cost_spike on support_chat: cost per minute")
    assert "$9.00/h excess" in msg.text


@pytest.mark.parametrize("kind", ALERT_KINDS)
def test_every_kind_has_its_own_checklist(kind: str) -> None:
    msg = render_alert(_alert(kind=kind))
    assert CHECKLISTS[kind][0] in _all_text(msg.blocks)


def test_buttons_carry_what_the_control_action_needs_and_release_only_with_a_throttle() -> None:
    none = _buttons(render_alert(_alert()).blocks)
    assert set(none) == {
        "spendsentry_ack",
        "spendsentry_snooze",
        "spendsentry_expected_change",
        "spendsentry_false_alarm",
    }
    # Feedback buttons carry the same value: the control action names the kind it teaches.
    assert none["spendsentry_false_alarm"]["value"] == none["spendsentry_ack"]["value"]
    dry = _buttons(render_alert(_alert(action={"type": "dry_run"})).blocks)
    assert set(dry) == set(ACTION_IDS)
    assert "confirm" in dry["spendsentry_release"]  # releasing costs money: confirm first
    value = json.loads(dry["spendsentry_ack"]["value"])
    assert value == {
        "alert_id": "63412823acbdd60e66b2b4c7",
        "use_case": "support_chat",
        "kind": "cost_spike",
        "scope_key": None,
    }
    assert (
        json.loads(button_value(_alert(action={"type": "throttle", "scope_key": "s/m=x"})))[
            "scope_key"
        ]
        == "s/m=x"
    )


def test_action_taken_is_spelled_out_for_each_action_type() -> None:
    def action_field(action: dict[str, Any]) -> str:
        fields = render_alert(_alert(action=action)).blocks[2]["fields"]
        return next(f["text"] for f in fields if f["text"].startswith("*Action taken*"))

    assert "None (alert only)" in action_field({"type": "none"})
    assert "Dry run: `route_model`" in action_field(
        {"type": "dry_run", "throttle_action": "route_model"}
    )
    assert "Throttled: `block`" in action_field({"type": "throttle", "throttle_action": "block"})


def test_resolved_message_has_no_buttons_no_checklist_and_says_how_long() -> None:
    alert = _alert(
        status="resolved",
        resolved_at="2026-11-02T10:12:00.000Z",
        summary="Resolved: cost per minute 4.0x the usual level",
        incident_seq=2,
    )
    msg = render_alert(alert)
    assert msg.blocks[0]["text"]["text"].startswith(":white_check_mark: RESOLVED · cost_spike")
    assert not _buttons(msg.blocks)
    text = _all_text(msg.blocks)
    assert "Check first" not in text
    assert "after 1 h 12 min" in text
    assert msg.text.startswith("[RESOLVED]")


def test_thread_replies_for_escalation_and_resolution() -> None:
    up = render_update(_alert(status="escalated", severity="critical", incident_seq=2))
    head = up.blocks[0]["text"]["text"]
    assert head.startswith(":red_circle: Escalated to *critical* at 2026-11-02 09:04 UTC")
    assert "*Now*\n$0.20 (4.0x)" in _mrkdwn(up.blocks)
    done = render_update(_alert(status="resolved", resolved_at="2026-11-02T09:30:00Z"))
    assert done.blocks[0]["text"]["text"].startswith(":white_check_mark: Resolved at ")
    assert "after 30 min" in done.blocks[0]["text"]["text"]


def test_text_from_events_cannot_ping_a_channel_or_break_formatting() -> None:
    msg = render_alert(
        _alert(
            use_case="x<!channel>",
            summary="a <@U1> & <https://evil|click>",
            action={"type": "dry_run"},  # the release confirmation names the use case
        )
    )
    # The header is plain_text and button values are data: Slack parses neither.
    text = json.dumps(_mrkdwn(msg.blocks), ensure_ascii=False)
    assert "<!channel>" not in text and "<@U1>" not in text and "<https://" not in text
    assert "&lt;!channel&gt;" in text
    assert "<!channel>" not in msg.text


_json = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
_keys = st.sampled_from(
    [
        "alert_id",
        "kind",
        "use_case",
        "severity",
        "status",
        "summary",
        "evidence",
        "impact",
        "action",
        "owner",
        "started_at",
        "detected_at",
        "resolved_at",
    ]
)


def _within_limits(blocks: list[dict[str, Any]]) -> None:
    assert 0 < len(blocks) <= 50
    for block in blocks:
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= 150
        if "text" in block and block["type"] == "section":
            assert len(block["text"]["text"]) <= 3000
        for field in block.get("fields", []):
            assert len(field["text"]) <= 2000
        assert len(block.get("fields", [])) <= 10
        for element in block.get("elements", []):
            assert len(element.get("value", "")) <= 2000


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_keys, _json | st.text(min_size=0, max_size=4000)))
def test_any_alert_shaped_garbage_renders_within_slack_limits(doc: dict[str, Any]) -> None:
    for status in (None, "firing", "resolved"):
        if status:
            doc = {**doc, "status": status}
        _within_limits(render_alert(doc).blocks)
        _within_limits(render_update(doc).blocks)
        json.dumps(render_alert(doc).blocks)  # serialisable
