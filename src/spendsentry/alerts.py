"""Alerts: what detectors found, as one incident with a life cycle.

A detector reports a :class:`Finding` for each closed minute in which it sees
an anomaly. :class:`IncidentTracker` turns the stream of findings for one
(use case, kind) into one incident: ``firing`` once, ``escalated`` when the
severity rises, ``resolved`` when the findings stop for a while. The
``alert_id`` is a hash of (use case, kind, incident start), so a replay of the
same events yields the same ids and downstream deduplication works across
restarts. Severities, statuses and the dedupe key are the message vocabulary's
(:mod:`spendsentry.messages`; ``SEVERITIES`` and ``severity_rank`` are
re-exported here for old imports).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from spendsentry.detectors.registry import KINDS
from spendsentry.evidence_text import readable
from spendsentry.messages.alert import dedupe_key
from spendsentry.messages.severity import SEVERITIES, severity_rank
from spendsentry.timeutil import format_ts

__all__ = [
    "ALERT_KINDS",
    "HOURS_PER_MONTH",
    "SEVERITIES",
    "Alert",
    "Finding",
    "IncidentTracker",
    "make_alert_id",
    "severity_rank",
]

#: Every alert kind (the detectors' registry is the one list).
ALERT_KINDS: tuple[str, ...] = KINDS
HOURS_PER_MONTH = 730.0


@dataclass(slots=True)
class Finding:
    """A detector's verdict on one closed minute: this looks anomalous, and why."""

    kind: str
    severity: str
    score: float
    metric: str
    baseline: float
    observed: float
    window_s: float
    summary: str
    unit: str = ""
    excess_cost_per_hour_usd: float = 0.0
    example_session: str | None = None
    example_model: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    #: Event time the anomaly began (first anomalous minute), when known.
    onset: float | None = None

    def evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "metric": self.metric,
            "baseline": _round(self.baseline),
            "observed": _round(self.observed),
            "window_s": self.window_s,
            "score": _round(self.score),
        }
        if self.unit:
            out["unit"] = self.unit
        if self.example_session:
            out["example_session"] = self.example_session
        if self.example_model:
            out["example_model"] = self.example_model
        if self.details:
            out["details"] = self.details
        return out


def _round(x: float) -> float:
    return round(float(x), 6)


@dataclass(slots=True)
class Alert:
    """One state change of one incident (the alerts topic carries each change)."""

    alert_id: str
    kind: str
    use_case: str
    severity: str
    status: str
    detected_at: float
    started_at: float
    summary: str
    evidence: dict[str, Any]
    excess_cost_per_hour_usd: float
    resolved_at: float | None = None
    action: dict[str, Any] = field(default_factory=lambda: {"type": "none"})
    owner: str | None = None
    tier: str | None = None
    incident_seq: int = 1
    #: The use case's incident this alert belongs to (:mod:`spendsentry.incidents`).
    incident_id: str | None = None
    #: The kind the incident names as its cause, as of this update.
    root_cause: str | None = None
    #: "cause" or "symptom" (of ``root_cause``).
    role: str | None = None
    #: What drives the increase, ranked (``spendsentry.drivers``): dimension, value, share.
    drivers: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema_version": 1,
            "alert_id": self.alert_id,
            "kind": self.kind,
            "use_case": self.use_case,
            "severity": self.severity,
            "status": self.status,
            "detected_at": format_ts(self.detected_at),
            "started_at": format_ts(self.started_at),
            "resolved_at": format_ts(self.resolved_at) if self.resolved_at is not None else None,
            "summary": self.summary,
            "evidence": self.evidence,
            "impact": {
                "excess_cost_per_hour_usd": round(self.excess_cost_per_hour_usd, 4),
                "projected_monthly_usd": round(self.excess_cost_per_hour_usd * HOURS_PER_MONTH, 2),
            },
            "action": self.action,
            "incident_seq": self.incident_seq,
        }
        if self.owner:
            out["owner"] = self.owner
        if self.tier:
            out["tier"] = self.tier
        if self.incident_id is not None:
            out["incident_id"] = self.incident_id
            out["root_cause"] = self.root_cause
            out["role"] = self.role
        if self.drivers is not None:
            out["drivers"] = self.drivers
        return out

    @property
    def dedupe_key(self) -> str:
        """One key per state change: what sinks deduplicate on."""
        return dedupe_key(self.alert_id, self.status, self.severity, self.incident_seq)


def _resolved_summary(use_case: str, kind: str, inc: _Open, at: float) -> str:
    """What a resolution says: not the firing sentence again ("... still running").

    >>> f = Finding("cost_spike", "warning", 5.0, "usd", 1.0, 4.0, 60, "cost x4", unit="usd")
    >>> _resolved_summary("u", "cost_spike", _Open("a", 0.0, "warning", 10, f, 1), 1500.0)
    'Resolved: u cost spike is back to normal after 25 min (at its peak usd was 4 usd, usual 1).'
    """
    # Log-scale metrics in their own unit (price tier in USD/Mtok, not its logarithm).
    baseline, observed, unit = readable(inc.peak.evidence())
    minutes = max(1, round((at - inc.started_at) / 60.0))
    unit_text = f" {unit}" if unit else ""
    return (
        f"Resolved: {use_case} {kind.replace('_', ' ')} is back to normal after {minutes} min "
        f"(at its peak {inc.peak.metric} was {observed or 0:,.4g}{unit_text}, "
        f"usual {baseline or 0:,.4g})."
    )


