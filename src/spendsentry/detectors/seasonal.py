"""The daily shape of a use case's spend, learned over whole days, to divide out of its rate.

Office hours, shifts, a nightly job: most use cases spend on a schedule. A
detector that knows only a recent level and the last day's peak sees every
morning ramp as a spike (a quiet calendar week raised 76 false cost spikes at
the daily steps). :class:`DailyProfile` learns the *shape* of a day, the
spend of each half hour relative to that day's mean, from whole days of
history, and gives each minute a multiplicative index: dividing the rate by
it leaves the level of the day, which detectors can judge as they judge a
flat rate.

Why a shape and not a per-slot mean: the shape of a day does not change at a
weekend or on a Monday morning, its scale does. Weekends at a tenth of the
weekday load have the same office hours; a shape learned on Saturday and
Sunday still says on Monday that 08:00 brings three times the 06:00 spend,
and the detector's own level (which follows the day's scale within the hour)
carries the rest. Why whole days: a day's slots are only comparable once the
day is complete (half a Monday against half a Sunday reads as a shape change).

Slots are half hours of UTC. A use case's time zone needs no configuration:
the shape is learned where it falls, and whole- and half-hour offsets keep a
sharp 08:00 start on a slot boundary. Near a boundary the index looks
``lookahead`` minutes either way and takes the larger value, so a step that
comes a few minutes early (people arrive at 07:50) is not scored against the
quiet slot before it.

Examples
--------
Two days of a use case that spends 1 $/min in office hours (08:00-18:00)
and 0.1 $/min otherwise:

>>> p = DailyProfile()
>>> def rate(minute):
...     return 1.0 if 8 * 60 <= minute % 1440 < 18 * 60 else 0.1
>>> p.index(9 * 60), p.days
(1.0, 0)
>>> for minute in range(2 * 1440 + 1):   # a day is learned when the next begins
...     p.learn_one(rate(minute), minute)
>>> p.days
2
>>> round(p.index(2 * 1440 + 9 * 60), 2), round(p.index(2 * 1440 + 3 * 60), 2)
(2.11, 0.21)
>>> round(rate(9 * 60) / p.index(9 * 60), 3) == round(rate(3 * 60) / p.index(3 * 60), 3)
True
"""

from __future__ import annotations

MINUTES_PER_DAY = 1440


class DailyProfile:
    """Multiplicative index of each half hour of the day, learned from complete days.

    Parameters
    ----------
    slot_minutes
        Minutes per slot (divides a day).
    day_weight
        Weight of the newest day once ``1 / days`` falls below it: the shape
        follows a changed schedule within a few days and one odd day (a
        holiday) moves it by this share only.
    min_days
        Complete days of history before the index is used (1.0 until then,
        so the first days keep the level and peak logic).
    floor
        Smallest index: a slot that never spends (nights of an office tool)
        must not turn a cent into an infinite ratio.
    lookahead
        Minutes either side of a minute whose slots' largest index is used.

    A day counts once it is over, whole: minutes it did not see (a use case
    silent, or dormant, before its office opens) spent nothing. Only the
    first day is checked: if the profile began after its first slot (a
    stream or a use case that starts at 14:00), it knows half a day and
    teaches nothing.
    """

    def __init__(
        self,
        slot_minutes: int = 30,
        day_weight: float = 0.3,
        min_days: int = 1,
        floor: float = 0.02,
        lookahead: int = 15,
    ) -> None:
        if MINUTES_PER_DAY % slot_minutes:
            raise ValueError(f"slot_minutes must divide a day, got {slot_minutes}")
        self.slot_minutes = slot_minutes
        self.day_weight = day_weight
        self.min_days = min_days
        self.floor = floor
        self.lookahead = lookahead
        slots = MINUTES_PER_DAY // slot_minutes
        #: The learned shape: each slot's mean over the day's mean.
        self.shape = [1.0] * slots
        #: Complete days learned.
        self.days = 0
        #: Mean spend per minute of the days learned (same weights as the shape).
        self.mean = 0.0
        self._day: int | None = None
        #: Whether the day being accumulated is known from its first slot on.
        self._whole = False
        self._sums = [0.0] * slots

    def learn_one(self, x: float, minute: int) -> None:
        """Add the rate ``x`` of epoch minute ``minute`` (minutes arrive in order)."""
        day = minute // MINUTES_PER_DAY
        if day != self._day:
            if self._day is not None:
                self._fold()
                self._whole = True
            else:
                self._whole = minute % MINUTES_PER_DAY < self.slot_minutes
            self._day = day
        slot = (minute % MINUTES_PER_DAY) // self.slot_minutes
        self._sums[slot] += x

    def _fold(self) -> None:
        """Learn the day just completed, if it was seen and spent; then reset."""
        total = sum(self._sums)
        slots = len(self.shape)
        if self._whole and total > 0:
            # Sums over the slot's minutes, not means over the minutes seen:
            # an unseen minute spent nothing.
            day_mean = total / MINUTES_PER_DAY
            weight = max(1.0 / (self.days + 1), self.day_weight)
            for i in range(slots):
                today = self._sums[i] / self.slot_minutes / day_mean
                self.shape[i] += weight * (today - self.shape[i])
            self.mean += weight * (day_mean - self.mean)
            self.days += 1
        self._sums = [0.0] * slots

    @property
    def ready(self) -> bool:
        """Enough complete days for :meth:`index` to differ from 1."""
        return self.days >= self.min_days

    def index(self, minute: int) -> float:
        """The rate of ``minute`` relative to its day's mean, as learned; 1.0 until ready."""
        if not self.ready:
            return 1.0
        of_day = minute % MINUTES_PER_DAY
        slots = len(self.shape)
        first = (of_day - self.lookahead) // self.slot_minutes
        last = (of_day + self.lookahead) // self.slot_minutes
        best = max(self.shape[i % slots] for i in range(first, last + 1))
        return max(best, self.floor)

    def share(self, start: int, minutes: int) -> float:
        """The shape summed over ``minutes`` minutes from epoch minute ``start``; pure.

        A minute at its day's mean counts 1, so ``rate / share(recent) *
        share(rest)`` projects spend along the day's shape (``minutes`` until
        ready: a flat day).

        >>> p = DailyProfile()
        >>> p.share(0, 90)
        90.0
        >>> for minute in range(1441):      # spend only 00:00-01:00
        ...     p.learn_one(1.0 if minute % 1440 < 60 else 0.0, minute)
        >>> p.share(1440, 60), p.share(1440 + 60, 23 * 60)
        (1440.0, 0.0)
        """
        if not self.ready:
            return float(minutes)
        total = 0.0
        minute, end = start, start + minutes
        while minute < end:
            slot = (minute % MINUTES_PER_DAY) // self.slot_minutes
            slot_end = minute - minute % self.slot_minutes + self.slot_minutes
            step = min(end, slot_end) - minute
            total += self.shape[slot] * step
            minute += step
        return total
