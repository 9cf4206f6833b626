"""Event-time watermarks over the partitions a worker consumes.

Each input partition is read in its own order, so each has its own notion of
"how far event time has got": the newest event time seen on it. The worker can
only close a minute once *every* partition that may still send events for it
has moved past it, so the engine watermark is the minimum over partitions,
minus the allowed lateness (applied by the caller).

A partition holds the watermark back while it is *active*: it has a known
backlog (``pending``: data on the broker not consumed yet), or it delivered
data (or was assigned) less than ``idle_after_s`` seconds of wall time ago.
A partition that has been silent for longer stops holding the others back: a
quiet use case must not freeze alerting for everybody on the worker. An active
partition that has not delivered anything yet holds event time at ``-inf``: its
first events may be the oldest of all.

>>> w = PartitionWatermarks(idle_after_s=10.0)
>>> w.assign([0, 1], now=0.0)
>>> w.observe(0, 1000.0, now=0.0)
>>> w.current(now=1.0)                  # partition 1 may still send old events
-inf
>>> w.observe(1, 400.0, now=1.0)
>>> w.current(now=5.0)                  # the slow partition holds event time back
400.0
>>> w.observe(0, 1300.0, now=12.0)
>>> w.current(now=12.0)                 # partition 1 has been idle for 11 s
1300.0
>>> w.current(now=12.0, pending={1})    # ... unless it has a backlog
1300.0
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Iterable


class PartitionWatermarks:
    """Newest event time and last-data wall time per assigned partition.

    Parameters
    ----------
    idle_after_s : float
        Wall-clock seconds without data after which a partition with no known
        backlog no longer holds the watermark back.
    """

    def __init__(self, idle_after_s: float = 30.0) -> None:
        self.idle_after_s = idle_after_s
        #: partition -> newest event time seen on it.
        self.max_ts: dict[Hashable, float] = {}
        #: partition -> wall time of the last data (or of the assignment).
        self.last_seen: dict[Hashable, float] = {}
        self._high = -math.inf

    def assign(self, partitions: Iterable[Hashable], *, now: float) -> None:
        """Start tracking newly assigned partitions (active for ``idle_after_s``)."""
        for p in partitions:
            self.last_seen.setdefault(p, now)

    def touch(self, *, now: float) -> None:
        """Count every partition as just heard from (see :class:`PartitionSet`:
        after a silence of the whole worker, nobody has been idle *while the
        others talked*)."""
        for p in self.last_seen:
            self.last_seen[p] = now

    def forget(self, partitions: Iterable[Hashable]) -> None:
        """Drop partitions this worker no longer owns (after a rebalance)."""
        for p in partitions:
            self.max_ts.pop(p, None)
            self.last_seen.pop(p, None)

    def observe(self, partition: Hashable, event_ts: float, *, now: float) -> None:
        """Record that ``partition`` delivered events up to ``event_ts`` at ``now``."""
        if event_ts > self.max_ts.get(partition, -math.inf):
            self.max_ts[partition] = event_ts
        self.last_seen[partition] = now

    def current(
        self,
        *,
        now: float,
        pending: Collection[Hashable] = (),
        idle_floor: float = -math.inf,
    ) -> float:
        """The event-time watermark (before lateness); it never moves backwards.

        Parameters
        ----------
        now : float
            Wall-clock time.
        pending : collection of partitions
            Partitions known to have unconsumed data: they never count as idle.
        idle_floor : float
            Event time reached elsewhere (the worker's other partitions). When
            every partition here is idle, event time moves at least this far, so
            a quiet partition's minutes still close and its incidents resolve.

        Returns
        -------
        float
            The minimum newest-event-time over the active partitions; when none
            is active, the maximum over all and ``idle_floor`` (nothing is in
            flight that could be held back); ``-inf`` while an active partition
            has sent nothing.

        Examples
        --------
        >>> w = PartitionWatermarks(idle_after_s=10.0)
        >>> w.observe("usage:0", 500.0, now=0.0)
        >>> w.current(now=5.0, idle_floor=900.0)    # active: its own event time
        500.0
        >>> w.current(now=20.0, idle_floor=900.0)   # idle: follows the others
        900.0
        """
        active = [
            self.max_ts.get(p, -math.inf)
            for p, seen in self.last_seen.items()
            if p in pending or now - seen < self.idle_after_s
        ]
        candidate = min(active) if active else max([*self.max_ts.values(), idle_floor])
        # A partition coming back from idleness must not pull event time back:
        # minutes already closed stay closed, its old events are late.
        self._high = max(self._high, candidate)
        return self._high

    def active_min(self, *, now: float, pending: Collection[Hashable] = ()) -> float | None:
        """The least newest-event-time over the active partitions (None: all idle).

        >>> w = PartitionWatermarks(idle_after_s=10.0)
        >>> w.assign(["a"], now=0.0)
        >>> w.active_min(now=1.0), w.active_min(now=11.0)
        (-inf, None)
        """
        active = [
            self.max_ts.get(p, -math.inf)
            for p, seen in self.last_seen.items()
            if p in pending or now - seen < self.idle_after_s
        ]
        return min(active) if active else None

    def newest(self) -> float:
        """The newest event time seen on any partition here (``-inf`` if none)."""
        return max(self.max_ts.values(), default=-math.inf)

    def snapshot(self) -> dict[Hashable, float]:
        """What a state snapshot keeps: the newest event time per partition."""
        return dict(self.max_ts)

    def restore(self, max_ts: dict[Hashable, float], *, now: float) -> None:
        """Reload :meth:`snapshot` output; restored partitions count as active."""
        self.max_ts = dict(max_ts)
        self.last_seen = dict.fromkeys(max_ts, now)
        self._high = -math.inf
