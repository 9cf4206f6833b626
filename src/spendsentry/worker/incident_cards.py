"""The status page's firing alerts as one card per incident: root cause, symptoms, drivers.

>>> alerts = [
...     {"alert_id": "a1", "incident_id": "i", "kind": "cost_spike", "use_case": "u",
...      "severity": "critical", "root_cause": "agent_chatter", "summary": "spend x4"},
...     {"alert_id": "a2", "incident_id": "i", "kind": "agent_chatter", "use_case": "u",
...      "severity": "warning", "root_cause": "agent_chatter", "summary": "loop",
...      "drivers": [{"dimension": "session", "value": "s1", "share": 0.9}]},
...     {"alert_id": "a3", "kind": "cost_spike", "use_case": "v", "severity": "info"}]
>>> [[a["alert_id"] for a in group] for group in incidents(alerts)]
[['a2', 'a1'], ['a3']]
>>> html = incident_card(incidents(alerts)[0], lambda doc: "<div>" + doc["kind"] + "</div>")
>>> "symptoms" in html and "session s1: 90% of the excess" in html
True
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from spendsentry.messages.severity import SEVERITY_RANK

__all__ = ["incident_card", "incidents"]

Doc = Mapping[str, Any]


def incidents(alerts: Sequence[Doc]) -> list[list[Doc]]:
    """Firing alerts grouped by incident (an alert without one is its own), cause first.

    Groups keep the order of their first alert (``alerts`` come most severe first).
    """
    groups: dict[str, list[Doc]] = {}
    for doc in alerts:
        key = str(doc.get("incident_id") or doc.get("alert_id"))
        groups.setdefault(key, []).append(doc)
    out = []
    for docs in groups.values():
        cause = docs[0].get("root_cause")
        out.append(sorted(docs, key=lambda d: d.get("kind") != cause))
    return out


def incident_card(docs: Sequence[Doc], card: Callable[[Doc], str]) -> str:
    """The cause's card (``card`` renders one alert), with its symptoms and drivers inside."""
    head = dict(docs[0])
    # The card shows the incident's worst severity, whichever of its alerts has it.
    head["severity"] = max(
        (str(d.get("severity") or "warning") for d in docs),
        key=lambda s: SEVERITY_RANK.get(s, -1),
    )
    extra: list[str] = []
    drivers = head.get("drivers")
    if isinstance(drivers, list) and drivers:
        items = "".join(
            f"<li>{_e(d.get('dimension'))} {_e(d.get('value'))}: "
            f"{round(float(d.get('share') or 0) * 100)}% of the excess</li>"
            for d in drivers[:4]
            if isinstance(d, Mapping)
        )
        extra.append(f'<p class="drivers"><b>what drives it</b></p><ul>{items}</ul>')
    if len(docs) > 1:
        items = "".join(
            f"<li><b>{_e(d.get('kind'))}</b> ({_e(d.get('severity'))}): {_e(d.get('summary'))}</li>"
            for d in docs[1:]
        )
        extra.append(f'<p class="symptoms"><b>symptoms</b></p><ul>{items}</ul>')
    body = card(head)
    if not extra:
        return body
    # Inside the card: before its closing tag.
    cut = body.rfind("</div>")
    return body[:cut] + "".join(extra) + body[cut:]


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))
