"""Feeding closed minutes to one monitor the way the engine does (tests only)."""

from __future__ import annotations

from collections.abc import Iterable

from spendsentry.alerts import Finding
from spendsentry.detectors.base import Monitor, PeriodTotals, UseCaseContext
from spendsentry.policy import Policy, PolicySet
from spendsentry.windows import CostWindow, MinuteSignals


def context(use_case: str, policy: Policy | None = None) -> UseCaseContext:
    policy = policy or PolicySet.empty().for_use_case(use_case)
    return UseCaseContext(
        use_case, policy, CostWindow(1), CostWindow(5), CostWindow(60), PeriodTotals()
    )


def feed(
    monitor: Monitor, minutes: Iterable[MinuteSignals], ctx: UseCaseContext
) -> list[tuple[int, Finding]]:
    """(minute, finding) for every minute the monitor found anomalous."""
    found = []
    for s in minutes:
        for w in (ctx.last_1m, ctx.last_5m, ctx.last_1h):
            w.push(s)
        ctx.periods.push(s)
        ctx.daily.learn_one(s.cost, s.minute)
        if (f := monitor.observe(s, ctx)) is not None:
            found.append((s.minute, f))
    return found
