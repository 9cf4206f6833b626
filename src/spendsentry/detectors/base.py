"""What every per-use-case monitor sees and returns.

A *monitor* adapts one River-style detector (a small class on a plain stream
of numbers, see the sibling modules) to the engine: it reads the metric it
needs from each closed :class:`~spendsentry.windows.MinuteSignals` and turns
the detector's score into a :class:`~spendsentry.alerts.Finding` or None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from spendsentry.alerts import Finding
from spendsentry.windows import CostWindow, MinuteSignals

if TYPE_CHECKING:
    from spendsentry.policy import Policy


@dataclass(slots=True)
class PeriodTotals:
    """Spend so far in the current UTC hour, day and month (budget periods)."""

    hour: int = -1
    day: int = -1
    month: int = -1
    cost_hour: float = 0.0
    cost_day: float = 0.0
    cost_month: float = 0.0

    def push(self, s: MinuteSignals) -> None:
        from datetime import UTC, datetime

        hour = s.minute // 60
        day = s.minute // 1440
        if hour != self.hour:
            self.hour, self.cost_hour = hour, 0.0
        if day != self.day:
            self.day, self.cost_day = day, 0.0
            dt = datetime.fromtimestamp(s.start, tz=UTC)
            month = dt.year * 12 + dt.month - 1
            if month != self.month:
                self.month, self.cost_month = month, 0.0
        self.cost_hour += s.cost
        self.cost_day += s.cost
        self.cost_month += s.cost


@dataclass(slots=True)
class UseCaseContext:
    """Read-only view of a use case's rolling state, handed to monitors."""

    use_case: str
    policy: Policy
    last_1m: CostWindow
    last_5m: CostWindow
    last_1h: CostWindow
    periods: PeriodTotals


class Monitor(Protocol):
    """Per-use-case adapter of one detector; picklable, no I/O."""

    kind: str

    def observe(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        """Learn from one closed minute; return a Finding when it is anomalous."""
        ...
