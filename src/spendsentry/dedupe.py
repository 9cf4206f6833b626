"""Remember recent event ids so a redelivered event is counted once.

>>> index = EventIdIndex(max_ids=3)
>>> index.seen("a", 10), index.seen("a", 10), index.seen("b", 11)
(False, True, False)
>>> index.expire(before_minute=11); len(index)
1
"""

from __future__ import annotations

from collections import OrderedDict


class EventIdIndex:
    """Event ids in arrival order, with the event-time minute each belongs to.

    Memory is bounded twice: ids of minutes older than the dedupe horizon are
    expired by the engine, and beyond ``max_ids`` the oldest arrivals go
    (counted in ``evicted``). An OrderedDict keeps both O(1): a plain dict
    would rescan its deleted front slots on every ``next(iter(...))``.
    """

    def __init__(self, max_ids: int = 2_000_000) -> None:
        self.max_ids = max_ids
        self._ids: OrderedDict[str, int] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._ids)

    def seen(self, event_id: str, minute: int) -> bool:
        """True when ``event_id`` was seen before; otherwise remember it."""
        ids = self._ids
        if event_id in ids:
            return True
        ids[event_id] = minute
        if len(ids) > self.max_ids:
            ids.popitem(last=False)
            self.evicted += 1
        return False

    def expire(self, before_minute: int) -> None:
        """Forget ids of minutes before ``before_minute``.

        Arrival order is close to event-time order; an id that arrived out of
        order lingers a little longer, which is harmless.
        """
        ids = self._ids
        while ids:
            _, minute = next(iter(ids.items()))
            if minute >= before_minute:
                break
            ids.popitem(last=False)
