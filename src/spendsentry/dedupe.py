"""Remember recent event ids so a redelivered event is counted once.

>>> index = EventIdIndex(max_ids=3)
>>> index.seen("a", 10), index.seen("a", 10), index.seen("b", 11)
(False, True, False)
>>> index.expire(before_minute=11); len(index)
1
"""

from __future__ import annotations

from array import array

from xxhash import xxh3_64_intdigest


class EventIdIndex:
    """Hashes of recent event ids, bucketed by the event-time minute of each.

    Memory is bounded twice: minutes older than the dedupe horizon are expired
    by the engine, and beyond ``max_ids`` the oldest minutes' ids go (counted
    in ``evicted``). Each minute keeps its hashes in a flat ``array('Q')``, so
    a state snapshot of two million ids is a 16 MB copy of bytes
    (:func:`spendsentry.snapshot.engine.dump_dedupe`), not two million
    strings: the worker snapshots every few seconds, and encoding the ids one
    by one stalled its consume loop for over a second at 10k events/s. The set
    answers membership; it is rebuilt from the arrays on restore.

    The hash is xxh3-64 of the id's UTF-8 bytes: Python's own ``hash`` of a
    string changes per process, so it cannot be kept in a snapshot. Two ids
    colliding among two million has a chance of about 1e-7; the cost would be
    one event counted as a duplicate.

    >>> index = EventIdIndex()
    >>> index.seen("\\ud800", 1), index.seen("\\ud800", 1)  # a lone surrogate too
    (False, True)
    """

    def __init__(self, max_ids: int = 2_000_000) -> None:
        self.max_ids = max_ids
        self._hashes: set[int] = set()
        self._minutes: dict[int, array[int]] = {}
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._hashes)

    def seen(self, event_id: str, minute: int) -> bool:
        """True when ``event_id`` was seen before; otherwise remember it."""
        # surrogatepass: a JSON "\\ud800" escape decodes to a lone surrogate.
        h = xxh3_64_intdigest(event_id.encode("utf-8", "surrogatepass"))
        hashes = self._hashes
        if h in hashes:
            return True
        hashes.add(h)
        bucket = self._minutes.get(minute)
        if bucket is None:
            bucket = self._minutes[minute] = array("Q")
        bucket.append(h)
        if len(hashes) > self.max_ids:
            self._evict(len(hashes) - self.max_ids)
        return False

    def _evict(self, count: int) -> None:
        """Forget at least ``count`` ids from the oldest minutes.

        A chunk of 1% of the limit at a time keeps eviction amortised O(1)
        per id (trimming the front of an array copies the rest of it).
        """
        count = max(count, self.max_ids // 100, 1)
        hashes, minutes = self._hashes, self._minutes
        while count > 0 and minutes:
            oldest = min(minutes)
            bucket = minutes[oldest]
            drop = bucket[:count] if count < len(bucket) else minutes.pop(oldest)
            if drop is not bucket:
                del bucket[:count]
            for h in drop:
                hashes.discard(h)
            count -= len(drop)
            self.evicted += len(drop)

    def expire(self, before_minute: int) -> None:
        """Forget ids of minutes before ``before_minute``."""
        hashes, minutes = self._hashes, self._minutes
        for minute in [m for m in minutes if m < before_minute]:
            for h in minutes.pop(minute):
                hashes.discard(h)
