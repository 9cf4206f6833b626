"""How far event time has got: the one watermark strategy of replay and the worker.

Each *source* (a Kafka input partition, or replay's input stream) is read in its
own order, so each has its own newest event time. An :class:`EventClock` keeps
it per source, with the wall time of the source's last data, and
:func:`event_time` merges clocks into the event time a stream has reached: the
least newest event time over the *active* sources (a source holds event time
back while it has a known backlog or delivered data less than ``idle_after_s``
seconds of wall time ago), or, when all are idle, the newest of all. The engine
closes a minute once that event time, minus its allowed lateness, has passed it
(:meth:`spendsentry.engine.Engine.advance`): lateness is the engine's, the
clock says only where the stream is.

One record cannot drag a source's event time forward: a record more than
``confirm_jump_s`` ahead of the source's newest event time is held as a
candidate until a second one confirms the jump (a producer with a broken clock
a year ahead would otherwise make every later record ``late``).

>>> c = EventClock(idle_after_s=10.0)
>>> c.assign([0, 1], now=0.0)
>>> c.observe(0, [1000.0], now=0.0)
>>> event_time([c], now=1.0)            # source 1 may still send old events
-inf
>>> c.observe(1, [400.0], now=1.0)
>>> event_time([c], now=5.0)            # the slow source holds event time back
400.0
>>> c.observe(0, [1300.0], now=12.0)
>>> event_time([c], now=12.0)           # source 1 has been idle for 11 s
1300.0
>>> c.observe(0, [9e9], now=12.0)       # one record far ahead: not yet
>>> c.newest()
1300.0
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Iterable


class EventClock:
    """Newest (confirmed) event time and last-data wall time per source.

    Parameters
    ----------
    idle_after_s : float
        Wall-clock seconds without data after which a source with no known
        backlog no longer holds event time back.
    confirm_jump_s : float
        A record this far ahead of its source's newest event time moves it only
        once a second record confirms the jump.
    """

    def __init__(self, idle_after_s: float = 30.0, confirm_jump_s: float = 3_600.0) -> None:
        self.idle_after_s = idle_after_s
        self.confirm_jump_s = confirm_jump_s
        #: source -> newest (confirmed) event time seen on it.
        self.max_ts: dict[Hashable, float] = {}
        #: source -> wall time of the last data (or of the assignment).
        self.last_seen: dict[Hashable, float] = {}
        #: source -> an event time far ahead, waiting for a second record.
        self.candidates: dict[Hashable, float] = {}

    def assign(self, sources: Iterable[Hashable], *, now: float) -> None:
        """Start tracking newly assigned sources (active for ``idle_after_s``)."""
        for s in sources:
            self.last_seen.setdefault(s, now)

    def touch(self, *, now: float) -> None:
        """Count every source as just heard from (after a silence of the whole
        worker, nobody has been idle *while the others talked*)."""
        for s in self.last_seen:
            self.last_seen[s] = now

    def forget(self, sources: Iterable[Hashable]) -> None:
        """Drop sources this worker no longer owns (after a rebalance)."""
        for s in sources:
            self.max_ts.pop(s, None)
            self.last_seen.pop(s, None)
            self.candidates.pop(s, None)

    def observe(self, source: Hashable, timestamps: Iterable[float], *, now: float) -> None:
        """Record that ``source`` delivered events with ``timestamps`` (in order) at ``now``.

        >>> c = EventClock(confirm_jump_s=60.0)
        >>> c.observe("s", [0.0, 30.0, 500.0], now=0.0)
        >>> c.newest(), c.candidates
        (30.0, {'s': 500.0})
        >>> c.observe("s", [510.0], now=1.0)   # the second record confirms the jump
        >>> c.newest(), c.candidates
        (510.0, {})
        """
        top = self.max_ts.get(source, -math.inf)
        candidate = self.candidates.get(source)
        jump = self.confirm_jump_s
        for ts in timestamps:
            if ts <= top:
                continue
            if ts - top <= jump or top == -math.inf:
                top = ts
            elif candidate is None:
                candidate = ts
            else:
                low, high = (candidate, ts) if candidate <= ts else (ts, candidate)
                top, candidate = (high, None) if high - low <= jump else (low, high)
        if top > -math.inf:
            self.max_ts[source] = top
        if candidate is None:
            self.candidates.pop(source, None)
        else:
            self.candidates[source] = candidate
        self.last_seen[source] = now

    def active_min(self, *, now: float, pending: Collection[Hashable] = ()) -> float | None:
        """The least newest event time over the active sources (None: all idle).

        >>> c = EventClock(idle_after_s=10.0)
        >>> c.assign(["a"], now=0.0)
        >>> c.active_min(now=1.0), c.active_min(now=11.0)
        (-inf, None)
        """
        active = [
            self.max_ts.get(s, -math.inf)
            for s, seen in self.last_seen.items()
            if s in pending or now - seen < self.idle_after_s
        ]
        return min(active) if active else None

    def newest(self) -> float:
        """The newest event time seen on any source here (``-inf`` if none)."""
        return max(self.max_ts.values(), default=-math.inf)

    def snapshot(self) -> dict[Hashable, float]:
        """What a state snapshot keeps: the newest event time per source."""
        return dict(self.max_ts)

    def restore(self, max_ts: dict[Hashable, float], *, now: float) -> None:
        """Reload :meth:`snapshot` output; restored sources count as active."""
        self.max_ts = dict(max_ts)
        self.last_seen = dict.fromkeys(max_ts, now)
        self.candidates = {}


def event_time(
    clocks: Iterable[EventClock], *, now: float, pending: Collection[Hashable] = ()
) -> float:
    """The event time a stream read through ``clocks`` has reached (before lateness).

    The least newest event time over every active source of every clock; when
    all are idle, the newest event time seen (nothing is in flight that could be
    held back); ``-inf`` while an active source has sent nothing. Callers keep
    it monotonic: minutes already closed stay closed.

    >>> a, b = EventClock(idle_after_s=10.0), EventClock(idle_after_s=10.0)
    >>> a.observe("a", [500.0], now=0.0)
    >>> b.observe("b", [900.0], now=0.0)
    >>> event_time([a, b], now=5.0), event_time([a, b], now=5.0, pending={"a"})
    (500.0, 500.0)
    >>> event_time([a, b], now=20.0)         # both idle: the newest
    900.0
    """
    clocks = list(clocks)
    mins = [m for c in clocks if (m := c.active_min(now=now, pending=pending)) is not None]
    if mins:
        return min(mins)
    return max((c.newest() for c in clocks), default=-math.inf)


__all__ = ["EventClock", "event_time"]
