"""Alert dict -> Slack Block Kit message: what an on-call engineer reads first.

Pure functions, no I/O. The input is an alert as published on ``ai.alerts``
(``schemas/alert.json``); the renderer never trusts it: a missing or mistyped
field renders as "?" instead of raising, and every string from the alert is
escaped for Slack ``mrkdwn`` (a use case named ``<!channel>`` must not page a
whole channel) and cut to Slack's size limits.

A message answers, top to bottom: what (severity, kind, use case, status),
the evidence (baseline vs now), the cost (excess per hour, projected per
month), what spendsentry did (the alert's ``action``), what to check first
(a short per-kind checklist), and buttons: Acknowledge, Release throttle
(only when a throttle or dry-run command was issued), Snooze 1 h.

>>> alert = {
...     "alert_id": "63412823acbdd60e66b2b4c7", "kind": "prompt_inflation",
...     "use_case": "support_chat", "severity": "critical", "status": "firing",
...     "started_at": "2026-11-02T09:00:00.000Z", "detected_at": "2026-11-02T09:04:00.000Z",
...     "summary": "input tokens per call 3.2x baseline",
...     "evidence": {"metric": "input_tokens_per_call", "baseline": 1840, "observed": 5890,
...                  "window_s": 300, "score": 7.5, "unit": "tokens"},
...     "impact": {"excess_cost_per_hour_usd": 12.4, "projected_monthly_usd": 9052.0},
...     "action": {"type": "throttle", "throttle_action": "route_model"},
...     "incident_seq": 1,
... }
>>> msg = render_alert(alert)
>>> msg.text
'[CRITICAL] prompt_inflation on support_chat: input tokens per call 3.2x baseline ($12.40/h excess)'
>>> msg.blocks[0]["text"]["text"]
':red_circle: CRITICAL · prompt_inflation · support_chat'
>>> [f["text"] for f in msg.blocks[2]["fields"][:2]]
['*Baseline*\\n1,840 tokens', '*Now*\\n5,890 tokens (3.2x)']
>>> [e["action_id"] for e in msg.blocks[-1]["elements"]]  # doctest: +NORMALIZE_WHITESPACE
['spendsentry_ack', 'spendsentry_release', 'spendsentry_snooze',
 'spendsentry_expected_change', 'spendsentry_false_alarm']
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from spendsentry.evidence_text import readable

__all__ = [
    "ACTION_IDS",
    "CHECKLISTS",
    "SlackMessage",
    "button_value",
    "escape",
    "render_alert",
    "render_update",
]

#: Button action_id -> the control action it asks for (see interactions.py).
ACTION_IDS: dict[str, str] = {
    "spendsentry_ack": "ack",
    "spendsentry_release": "release",
    "spendsentry_snooze": "snooze",
    # Feedback that teaches the detector (applied by the engine at event time).
    "spendsentry_expected_change": "expected_change",
    "spendsentry_false_alarm": "false_alarm",
}

#: What to look at first, per alert kind: three lines an on-call can act on.
CHECKLISTS: dict[str, tuple[str, ...]] = {
    "prompt_inflation": (
        "Diff the prompt template / system prompt deployed around the start time",
        "Is chat history still truncated? Long sessions may carry the whole history",
        "Open the example session and compare its input tokens with a normal one",
    ),
    "agent_chatter": (
        "Open the example session: is the agent looping on the same tool call?",
        "Check the agent's stop condition and max-steps setting",
        "Look for a failing tool the agent keeps retrying",
    ),
    "fallback_drift": (
        "Check the primary model's provider status and error rate (429 / 5xx)",
        "Check recent changes to gateway routing or fallback rules",
        "Is the example model meant to be a fallback, not the default?",
    ),
    "retrieval_amplification": (
        "Check retriever top-k and query-rewrite settings deployed recently",
        "Look for retry loops around the vector store",
        "Open the example session: how many retrievals per question?",
    ),
    "cost_spike": (
        "Which caller drives the volume: a batch job, a new client, abuse?",
        "Any deploy or traffic change since the start time?",
        "More calls, or bigger calls? Compare request count with tokens per call",
    ),
    "budget_burn": (
        "Is the higher rate expected (launch, campaign)? Then raise the budget in the policy",
        "Otherwise find what drives it: request volume or tokens per call",
        "Throttle before the budget runs out if the rate is not wanted",
    ),
    "budget_threshold": (
        "Is this period's spend expected (launch, campaign, month end)? Then nothing to do",
        "If the projection says it runs out before the reset: who spends? (drivers, callers)",
        "Raise the budget in the policy, or throttle before it is spent",
    ),
    "cost_per_outcome": (
        "Are outcome events still arriving? A broken outcome feed looks like this",
        "Did the success rate drop (more calls per resolved item)?",
        "Check model and prompt changes since the start time",
    ),
    "embedding_duplication": (
        "Is a pipeline re-embedding unchanged content (content-hash cache missing)?",
        "Was a re-index job started around the start time?",
        "Find the source of the repeated content from the example session",
    ),
    "model_oversizing": (
        "Small requests are served by a large model: check the routing rules",
        "Try the smaller model on a sample; the saving is the projected amount",
        "Not urgent: this is a recommendation",
    ),
    "cache_regression": (
        "Did a deploy change the start of the prompt (a timestamp, request id or reordering)?",
        "Compare a recent prompt's first lines with one from before the start time",
        "Token counts look normal: the cost is in cache misses, not in bigger prompts",
    ),
    "shared_embedding_duplication": (
        "The use cases named in the evidence embedded the same content first",
        "Read their embeddings from one shared store instead of embedding again",
        "Not urgent: this is a recommendation; the saving is the projected amount",
    ),
    "unowned_spend": (
        "Ask the callers in the evidence (team, agent, service) who owns this use case",
        "Experiment, production or a mistake? Throttle or revoke a key if it is a mistake",
        "Write its policy (owner, budget, tier): docs/ownership.md shows how",
    ),
    "new_model": (
        "Was the switch meant? Check routing and model settings deployed at the start",
        "Compare the new model's answers and cost per call with the usual one",
        "Not urgent: the cost difference a month is at the pace of its first calls",
    ),
}
_DEFAULT_CHECKLIST = (
    "Open the example session in the evidence",
    "Check deploys and traffic changes since the start time",
)

_SEVERITY_ICON = {"critical": ":red_circle:", "warning": ":large_orange_circle:"}
_INFO_ICON = ":large_blue_circle:"
_RESOLVED_ICON = ":white_check_mark:"

# Slack's limits (https://api.slack.com/reference/block-kit/blocks).
_HEADER_MAX = 150
_SECTION_MAX = 3000
_FIELD_MAX = 2000
_BUTTON_VALUE_MAX = 2000
_TEXT_MAX = 3000  # the notification fallback; Slack truncates long ones anyway


@dataclass(frozen=True, slots=True)
class SlackMessage:
    """A message ready for ``chat.postMessage`` or an incoming webhook."""

    text: str
    blocks: list[dict[str, Any]]


def escape(text: object, limit: int = _SECTION_MAX) -> str:
    """Escape ``text`` for Slack mrkdwn and cut it to ``limit`` characters.

    >>> escape("<!channel> & co")
    '&lt;!channel&gt; &amp; co'
    >>> escape("x" * 10, limit=5)
    'xxxx…'
    """
    s = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _str(alert: Mapping[str, Any], key: str, default: str = "?") -> str:
    value = alert.get(key)
    return value if isinstance(value, str) and value else default


def _obj(alert: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = alert.get(key)
    return value if isinstance(value, Mapping) else {}


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _fmt(value: object, unit: object = None) -> str:
    """A number for humans, with its unit.

    >>> _fmt(1840.0, "tokens"), _fmt(0.0123, "usd"), _fmt(0.25), _fmt("x")
    ('1,840 tokens', '$0.012', '0.25', '?')
    """
    x = _num(value)
    if x is None:
        return "?"
    if unit in ("usd", "USD", "$"):
        return _usd(x)
    if abs(x) >= 100:
        text = f"{x:,.0f}"
    elif abs(x) >= 1:
        text = f"{x:,.2f}".rstrip("0").rstrip(".")
    else:
        text = f"{x:.4g}"
    return f"{text} {escape(unit, 40)}" if isinstance(unit, str) and unit else text


def _usd(x: float) -> str:
    if abs(x) >= 100:
        return f"${x:,.0f}"
    if abs(x) >= 0.1:
        return f"${x:,.2f}"
    return f"${x:.2g}"  # cents would round small per-call costs to $0.00


def _clock(ts: object) -> str:
    """``2026-11-02T09:04:00.000Z`` -> ``09:04 UTC``; anything else as given."""
    if not isinstance(ts, str):
        return "?"
    try:
        dt = datetime.fromisoformat(ts.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return escape(ts, 40)
    return dt.strftime("%Y-%m-%d %H:%M UTC")


def _duration(start: object, end: object) -> str | None:
    try:
        a = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
        b = datetime.fromisoformat(str(end).replace("Z", "+00:00"))
    except ValueError:
        return None
    minutes = max(0, round((b - a).total_seconds() / 60))
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def _icon(alert: Mapping[str, Any]) -> str:
    if alert.get("status") == "resolved":
        return _RESOLVED_ICON
    return _SEVERITY_ICON.get(_str(alert, "severity"), _INFO_ICON)


def _title(alert: Mapping[str, Any]) -> str:
    label = "RESOLVED" if alert.get("status") == "resolved" else _str(alert, "severity").upper()
    return _cut(
        f"{_icon(alert)} {label} · {_str(alert, 'kind')} · {_str(alert, 'use_case')}",
        _HEADER_MAX,
    )


def _evidence_fields(alert: Mapping[str, Any]) -> list[str]:
    # Log-scale metrics in their own unit ("$0.41 -> $2.46 per Mtok", not "-0.89 -> 0.90").
    baseline, observed, unit = readable(_obj(alert, "evidence"))
    now = _fmt(observed, unit)
    if baseline and observed is not None and baseline > 0:
        now += f" ({observed / baseline:.1f}x)"
    return [f"*Baseline*\n{_fmt(baseline, unit)}", f"*Now*\n{now}"]


def _impact_fields(alert: Mapping[str, Any]) -> list[str]:
    impact = _obj(alert, "impact")
    per_hour = _num(impact.get("excess_cost_per_hour_usd"))
    per_month = _num(impact.get("projected_monthly_usd"))
    if per_hour == 0 and per_month in (0, None):
        # A kind that prices no excess (outcomes that fell, a budget spent): "$0/h"
        # next to a critical alert reads as "harmless".
        return ["*Excess cost*\nnot priced by this detector"]
    return [
        f"*Excess cost*\n{'?' if per_hour is None else _usd(per_hour) + '/h'}",
        f"*Projected*\n{'?' if per_month is None else _usd(per_month) + '/month'}",
    ]


def _action_text(alert: Mapping[str, Any]) -> str:
    """The action spendsentry took, in words.

    >>> _action_text({"action": {"type": "dry_run", "throttle_action": "limit_rate"}})
    'Dry run: `limit_rate` logged by gateways, not enforced'
    >>> _action_text({})
    'None (alert only)'
    """
    action = _obj(alert, "action")
    kind = action.get("type")
    what = escape(action.get("throttle_action") or "throttle", 60)
    if kind == "throttle":
        return f"Throttled: `{what}` enforced by gateways"
    if kind == "dry_run":
        return f"Dry run: `{what}` logged by gateways, not enforced"
    return "None (alert only)"


def _throttled(alert: Mapping[str, Any]) -> bool:
    return _obj(alert, "action").get("type") in ("throttle", "dry_run")


def _context(alert: Mapping[str, Any]) -> dict[str, Any]:
    ev = _obj(alert, "evidence")
    parts = [f"metric `{escape(ev.get('metric', '?'), 80)}`"]
    window = _num(ev.get("window_s"))
    if window is not None:
        parts.append(f"window {window / 60:g} min")
    score = _num(ev.get("score"))
    if score is not None:
        parts.append(f"score {score:.2f}")
    if isinstance(ev.get("example_session"), str):
        parts.append(f"session `{escape(ev['example_session'], 120)}`")
    if isinstance(ev.get("example_model"), str):
        parts.append(f"model `{escape(ev['example_model'], 80)}`")
    parts.append(f"alert `{escape(_str(alert, 'alert_id'), 64)}`")
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(parts)}]}


def button_value(alert: Mapping[str, Any]) -> str:
    """What a button carries back: everything a control action needs.

    >>> button_value({"alert_id": "ab12", "use_case": "u", "kind": "cost_spike"})
    '{"alert_id":"ab12","use_case":"u","kind":"cost_spike","scope_key":null}'
    """
    action = _obj(alert, "action")
    scope_key = action.get("scope_key")
    return json.dumps(
        {
            "alert_id": alert.get("alert_id"),
            "use_case": alert.get("use_case"),
            "kind": alert.get("kind"),
            "scope_key": scope_key if isinstance(scope_key, str) else None,
        },
        separators=(",", ":"),
    )


def _buttons(alert: Mapping[str, Any]) -> dict[str, Any] | None:
    value = button_value(alert)
    if len(value) > _BUTTON_VALUE_MAX:
        return None  # a pathological use case name: no buttons rather than a rejected message
    elements: list[dict[str, Any]] = [
        _button("spendsentry_ack", "Acknowledge", value, style="primary"),
    ]
    if _throttled(alert):
        release = _button("spendsentry_release", "Release throttle", value, style="danger")
        release["confirm"] = {
            "title": {"type": "plain_text", "text": "Release the throttle?"},
            "text": {
                "type": "mrkdwn",
                "text": f"Traffic of *{escape(_str(alert, 'use_case'), 200)}* goes back to "
                "normal, and so does its spend.",
            },
            "confirm": {"type": "plain_text", "text": "Release"},
            "deny": {"type": "plain_text", "text": "Keep it"},
        }
        elements.append(release)
    elements.append(_button("spendsentry_snooze", "Snooze 1 h", value))
    # Feedback: the new level is normal (it becomes the baseline and the
    # incident resolves), or the alert was wrong (the kind gets less sensitive
    # for this use case, within the policy's floor).
    elements.append(_button("spendsentry_expected_change", "Expected change", value))
    elements.append(_button("spendsentry_false_alarm", "False alarm", value))
    return {"type": "actions", "block_id": "spendsentry_actions", "elements": elements}


def _button(action_id: str, label: str, value: str, *, style: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": label},
        "value": value,
    }
    if style:
        out["style"] = style
    return out


def _fields(texts: list[str]) -> dict[str, Any]:
    return {
        "type": "section",
        "fields": [{"type": "mrkdwn", "text": _cut(t, _FIELD_MAX)} for t in texts],
    }


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, _SECTION_MAX)}}


def fallback_text(alert: Mapping[str, Any]) -> str:
    """The notification line (push notifications, screen readers, old clients).

    >>> fallback_text({"severity": "warning", "kind": "cost_spike", "use_case": "u",
    ...                "status": "resolved", "summary": "Resolved: cost x4"})
    '[RESOLVED] cost_spike on u: Resolved: cost x4'
    """
    label = "RESOLVED" if alert.get("status") == "resolved" else _str(alert, "severity").upper()
    text = f"[{label}] {_str(alert, 'kind')} on {_str(alert, 'use_case')}: {_str(alert, 'summary')}"
    per_hour = _num(_obj(alert, "impact").get("excess_cost_per_hour_usd"))
    if per_hour and alert.get("status") != "resolved":
        text += f" ({_usd(per_hour)}/h excess)"
    return escape(text, _TEXT_MAX)


def render_alert(alert: Mapping[str, Any], *, buttons: bool = True) -> SlackMessage:
    """The full message of an alert: the thread parent, or one webhook post.

    Parameters
    ----------
    alert : Mapping
        An alert as published on ``ai.alerts`` (anything else renders with "?").
    buttons : bool
        Add the action buttons (never on a resolved alert: nothing left to do).
        Incoming webhooks can carry buttons too; their clicks reach the
        interactivity URL of the Slack app that owns the webhook.

    Returns
    -------
    SlackMessage
        Fallback text and Block Kit blocks.
    """
    status = _str(alert, "status")
    resolved = status == "resolved"
    when = f"Started {_clock(alert.get('started_at'))}"
    if resolved:
        took = _duration(alert.get("started_at"), alert.get("resolved_at"))
        when = f"Resolved {_clock(alert.get('resolved_at'))}" + (f" after {took}" if took else "")
    elif status == "escalated":
        when += f" · escalated {_clock(alert.get('detected_at'))}"
    summary = escape(_str(alert, "summary"), 2000)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _title(alert), "emoji": True}},
        _section(f"*{summary}*\n{when}"),
        _fields(
            _evidence_fields(alert)
            # A resolved alert carries no excess: "$0/h" would only distract.
            + ([] if resolved else _impact_fields(alert))
            + [f"*Action taken*\n{_action_text(alert)}"]
            + ([f"*Owner*\n{escape(alert['owner'], 200)}"] if _owner(alert) else [])
        ),
    ]
    if not resolved:
        checklist = CHECKLISTS.get(_str(alert, "kind"), _DEFAULT_CHECKLIST)
        blocks.append(_section("*Check first*\n" + "\n".join(f"• {line}" for line in checklist)))
    blocks.append(_context(alert))
    if buttons and not resolved:
        actions = _buttons(alert)
        if actions is not None:
            blocks.append(actions)
    return SlackMessage(fallback_text(alert), blocks)


def _owner(alert: Mapping[str, Any]) -> bool:
    return isinstance(alert.get("owner"), str) and bool(alert["owner"])


def render_update(alert: Mapping[str, Any]) -> SlackMessage:
    """The thread reply for an escalation or a resolution (bot-token mode).

    >>> msg = render_update({
    ...     "status": "escalated", "severity": "critical", "kind": "cost_spike", "use_case": "u",
    ...     "summary": "cost x9", "detected_at": "2026-11-02T09:10:00Z",
    ...     "evidence": {"baseline": 1, "observed": 9, "unit": "usd"},
    ...     "impact": {"excess_cost_per_hour_usd": 8, "projected_monthly_usd": 5840}})
    >>> msg.blocks[0]["text"]["text"].splitlines()[0]
    ':red_circle: Escalated to *critical* at 2026-11-02 09:10 UTC'
    """
    if alert.get("status") == "resolved":
        took = _duration(alert.get("started_at"), alert.get("resolved_at"))
        head = f"{_RESOLVED_ICON} Resolved at {_clock(alert.get('resolved_at'))}"
        head += f" after {took}" if took else ""
        blocks = [_section(f"{head}\n{escape(_str(alert, 'summary'), 2000)}")]
    else:
        head = (
            f"{_icon(alert)} Escalated to *{escape(_str(alert, 'severity'), 20)}* at "
            f"{_clock(alert.get('detected_at'))}"
        )
        blocks = [
            _section(f"{head}\n{escape(_str(alert, 'summary'), 2000)}"),
            _fields(
                _evidence_fields(alert)
                + _impact_fields(alert)
                + [f"*Action taken*\n{_action_text(alert)}"]
            ),
        ]
    return SlackMessage(fallback_text(alert), blocks)
