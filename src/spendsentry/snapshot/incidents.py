"""Incidents and throttle bookkeeping as plain data: incident trackers, the planner, commands.

>>> from spendsentry.alerts import Finding, IncidentTracker
>>> t = IncidentTracker("u", "cost_spike")
>>> f = Finding("cost_spike", "warning", 5.0, "cost_per_min", 1.0, 4.0, 60, "cost x4")
>>> [a.status for a in t.observe(f, 60.0)]
['firing']
>>> fresh = IncidentTracker("u", "cost_spike")
>>> load_tracker(fresh, Fields(dump_tracker(t), "$"))
>>> fresh.open_alert_id == t.open_alert_id, fresh.firing
(True, True)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from spendsentry.actions.commands import MAX_VERSION, CommandReason, ThrottleCommand
from spendsentry.actions.planner import ThrottlePlanner
from spendsentry.actions.scopes import ScopeState
from spendsentry.alerts import Finding, IncidentTracker, _Open
from spendsentry.budget_periods import PeriodTracker
from spendsentry.incidents import IncidentGroup, OpenIncident, make_incident_id
from spendsentry.messages.scope import Scope
from spendsentry.snapshot.fields import NUMBER, Fields, SnapshotError

_FINDING = tuple(f.name for f in dataclasses.fields(Finding))


def dump_finding(f: Finding) -> dict[str, Any]:
    return {name: getattr(f, name) for name in _FINDING}


def load_finding(f: Fields) -> Finding:
    values = {name: f.raw(name) for name in _FINDING if name in f.data}
    try:
        return Finding(**values)
    except TypeError as exc:
        raise f.fail("kind", f"not a finding: {exc}") from None


def _dump_open(o: _Open) -> dict[str, Any]:
    return {
        "alert_id": o.alert_id,
        "started_at": o.started_at,
        "severity": o.severity,
        "quiet_minutes": o.quiet_minutes,
        "peak": dump_finding(o.peak),
        "seq": o.seq,
    }


def _load_open(o: Fields) -> _Open:
    return _Open(
        o.str("alert_id"),
        o.float("started_at"),
        o.str("severity"),
        o.int("quiet_minutes"),
        load_finding(o.child("peak")),
        o.int("seq"),
    )


def dump_tracker(t: IncidentTracker) -> dict[str, Any]:
    """The open incident (if any) and the incident counter; ``resolve_after`` is configuration.

    A :class:`PeriodTracker` adds its open alert per budget period (``lanes``,
    added within version 3: absent, none is open).
    """
    o = t._open
    out: dict[str, Any] = {"seq": t._seq, "open": None if o is None else _dump_open(o)}
    # Added within version 3, only while an expected change is accepted (its
    # quiet minutes so far).
    if getattr(t, "accepted", None) is not None:
        out["accepted"] = t.accepted
    if isinstance(t, PeriodTracker):
        out["lanes"] = {period: _dump_open(lane) for period, lane in sorted(t.lanes.items())}
    return out


def load_tracker(t: IncidentTracker, f: Fields) -> None:
    t._seq = f.int("seq")
    t.accepted = f.optional_int("accepted", None)
    t._open = None if f.raw("open") is None else _load_open(f.child("open"))
    if isinstance(t, PeriodTracker) and "lanes" in f.data:
        lanes = f.child("lanes")
        t.lanes = {period: _load_open(lanes.child(period)) for period in sorted(lanes.data)}


def dump_group(g: IncidentGroup) -> dict[str, Any] | None:
    """A use case's incident: id, kinds in joining order, open alerts, when it resolved."""
    inc = g.current
    if inc is None:
        return None
    return {
        "incident_id": inc.incident_id,
        "kinds": inc.kinds,
        "open_alerts": [[alert_id, kind] for alert_id, kind in inc.open_alerts.items()],
        "resolved_at": inc.resolved_at,
    }