def make_alert_id(use_case: str, kind: str, started_at: float) -> str:
    """Deterministic id of one incident.

    >>> make_alert_id("support_chat", "cost_spike", 1793610000.0)
    '63412823acbdd60e66b2b4c7'
    """
    key = f"{use_case}\x1f{kind}\x1f{int(started_at)}".encode()
    return hashlib.sha256(key).hexdigest()[:24]


@dataclass(slots=True)
class _Open:
    alert_id: str
    started_at: float
    severity: str
    quiet_minutes: int
    peak: Finding
    seq: int


class IncidentTracker:
    """The life cycle of incidents of one kind on one use case.

    ``resolve_after`` quiet minutes close an incident: a single normal minute
    inside a noisy incident must not resolve and re-fire it (flapping).

    >>> t = IncidentTracker("u", "cost_spike", resolve_after=2)
    >>> f = Finding("cost_spike", "warning", 5.0, "cost_per_min", 1.0, 4.0, 60, "cost x4")
    >>> [a.status for a in t.observe(f, 60.0)]
    ['firing']
    >>> t.observe(f, 120.0)
    []
    >>> g = Finding("cost_spike", "critical", 9.0, "cost_per_min", 1.0, 9.0, 60, "cost x9")
    >>> [a.status for a in t.observe(g, 180.0)]
    ['escalated']
    >>> t.observe(None, 240.0), [a.status for a in t.observe(None, 300.0)]
    ([], ['resolved'])
    """

    #: Default for trackers pickled before feedback existed.
    accepted: int | None = None

    def __init__(self, use_case: str, kind: str, *, resolve_after: int = 10) -> None:
        self.use_case = use_case
        self.kind = kind
        self.resolve_after = resolve_after
        self._open: _Open | None = None
        self._seq = 0
        #: An operator said the current episode is an expected change: its
        #: quiet minutes so far (None: no such episode). Its findings open no
        #: incident until it has been quiet as long as an incident takes to resolve.
        self.accepted: int | None = None

    @property
    def firing(self) -> bool:
        return self._open is not None

    @property
    def open_alert_id(self) -> str | None:
        return self._open.alert_id if self._open else None

    def observe(
        self, finding: Finding | None, at: float, *, started_at: float | None = None
    ) -> list[Alert]:
        """Feed one closed minute's verdict (None = normal); return alerts to publish."""
        if self.accepted is not None:
            # The episode an operator called expected goes on (a kind whose bar
            # is not learned: a budget, a first call, runaway sessions) until it
            # is quiet as long as the incident would have needed to resolve.
            if finding is not None:
                self.accepted = 0
                return []
            self.accepted += 1
            if self.accepted >= self.resolve_after:
                self.accepted = None
            return []
        current = self._open
        if finding is None:
            if current is None:
                return []
            current.quiet_minutes += 1
            if current.quiet_minutes < self.resolve_after:
                return []
            self._open = None
            peak = current.peak
            return [
                self._alert(
                    current,
                    "resolved",
                    at,
                    peak,
                    summary=_resolved_summary(self.use_case, self.kind, current, at),
                    resolved_at=at,
                )
            ]
        if current is None:
            self._seq += 1
            start = started_at if started_at is not None else finding.onset
            if start is None:
                start = at - 60.0
            current = self._open = _Open(
                make_alert_id(self.use_case, self.kind, start),
                start,
                finding.severity,
                0,
                finding,
                self._seq,
            )
            return [self._alert(current, "firing", at, finding)]
        current.quiet_minutes = 0
        if severity_rank(finding.severity) > severity_rank(current.severity):
            current.severity = finding.severity
            current.peak = finding
            return [self._alert(current, "escalated", at, finding)]
        if finding.score > current.peak.score and finding.severity == current.severity:
            current.peak = finding
        return []

    def resolve(self, at: float, summary: str, **details: object) -> Alert | None:
        """Resolve the open incident now (operator feedback), saying why; None if none.

        The episode is *accepted*: findings that go on open no new incident
        until it has been quiet for ``resolve_after`` minutes.

        ``details`` go into the resolution's ``evidence.details`` (e.g.
        ``resolution="expected_change"``).
        """
        current = self._open
        if current is None:
            return None
        self._open = None
        self.accepted = current.quiet_minutes
        alert = self._alert(current, "resolved", at, current.peak, summary=summary, resolved_at=at)
        alert.evidence["details"] = {**(alert.evidence.get("details") or {}), **details}
        return alert

    def _alert(
        self,
        inc: _Open,
        status: str,
        at: float,
        finding: Finding,
        *,
        summary: str | None = None,
        resolved_at: float | None = None,
    ) -> Alert:
        return Alert(
            alert_id=inc.alert_id,
            kind=self.kind,
            use_case=self.use_case,
            severity=inc.severity,
            status=status,
            detected_at=at,
            started_at=inc.started_at,
            summary=summary or finding.summary,
            evidence=finding.evidence(),
            excess_cost_per_hour_usd=0.0
            if status == "resolved"
            else max(0.0, finding.excess_cost_per_hour_usd),
            resolved_at=resolved_at,
            incident_seq=inc.seq,
        )
