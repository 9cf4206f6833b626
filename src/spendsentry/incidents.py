"""Incidents: a use case's alerts that overlap in time, one of them named as the cause.

Each kind's tracker (:class:`spendsentry.alerts.IncidentTracker`) still gives
its own alerts (same ``alert_id``\\ s, same life cycle); :class:`IncidentGroup`
adds what on-call needs to get one page: every alert of a use case whose span
``[started_at, resolved_at]`` overlaps that of an open incident (or of one
just resolved) joins it, and carries its ``incident_id``, its ``root_cause``
and its ``role`` (``cause`` or ``symptom``).

The root cause is the first kind to join (in the order they fired; kinds that
fired in the same minute in the engine's evaluation order) that no other kind
of the incident explains one-way (two kinds that explain each other leave it
to the first of them); a kind explains another when what it measures makes
the other's metric move (``Kind.explains``, one tuple per kind class: an agent
loop explains inflated prompts and a cost spike). The ``incident_id`` is a
hash of (use case, minute of the first finding, its kind): the same events
give the same ids in replay and on the worker. Pure: event time only.

>>> from spendsentry.alerts import Alert
>>> explains = {"agent_chatter": ("cost_spike",)}
>>> group = IncidentGroup("u", explains)
>>> spike = Alert("a1", "cost_spike", "u", "warning", "firing", 600.0, 480.0, "s", {}, 1.0)
>>> group.assign([spike])
>>> spike.root_cause, spike.role
('cost_spike', 'cause')
>>> loop = Alert("a2", "agent_chatter", "u", "warning", "firing", 660.0, 540.0, "s", {}, 1.0)
>>> group.assign([loop])
>>> loop.incident_id == spike.incident_id, loop.root_cause, loop.role, group.root_cause
(True, 'agent_chatter', 'cause', 'agent_chatter')
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spendsentry.alerts import Alert

__all__ = ["IncidentGroup", "OpenIncident", "make_incident_id", "root_cause_of"]

CAUSE = "cause"
SYMPTOM = "symptom"


def make_incident_id(use_case: str, minute: int, kind: str) -> str:
    """Deterministic id of one incident: its use case, first finding's minute and kind.

    >>> make_incident_id("support_chat", 29893500, "agent_chatter")
    'inc-7e39190cf851326a4a6cfa1b'
    """
    key = f"incident\x1f{use_case}\x1f{minute}\x1f{kind}".encode()
    return "inc-" + hashlib.sha256(key).hexdigest()[:24]


def root_cause_of(kinds: Sequence[str], explains: Mapping[str, Sequence[str]]) -> str:
    """The first of ``kinds`` (in joining order) that no other of them explains one-way.

    Two kinds that explain each other (the same evidence read two ways) do not
    rule each other out: the first of them to fire names the cause. When every
    kind is explained one-way by another, the first one is named.

    >>> rules = {"fallback_drift": ("model_oversizing", "cost_spike"),
    ...          "model_oversizing": ("fallback_drift", "cost_spike")}
    >>> root_cause_of(["cost_spike", "model_oversizing", "fallback_drift"], rules)
    'model_oversizing'
    >>> root_cause_of(["cost_spike", "fallback_drift", "model_oversizing"], rules)
    'fallback_drift'
    >>> root_cause_of(["cost_spike", "budget_burn"], rules)
    'cost_spike'
    """
    present = set(kinds)

    def explained(kind: str) -> bool:
        return any(
            kind in explains.get(other, ()) and other not in explains.get(kind, ())
            for other in present
            if other != kind
        )

    for kind in kinds:
        if not explained(kind):
            return kind
    return kinds[0]


@dataclass(slots=True)
class OpenIncident:
    """The incident a use case has open (or resolved last)."""

    incident_id: str
    #: Kinds in the order they joined (each once).
    kinds: list[str]
    #: alert_id -> kind of the alerts still open.
    open_alerts: dict[str, str] = field(default_factory=dict)
    #: When its last alert resolved (None while any is open).
    resolved_at: float | None = None


class IncidentGroup:
    """One use case's incident: which alerts belong to it and which kind is the cause.

    ``explains`` maps a kind to the kinds it explains (see the module doc).
    """

    def __init__(self, use_case: str, explains: Mapping[str, Sequence[str]]) -> None:
        self.use_case = use_case
        self.explains = explains
        self.current: OpenIncident | None = None

    @property
    def open(self) -> bool:
        """Whether an alert of the use case is open (its baselines should not learn)."""
        return self.current is not None and bool(self.current.open_alerts)

    @property
    def root_cause(self) -> str | None:
        inc = self.current
        return root_cause_of(inc.kinds, self.explains) if inc is not None else None

    def assign(self, alerts: Sequence[Alert]) -> None:
        """Name the incident of one closed minute's alerts (in order), in place."""
        for alert in alerts:
            if alert.status == "firing":
                self._join(alert)
        inc = self.current
        if inc is None:
            return
        cause = root_cause_of(inc.kinds, self.explains)
        for alert in alerts:
            if alert.status != "firing" and alert.alert_id not in inc.open_alerts:
                continue  # not ours: an incident snapshotted before grouping
            alert.incident_id = inc.incident_id
            alert.root_cause = cause
            alert.role = CAUSE if alert.kind == cause else SYMPTOM
            if alert.status == "resolved":
                inc.open_alerts.pop(alert.alert_id, None)
                if not inc.open_alerts:
                    inc.resolved_at = alert.detected_at

    def _join(self, alert: Alert) -> None:
        inc = self.current
        overlaps = inc is not None and (
            inc.open_alerts or (inc.resolved_at is not None and alert.started_at <= inc.resolved_at)
        )
        if inc is None or not overlaps:
            minute = int(alert.started_at // 60)
            inc = self.current = OpenIncident(
                make_incident_id(self.use_case, minute, alert.kind), []
            )
        inc.resolved_at = None
        inc.open_alerts[alert.alert_id] = alert.kind
        if alert.kind not in inc.kinds:
            inc.kinds.append(alert.kind)
