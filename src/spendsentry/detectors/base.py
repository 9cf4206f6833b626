"""What every per-use-case monitor sees and returns, and the persistence rule they share.

A *monitor* (one alert kind, see :mod:`spendsentry.detectors.kinds`) adapts
River-style detectors (small classes on plain streams of numbers, see the
sibling modules) to the engine: it reads the metric it needs from each closed
:class:`~spendsentry.windows.MinuteSignals` and turns the detector's score into
a :class:`~spendsentry.alerts.Finding` or None.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from spendsentry.alerts import Finding
from spendsentry.detectors.seasonal import DailyProfile
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
    #: The daily shape of its spend (one per use case: cost spikes divide it
    #: out, budgets project the rest of the day with it).
    daily: DailyProfile = field(default_factory=DailyProfile)
    #: What every use case of the engine (this one included) spent over the
    #: last hour, as of this minute; 0 when nobody told it (a lone monitor).
    #: Set by the engine before each minute is judged (``minutes.close_minute``):
    #: derived from the use cases' own windows, so a snapshot need not hold it.
    fleet_cost_1h: float = 0.0
    #: Whether the engine had watched the stream a while when this minute closed
    #: (``EngineConfig.new_use_case_after_minutes``): a use case whose first
    #: minute says so is new, and judged against the fleet in its first hours.
    #: Set by the engine before each minute is judged.
    new_use_case: bool = False


class Monitor(Protocol):
    """Per-use-case adapter of one detector; picklable, no I/O."""

    kind: str

    def observe(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        """Learn from one closed minute; return a Finding when it is anomalous."""
        ...


class Persistence:
    """Counts consecutive anomalous minutes; remembers when the streak began.

    A monitor fires only once a shift has held ``needed`` minutes, so one odd
    minute never pages anyone; once confirmed it stays confirmed while the
    minutes stay anomalous.

    >>> p = Persistence(2)
    >>> p.update(True, 60.0), p.update(True, 120.0), p.onset
    (False, True, 60.0)
    >>> p.update(False, 180.0), p.streak
    (False, 0)
    """

    def __init__(self, needed: int) -> None:
        self.needed = needed
        self.streak = 0
        self.onset: float | None = None
        self.active = False

    def rebase(self) -> None:
        """Operator feedback (expected change): forget the streak."""
        self.streak = 0
        self.onset = None
        self.active = False

    def update(self, anomalous: bool, minute_start: float) -> bool:
        if not anomalous:
            self.streak = 0
            self.active = False
            return False
        if self.streak == 0:
            self.onset = minute_start
        self.streak += 1
        # Once confirmed, stay confirmed while anomalous (no re-confirmation).
        self.active = self.active or self.streak >= self.needed
        return self.active
