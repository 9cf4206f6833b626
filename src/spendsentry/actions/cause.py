"""The narrowest scope that holds an alert's cause: one session, agent or model, or the use case.

A runaway agent session, one agent on a new model, or a model switch drives
most of a use case's extra spend on its own (:mod:`spendsentry.drivers`
measures it per dimension value). A throttle on the whole use case then stops
every healthy session with it; a throttle on the value that drives the excess
stops only the cause. :func:`cause_scope` picks that value when it carries at
least :data:`CAUSE_SHARE` of the excess, narrowest first (a session, then an
agent on a model, an agent, a model), and the use case otherwise: a rise spread
over the traffic, an alert with nothing above its learned level (outcomes
that stopped), or a budget, which is the use case's own.

>>> from spendsentry.alerts import Alert
>>> alert = Alert("ab" * 8, "agent_chatter", "research", "critical", "firing",
...               1793610000.0, 1793609700.0, "loop", {}, 4.0)
>>> alert.drivers = [
...     {"dimension": "session", "value": "run-7", "share": 0.93, "usual_share": 0.0},
...     {"dimension": "agent", "value": "planner", "share": 0.97, "usual_share": 0.4},
... ]
>>> cause_scope(alert).key
'research/session=run-7'
>>> alert.drivers[0]["share"] = 0.5
>>> cause_scope(alert).key, cause_usual_share(alert)
('research/agent=planner', 0.4)
>>> alert.kind = "budget_burn"
>>> cause_scope(alert).key
'research'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spendsentry.messages.scope import Scope

if TYPE_CHECKING:
    from spendsentry.alerts import Alert

#: The share of the use case's excess spend that one value must carry to be
#: throttled alone: most of it, so what stays unthrottled is the usual traffic.
CAUSE_SHARE = 0.8
#: Kinds whose throttle always takes the whole use case: a budget (and its
#: thresholds) is the use case's, whoever spends it.
USE_CASE_WIDE = frozenset({"budget_burn", "budget_threshold", "unowned_spend"})


def _causes(alert: Alert) -> dict[str, dict[str, Any]]:
    """The top driver per dimension that carries at least :data:`CAUSE_SHARE`."""
    if alert.kind in USE_CASE_WIDE:
        return {}
    found: dict[str, dict[str, Any]] = {}
    for driver in alert.drivers or ():
        if driver.get("share", 0.0) >= CAUSE_SHARE:
            found.setdefault(driver["dimension"], driver)
    return found


def cause_scope(alert: Alert) -> Scope:
    """The scope a throttle for ``alert`` takes (see the module's rule)."""
    causes = _causes(alert)
    if "session" in causes:
        return Scope(alert.use_case, session_id=causes["session"]["value"])
    agent, model = causes.get("agent"), causes.get("model")
    return Scope(
        alert.use_case,
        model=model["value"] if model else None,
        agent_id=agent["value"] if agent else None,
    )


def cause_usual_share(alert: Alert) -> float | None:
    """The narrowed scope's usual part of the use case's spend (None: the whole use case).

    A rate limit without numbers limits a scope to its usual rate: for a
    narrowed scope, the use case's baseline times this share (a runaway
    session that did not exist an hour ago gets the smallest limit).
    """
    causes = _causes(alert)
    chosen = causes.get("session") or causes.get("agent") or causes.get("model")
    if chosen is None:
        return None
    if "session" not in causes and "agent" in causes and "model" in causes:
        # An agent on one model: the pair's usual part is at most either's.
        return min(causes["agent"].get("usual_share", 0.0), causes["model"].get("usual_share", 0.0))
    return float(chosen.get("usual_share", 0.0))
