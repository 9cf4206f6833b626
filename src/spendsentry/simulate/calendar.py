"""Calendar load: each use case's rate by local hour, weekday and day of month, in its time zone.

The default simulator compresses a day into a mean-one diurnal curve; calendar
mode (``Scenario(calendar=True)``) instead gives each use case a
:class:`LoadProfile` of one of five kinds:

================  ==============================================================
office_sharp      weekdays: quiet night, a 06:00 shoulder, office hours
                  08:00-18:00 starting with a step, an evening shoulder
                  18:00-21:00; weekends at ``weekend_factor`` of that
office_gradual    the same levels, each change spread over ``ramp_hours``
service           24/7 with a mild diurnal curve (weekends slightly lower)
nightly_batch     one job a day at ``batch_hour`` for ``batch_minutes``
monthly_batch     one job on the 1st of the month only
================  ==============================================================

Any kind may add a month-start job (``monthly_minutes`` at ``monthly_hour`` on
the 1st). Hours are local: ``utc_offset`` (hours, fractions allowed) places the
curve in the use case's time zone. Outcomes follow arrivals, so the outcomes
per call, and the cost per outcome, stay flat whatever the load.

>>> office = LoadProfile("office_sharp", utc_offset=1.0)
>>> monday = datetime(2026, 11, 30, tzinfo=UTC)
>>> [round(office.factor(monday + timedelta(hours=h)), 3) for h in (3, 5, 7, 12, 19, 23)]
[0.06, 0.45, 1.5, 1.5, 0.525, 0.06]
>>> round(office.factor(monday - timedelta(hours=12)), 3)  # Sunday noon: a tenth
0.15
>>> nightly = LoadProfile("nightly_batch", batch_hour=2.0, batch_minutes=30)
>>> [nightly.factor(monday + timedelta(hours=2, minutes=m)) for m in (-1, 0, 29, 30)]
[0.0, 1.0, 1.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from math import cos, pi
from typing import Any

__all__ = [
    "CALENDAR_START",
    "DEFAULT_CALENDAR",
    "LOAD_KINDS",
    "LoadProfile",
    "load_table",
]

LOAD_KINDS = ("office_sharp", "office_gradual", "service", "nightly_batch", "monthly_batch")

#: A Saturday, so a 7-day run opens with a weekend and meets a month start on
#: its Tuesday (day 4), after the first two days of history.
CALENDAR_START = "2026-11-28T00:00:00Z"

#: Local hours where the office day changes level: (hour, level before, level after)
#: with levels named as fields of :class:`LoadProfile` ("full" is 1).
_OFFICE_STEPS = (
    (6.0, "night", "morning_shoulder"),
    (8.0, "morning_shoulder", "full"),
    (18.0, "full", "evening_shoulder"),
    (21.0, "evening_shoulder", "night"),
)


@dataclass(frozen=True, slots=True)
class LoadProfile:
    """How busy one use case is at any moment, as a multiple of its ``rate_per_min``.

    Office levels (``night``, the shoulders) are shares of ``office_level``, the
    rate multiplier during office hours. ``weekend_factor`` scales Saturdays and
    Sundays (local). ``growth_per_week`` is the slow trend on top.
    """

    kind: str
    utc_offset: float = 0.0
    weekend_factor: float = 0.1
    office_level: float = 1.5
    night: float = 0.04
    morning_shoulder: float = 0.3
    evening_shoulder: float = 0.35
    #: Width of each level change of office_gradual, centred on the change.
    ramp_hours: float = 2.0
    #: service: peak 1 + amplitude, trough 1 - amplitude, at peak_hour local.
    amplitude: float = 0.3
    peak_hour: float = 14.0
    batch_hour: float = 2.0
    batch_minutes: int = 30
    monthly_hour: float = 3.0
    monthly_minutes: int = 0
    growth_per_week: float = 0.05

    def __post_init__(self) -> None:
        if self.kind not in LOAD_KINDS:
            raise ValueError(f"unknown load kind {self.kind!r}; known: {', '.join(LOAD_KINDS)}")
        if not -12.0 <= self.utc_offset <= 14.0:
            raise ValueError("utc_offset must be within -12..+14 hours")

    def local(self, when: datetime) -> datetime:
        """``when`` on this use case's wall clock (naive)."""
        return (when.astimezone(UTC) + timedelta(hours=self.utc_offset)).replace(tzinfo=None)

    def factor(self, when: datetime) -> float:
        """Rate multiplier at ``when`` (an aware datetime), before the growth trend."""
        local = self.local(when)
        hour = local.hour + local.minute / 60.0 + local.second / 3600.0
        level = 0.0
        if self.kind in ("office_sharp", "office_gradual"):
            level = self.office_level * self._office_share(hour)
        elif self.kind == "service":
            level = 1.0 + self.amplitude * cos(2 * pi * (hour - self.peak_hour) / 24)
        elif self.kind == "nightly_batch" and _within(hour, self.batch_hour, self.batch_minutes):
            level = 1.0
        if local.weekday() >= 5:
            level *= self.weekend_factor
        # A month-start job runs whatever the weekday (the books close on the 1st).
        if local.day == 1 and _within(hour, self.monthly_hour, self.monthly_minutes):
            level = max(level, 1.0)
        return level

    def _office_share(self, hour: float) -> float:
        """Share of the office level at a local hour: steps, or ramps of ramp_hours."""
        width = self.ramp_hours if self.kind == "office_gradual" else 0.0
        share = self.night
        for at, before, after in _OFFICE_STEPS:
            delta = self._share(after) - self._share(before)
            if width > 0:
                share += delta * min(1.0, max(0.0, (hour - at) / width + 0.5))
            elif hour >= at:
                share += delta
        return share

    def _share(self, name: str) -> float:
        return 1.0 if name == "full" else float(getattr(self, name))

    def to_label(self) -> dict[str, Any]:
        """The profile as written into ``labels.json``."""
        return asdict(self)


