"""One alert per budget period that escalates through its thresholds (``budget_threshold``).

:class:`~spendsentry.alerts.IncidentTracker` resolves an incident after quiet
minutes; a budget threshold is crossed once and stays crossed until its period
resets. :class:`PeriodTracker` keeps one open alert per budget period (hour,
day, month): the first threshold crossed in a period is ``firing``, each next
one ``escalated`` (same ``alert_id``, so on-call gets one page that
escalates, not one page per threshold), and the first minute after the period
ends ``resolved``. The ``alert_id`` is a hash of (use case, kind and period,
the period's start); ``incident_seq`` counts the crossings of the use case,
so two thresholds of one severity (0.25 and 0.5 are both info) still give
two dedupe keys. Pure: event time only.

A threshold warning is not an anomaly: it joins no incident of the use case's
anomalies (it would hold one open all day, gluing the day's anomalies together
and pausing what drivers learn) and plans no throttle command (a budget spent
or overrun is ``budget_burn``'s to throttle). Each period is its own incident
(``incident_id`` from the period), its own root cause.

>>> from spendsentry.alerts import Finding
>>> t = PeriodTracker("u", "budget_threshold")
>>> def crossing(severity, threshold):
...     details = {"period": "day", "period_start": "2026-11-02T00:00:00Z",
...                "resets_at": "2026-11-03T00:00:00Z", "threshold": threshold}
...     return Finding("budget_threshold", severity, threshold, "cost_per_day_usd", 100.0,
...                    100 * threshold, 60.0, "s", details=details, onset=1793577600.0)
>>> [(a.status, a.severity) for a in t.observe(crossing("info", 0.5), 1793610000.0)]
[('firing', 'info')]
>>> t.observe(None, 1793610060.0)
[]
>>> [(a.status, a.severity) for a in t.observe(crossing("warning", 0.8), 1793620000.0)]
[('escalated', 'warning')]
>>> [(a.status, a.incident_seq) for a in t.observe(None, 1793664060.0)]  # 00:01 next day
[('resolved', 2)]
"""

from __future__ import annotations

from spendsentry.alerts import Alert, Finding, IncidentTracker, _Open, make_alert_id
from spendsentry.incidents import CAUSE, make_incident_id
from spendsentry.timeutil import parse_ts

__all__ = ["PERIOD_KINDS", "PeriodTracker"]

#: The kinds whose alerts live per budget period (tracked by :class:`PeriodTracker`).
PERIOD_KINDS: frozenset[str] = frozenset({"budget_threshold"})


class PeriodTracker(IncidentTracker):
    """Open alerts of one kind, one per budget period, each resolved when its period resets.

    ``lanes`` maps a period to its open alert; the period's end is in the
    alert's last finding (``details["resets_at"]``), so a snapshot of the
    lanes (:func:`spendsentry.snapshot.incidents.dump_tracker`) holds it.
    """

    def __init__(self, use_case: str, kind: str, *, resolve_after: int = 10) -> None:
        super().__init__(use_case, kind, resolve_after=resolve_after)
        self.lanes: dict[str, _Open] = {}

    @property
    def firing(self) -> bool:
        return bool(self.lanes)

    @property
    def open_alert_id(self) -> str | None:
        return self.lanes[min(self.lanes)].alert_id if self.lanes else None

    def observe(
        self, finding: Finding | None, at: float, *, started_at: float | None = None
    ) -> list[Alert]:
        """Resolve the periods that ended before this minute, then take its crossing."""
        out: list[Alert] = []
        for period in sorted(self.lanes):
            lane = self.lanes[period]
            ends = parse_ts(lane.peak.details["resets_at"])
            if at - 60.0 >= ends or (
                finding is not None
                and finding.details["period"] == period
                and finding.onset != lane.started_at
            ):
                del self.lanes[period]
                out.append(self._resolved(period, lane, max(ends, at - 60.0), at))
        if finding is None:
            return out
        period = finding.details["period"]
        self._seq += 1
        current = self.lanes.get(period)
        start = finding.onset if finding.onset is not None else at - 60.0
        if current is None:
            key = f"{self.kind}\x1f{period}"
            current = self.lanes[period] = _Open(
                make_alert_id(self.use_case, key, start), start, finding.severity, 0, finding, 0
            )
            status = "firing"
        else:
            status = "escalated"
        lane = current
        lane.seq = self._seq
        lane.peak = finding
        lane.severity = finding.severity
        out.append(self._tagged(self._alert(lane, status, at, finding), period))
        return out

    def _resolved(self, period: str, lane: _Open, reset: float, at: float) -> Alert:
        d = lane.peak.details
        summary = (
            f"Resolved: {self.use_case}'s {period} budget period ended at {d['resets_at']} "
            f"with {d['threshold']:.0%} of ${lane.peak.baseline:,.2f} crossed; "
            f"thresholds are re-armed."
        )
        alert = self._alert(lane, "resolved", at, lane.peak, summary=summary, resolved_at=reset)
        return self._tagged(alert, period)

    def _tagged(self, alert: Alert, period: str) -> Alert:
        """The alert as its own incident: the period's, with itself as the cause."""
        alert.incident_id = make_incident_id(
            self.use_case, int(alert.started_at // 60), f"{self.kind}:{period}"
        )
        alert.root_cause = self.kind
        alert.role = CAUSE
        return alert
