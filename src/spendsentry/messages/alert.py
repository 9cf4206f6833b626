"""Alert messages: their statuses, their dedupe key, and a typed view of one as read back.

An incident's alerts share its ``alert_id``; each state change is one
message, told apart by (status, severity, incident_seq). That quadruple is the
**dedupe key** every sink (the worker's read-back, the Slack notifier) keys
delivered alerts by, spelled here once.

>>> doc = {"alert_id": "ab", "kind": "cost_spike", "use_case": "u", "severity": "info",
...        "status": "firing", "detected_at": "2026-11-02T09:00:00Z",
...        "started_at": "2026-11-02T08:58:00Z", "incident_seq": 1}
>>> dedupe_key_of(doc)
'ab:firing:info:1'
>>> view = AlertView.from_dict(doc)
>>> view.status, view.detected_at - view.started_at
('firing', 120.0)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spendsentry.timeutil import parse_ts

__all__ = ["ALERT_STATUSES", "AlertView", "dedupe_key", "dedupe_key_of"]

#: The life cycle of an incident: one ``firing``, ``escalated`` when the
#: severity rises, one ``resolved``.
ALERT_STATUSES: tuple[str, ...] = ("firing", "escalated", "resolved")


def dedupe_key(alert_id: object, status: object, severity: object, incident_seq: object) -> str:
    """One key per state change of an incident: ``alert_id:status:severity:incident_seq``.

    >>> dedupe_key("ab", "escalated", "critical", 2)
    'ab:escalated:critical:2'
    """
    return f"{alert_id}:{status}:{severity}:{incident_seq}"


def dedupe_key_of(doc: Mapping[str, Any]) -> str:
    """The dedupe key of an alert message as read from the topic (missing parts: ``None``).

    A message written by the engine has every part; a foreign one still gets
    a key, so reading it back never fails.
    """
    return dedupe_key(
        doc.get("alert_id"), doc.get("status"), doc.get("severity"), doc.get("incident_seq")
    )


#: The fields an :class:`AlertView` needs; a message without one is unusable.
_REQUIRED = ("alert_id", "kind", "use_case", "severity", "status", "detected_at", "started_at")


@dataclass(frozen=True, slots=True)
class AlertView:
    """The fields of an alert message that tools read back; times are epoch seconds.

    The engine's :class:`spendsentry.alerts.Alert` writes the message; this is
    the reading side (``spendsentry evaluate``, offline tools), which needs no
    evidence, summary or action.

    >>> AlertView.from_dict({"alert_id": "ab", "status": "firing"})
    Traceback (most recent call last):
    ...
    ValueError: alert message without kind
    """

    alert_id: str
    kind: str
    use_case: str
    severity: str
    status: str
    detected_at: float
    started_at: float
    #: The incident the alert belongs to (findings on one use case that overlap
    #: in time); None in messages written before incidents were grouped.
    incident_id: str | None = None
    #: The kind the incident names as its cause (as of this message).
    root_cause: str | None = None

    @classmethod
    def from_dict(cls, doc: object) -> AlertView:
        """Read one decoded alert message; ``ValueError`` (saying why) if it is unusable.

        Text fields are taken as text (``str()``); times may be RFC 3339 or
        epoch numbers, as :func:`spendsentry.timeutil.parse_ts` reads them.
        """
        if not isinstance(doc, Mapping):
            raise ValueError("alert message is not a JSON object")
        for name in _REQUIRED:
            if doc.get(name) is None:
                raise ValueError(f"alert message without {name}")
        try:
            detected_at = parse_ts(doc["detected_at"])
            started_at = parse_ts(doc["started_at"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"alert message with a bad time: {exc}") from None
        return cls(
            alert_id=str(doc["alert_id"]),
            kind=str(doc["kind"]),
            use_case=str(doc["use_case"]),
            severity=str(doc["severity"]),
            status=str(doc["status"]),
            detected_at=detected_at,
            started_at=started_at,
            incident_id=_text_or_none(doc.get("incident_id")),
            root_cause=_text_or_none(doc.get("root_cause")),
        )


def _text_or_none(value: object) -> str | None:
    return None if value is None else str(value)