def load_group(g: IncidentGroup, f: Fields, trackers: dict[str, IncidentTracker]) -> None:
    """Load an incident; alerts whose tracker is gone (a kind since disabled) leave it."""
    still_open = {t.open_alert_id for t in trackers.values()}
    open_alerts = {a: k for a, k in f.rows("open_alerts", str, str) if a in still_open}
    resolved_at = f.optional_float("resolved_at")
    if resolved_at is None and not open_alerts:
        return  # every open alert was dropped with its kind: nothing to join
    g.current = OpenIncident(f.str("incident_id"), f.list("kinds", str), open_alerts, resolved_at)


def group_from_trackers(g: IncidentGroup, trackers: dict[str, IncidentTracker]) -> None:
    """Rebuild a use case's incident from its open alerts (a snapshot from before grouping).

    The incident is named after the earliest open alert, as the engine would have
    named it had it grouped them from the start.
    """
    opened = sorted(
        (t._open.started_at, kind, t._open.alert_id)
        for kind, t in trackers.items()
        if t._open is not None
    )
    if not opened:
        g.current = None
        return
    started_at, kind, _ = opened[0]
    g.current = OpenIncident(
        make_incident_id(g.use_case, int(started_at // 60), kind),
        [k for _, k, _ in opened],
        {alert_id: k for _, k, alert_id in opened},
    )


def dump_command(c: ThrottleCommand | None) -> dict[str, Any] | None:
    if c is None:
        return None
    s = c.scope
    return {
        "command_id": c.command_id,
        # The session only when set: snapshots without one stay byte-identical.
        "scope": [s.use_case, s.model, s.agent_id, *([s.session_id] if s.session_id else [])],
        "action": c.action,
        "params": c.params,
        "reason": [c.reason.alert_id, c.reason.kind, c.reason.summary],
        "issued_at": c.issued_at,
        "expires_at": c.expires_at,
        "version": c.version,
        "dry_run": c.dry_run,
        "extra": c.extra,
    }


def load_command(f: Fields) -> ThrottleCommand:
    scope, reason = f.list("scope", (str, type(None))), f.list("reason", (str, type(None)))
    if len(scope) not in (3, 4) or len(reason) != 3 or scope[0] is None or reason[2] is None:
        raise f.fail(
            "scope",
            "expected [use_case, model, agent_id(, session_id)] and [alert_id, kind, summary]",
        )
    return ThrottleCommand(
        f.str("command_id"),
        Scope(*scope),
        f.str("action"),
        f.map("params"),
        CommandReason(*reason),
        f.float("issued_at"),
        f.float("expires_at"),
        f.int("version"),
        f.bool("dry_run"),
        f.map("extra", default={}),
    )


def dump_planner(p: ThrottlePlanner) -> dict[str, Any]:
    """Per-scope versions and latest commands, snoozes, acks and counters (bounds: config)."""
    return {
        "scopes": {
            key: {
                "version": s.version,
                "changed_at": s.changed_at,
                "current": dump_command(s.current),
                "owner": s.owner,
                "severity": s.severity,
            }
            for key, s in p.scopes.states.items()
        },
        "snoozes": [[use_case, kind, until] for (use_case, kind), until in p.snoozes.items()],
        "acks": p.acks,
        "issued": p.issued,
        "ignored_versions": p.ignored_versions,
    }


def load_planner(p: ThrottlePlanner, f: Fields) -> None:
    scopes = f.child("scopes")
    ignored = 0
    for key in scopes.data:
        s = scopes.child(key)
        version = s.int("version")
        if not 0 <= version <= MAX_VERSION:
            # Forged (what a worker before versions were bounded could save):
            # the scope is forgotten, as the planner forgets such a version.
            ignored += 1
            continue
        current = None if s.raw("current") is None else load_command(s.child("current"))
        p.scopes.states[key] = ScopeState(
            version, s.float("changed_at"), current, s.optional_str("owner"), s.int("severity")
        )
    p.snoozes = {(u, k): until for u, k, until in f.rows("snoozes", str, str, NUMBER)}
    p.acks = f.map("acks", str, dict)
    p.scopes.issued = f.int("issued")
    p.scopes.ignored_versions = f.int("ignored_versions", 0) + ignored


__all__ = [
    "SnapshotError",
    "dump_group",
    "dump_planner",
    "dump_tracker",
    "group_from_trackers",
    "load_group",
    "load_planner",
    "load_tracker",
]