def _within(hour: float, start_hour: float, minutes: int) -> bool:
    return minutes > 0 and start_hour <= hour < start_hour + minutes / 60.0


def load_table(profile: LoadProfile, start: datetime, minutes: int) -> list[float]:
    """Per run minute: the rate multiplier at the minute's middle, growth included.

    >>> table = load_table(LoadProfile("service", amplitude=0.0, growth_per_week=1.0),
    ...                    datetime(2026, 11, 30, tzinfo=UTC), 7 * 1440 + 1)
    >>> round(table[0], 4), round(table[-1], 4)
    (1.0, 2.0001)
    """
    out: list[float] = []
    growth = 1.0 + profile.growth_per_week
    week = 7 * 1440
    for minute in range(minutes):
        mid = start + timedelta(minutes=minute, seconds=30)
        out.append(profile.factor(mid) * growth ** ((minute + 0.5) / week))
    return out


#: The dozen use cases on a calendar: six time zones, four sharp and five gradual
#: office days, two 24/7 services, and a nightly batch with a month-start run.
DEFAULT_CALENDAR: Mapping[str, LoadProfile] = {
    "support_chat": LoadProfile("office_gradual", utc_offset=-5.0),
    "claims_triage": LoadProfile("office_sharp", utc_offset=1.0),
    "underwriting_rag": LoadProfile("office_sharp", utc_offset=0.0),
    "code_assistant": LoadProfile("office_gradual", utc_offset=-8.0),
    "research_agent": LoadProfile("office_gradual", utc_offset=1.0),
    "sales_email_drafts": LoadProfile("office_sharp", utc_offset=-5.0),
    "doc_embeddings": LoadProfile("service", utc_offset=0.0, weekend_factor=0.6, peak_hour=3.0),
    "kb_search_rag": LoadProfile("office_sharp", utc_offset=5.5),
    "ops_agent": LoadProfile("service", utc_offset=0.0, weekend_factor=0.8, peak_hour=10.0),
    "summarizer_batch": LoadProfile(
        "nightly_batch", utc_offset=1.0, weekend_factor=1.0, monthly_minutes=120
    ),
    "translation": LoadProfile("office_gradual", utc_offset=9.0),
    "lab_experiments": LoadProfile("office_gradual", utc_offset=-8.0),
}
