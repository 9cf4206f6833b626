"""Slack messages of one incident: the parent (root cause, symptoms, drivers) and a joining symptom.

An incident's alerts share ``incident_id`` (see :mod:`spendsentry.incidents`);
the parent shows the root cause's latest alert, what drives the spend and a
line per kind of the incident; it is updated as kinds join, escalate and
resolve, and each change is a reply in its thread.

>>> spike = {"alert_id": "a1", "incident_id": "inc-1", "kind": "cost_spike", "use_case": "u",
...          "severity": "warning", "status": "firing", "summary": "spend x4",
...          "root_cause": "agent_chatter", "role": "symptom",
...          "started_at": "2026-11-02T09:00:00Z", "detected_at": "2026-11-02T09:04:00Z"}
>>> loop = dict(spike, alert_id="a2", kind="agent_chatter", role="cause", summary="loop",
...             drivers=[{"dimension": "session", "value": "s1", "share": 0.9,
...                       "excess_cost_per_hour_usd": 3.0}])
>>> msg = render_incident({"a1": spike, "a2": loop})
>>> msg.blocks[0]["text"]["text"]
':large_orange_circle: WARNING · agent_chatter · u (incident: 2 kinds)'
>>> [b["text"]["text"].splitlines()[0] for b in msg.blocks if "text" in b][-2:]
['*What drives it*', '*In this incident*']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spendsentry.slack.blocks import SlackMessage, escape, render_alert

__all__ = ["incident_key", "render_incident", "render_joined"]


def incident_key(alert: Mapping[str, Any]) -> str:
    """What an alert's Slack thread is keyed by: its incident (else, as before, its alert).

    >>> incident_key({"alert_id": "ab", "incident_id": "inc-1"}), incident_key({"alert_id": "ab"})
    ('inc-1', 'ab')
    """
    key = alert.get("incident_id")
    return key if isinstance(key, str) and key else str(alert.get("alert_id"))


def _cause(members: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Any]:
    """The root cause's latest alert (the latest alert names the cause)."""
    latest = list(members.values())[-1]
    cause = latest.get("root_cause")
    for alert in reversed(list(members.values())):
        if alert.get("kind") == cause:
            return alert
    return latest


def render_incident(members: Mapping[str, Mapping[str, Any]]) -> SlackMessage:
    """The parent message of an incident from its alerts (alert_id -> latest message)."""
    cause = _cause(members)
    kinds = {str(a.get("kind")) for a in members.values()}
    base = render_alert(cause)
    blocks = list(base.blocks)
    if len(kinds) > 1:
        header = dict(blocks[0])
        text = f"{header['text']['text']} (incident: {len(kinds)} kinds)"
        header["text"] = {**header["text"], "text": text[:150]}
        blocks[0] = header
    drivers = cause.get("drivers")
    extra: list[dict[str, Any]] = []
    if isinstance(drivers, list) and drivers:
        lines = [
            f"• {escape(d.get('dimension'), 40)} `{escape(d.get('value'), 120)}`: "
            f"{round(float(d.get('share', 0)) * 100)}% of the excess"
            for d in drivers[:5]
            if isinstance(d, Mapping)
        ]
        extra.append(_section("*What drives it*\n" + "\n".join(lines)))
    if len(kinds) > 1:
        lines = []
        for alert in members.values():
            role = "root cause" if alert.get("kind") == cause.get("kind") else "symptom"
            lines.append(
                f"• `{escape(alert.get('kind'), 40)}` ({role}, {escape(alert.get('status'), 20)},"
                f" {escape(alert.get('severity'), 20)}): {escape(alert.get('summary'), 300)}"
            )
        extra.append(_section("*In this incident*\n" + "\n".join(lines)[:2900]))
    # Before the context line and the buttons, which stay last.
    tail = [b for b in blocks if b.get("type") in ("context", "actions")]
    head = [b for b in blocks if b.get("type") not in ("context", "actions")]
    return SlackMessage(base.text, head + extra + tail)


def render_joined(alert: Mapping[str, Any]) -> SlackMessage:
    """The thread reply when a kind joins an incident.

    >>> render_joined({"kind": "cost_spike", "role": "symptom", "root_cause": "agent_chatter",
    ...                "summary": "spend x4", "severity": "warning"}).text
    'cost_spike joins as a symptom of agent_chatter: spend x4'
    """
    kind, cause = escape(alert.get("kind"), 40), escape(alert.get("root_cause"), 40)
    if alert.get("role") == "cause":
        text = f"{kind} joins and is named the root cause: {escape(alert.get('summary'), 2000)}"
    else:
        text = f"{kind} joins as a symptom of {cause}: {escape(alert.get('summary'), 2000)}"
    return SlackMessage(text, [_section(text)])


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}
