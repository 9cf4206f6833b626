"""Closing an engine's minutes: every minute before a target, every live use case, in order.

What :meth:`Engine.advance <spendsentry.engine.Engine.advance>` and
:meth:`~spendsentry.engine.Engine.flush` do once they know how far to close:
each minute evicts idle use cases, closes and judges the minute of every use
case that is due (:meth:`UseCaseState.close <spendsentry.use_case.UseCaseState.close>`,
:meth:`~spendsentry.use_case.UseCaseState.detect`) and forgets old event ids;
when no use case needed a minute (all dormant or not started), the clock
jumps to the next minute holding data. Pure, like the engine: it changes only
the engine it is given.

>>> from spendsentry.engine import Engine, EngineOutput
>>> from spendsentry.events import UsageEvent
>>> engine = Engine()
>>> _ = engine.process([UsageEvent("e1", 600.0, "support", cost_usd=0.01)])
>>> out = EngineOutput()
>>> close_until(engine, 11, out)
>>> engine.closed_until, [(s.use_case, s.minute, s.llm_calls) for s in out.closed]
(11, [('support', 10, 1)])
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from spendsentry.feedback import apply_due

if TYPE_CHECKING:
    from spendsentry.engine import Engine, EngineOutput
    from spendsentry.use_case import UseCaseState


def close_until(engine: Engine, target: int, out: EngineOutput) -> None:
    """Close every minute before ``target``, jumping over minutes nobody needs."""
    assert engine.closed_until is not None
    if engine.watching_since is None:
        engine.watching_since = engine.closed_until
    while engine.closed_until < target:
        busy = close_minute(engine, engine.closed_until, out)
        engine.closed_until += 1
        engine.closing_started = True
        if not busy:
            skip_idle(engine, target)


def skip_idle(engine: Engine, target: int) -> None:
    """Every use case is dormant or not started: move to the next minute with data.

    Exact: until that minute no use case would be closed, so all the
    skipped minutes could do is evict idle use cases and forget event ids,
    which is done here once, as of the last skipped minute.
    """
    assert engine.closed_until is not None
    to = min(min(engine.open_minutes(), default=target), target)
    if to <= engine.closed_until:
        return
    last = to - 1
    _evict_idle(engine, last)
    engine.forget_event_ids(last)
    engine.closed_until = to


def close_minute(engine: Engine, minute: int, out: EngineOutput) -> bool:
    """Close ``minute`` for every live use case; False if none needed it."""
    # Operator feedback due by the end of the minute applies first (event time).
    apply_due(engine, minute, out)
    _evict_idle(engine, minute)
    stats = engine.stats
    use_cases = engine.use_cases
    dormant_after = engine.config.dormant_after_minutes
    closed = []
    for name in sorted(use_cases):
        state = use_cases[name]
        if not state.due(minute, dormant_after):
            continue
        sessions_evicted = state.sessions.evicted
        signals = state.close(minute, engine.shared_content)
        stats.evicted_sessions += state.sessions.evicted - sessions_evicted
        out.closed.append(signals)
        closed.append((state, signals))
    # Every use case closes the minute before any is judged, so each sees the
    # same fleet total (what ``unowned_spend`` compares a use case's share with),
    # whatever its name sorts as. Judging keeps the name order of the alerts.
    fleet = math.fsum(state.ctx.last_1h.cost for state in use_cases.values())  # exact: any order
    # Whether a use case whose first minute this is met a stream the engine had
    # watched a while (the fleet lens reads it once, at its first minute).
    since = engine.watching_since
    new = since is not None and minute - since >= engine.config.new_use_case_after_minutes
    for state, signals in closed:
        state.ctx.fleet_cost_1h = fleet
        state.ctx.new_use_case = new
        for alert in state.detect(signals, engine.planner, out):
            if alert.status == "firing":
                stats.alerts[alert.kind] = stats.alerts.get(alert.kind, 0) + 1
    engine.forget_event_ids(minute)
    return bool(closed)


def evict_idle(use_cases: dict[str, UseCaseState], horizon: int) -> int:
    """Drop use cases last active before minute ``horizon`` with nothing open."""
    evicted = 0
    for name in sorted(use_cases):
        state = use_cases[name]
        if state.last_active_minute < horizon and not state.open:
            del use_cases[name]
            evicted += 1
    return evicted


def _evict_idle(engine: Engine, minute: int) -> None:
    horizon = minute - engine.config.use_case_idle_minutes
    engine.stats.evicted_use_cases += evict_idle(engine.use_cases, horizon)


__all__ = ["close_minute", "close_until", "evict_idle", "skip_idle"]
