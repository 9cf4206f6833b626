"""In-flight slots: the guard's enforcement of concurrency limits.

A :class:`SlotPool` holds this replica's share of each use case's limit (see
:mod:`spendsentry.concurrency`) and counts the calls in flight, per use case
and per session. Taking a slot never waits: when the share is used up the call
is refused at once (the gateway answers 429), so a slow provider cannot pile
up waiting requests in the gateway. Thread-safe; no I/O.

A slot whose release was lost (a hook that never ran) would stay taken for
good; with ``max_hold_s`` a full share first reclaims the slots held longer
than that (counted in ``reclaimed``), so a lost release costs a slot for
``max_hold_s`` at most.

>>> pool = SlotPool({"chat": ConcurrencyLimit(2)})
>>> a, b = pool.take("chat"), pool.take("chat")
>>> pool.take("chat") is None, pool.in_flight("chat")
(True, 2)
>>> pool.give_back(a), pool.give_back(a), pool.in_flight("chat")
(True, False, 1)
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from spendsentry.concurrency import ConcurrencyLimit, replica_share

__all__ = ["Refusal", "Slot", "SlotPool"]


@dataclass(frozen=True, slots=True)
class Slot:
    """One call in flight; give it back (``ThrottleGuard.release``) when the call ends."""

    use_case: str
    session_id: str | None
    number: int
    taken_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a slot was refused: ``scope`` is "use_case" or "session"."""

    scope: str
    share: int
    limit: int

    @property
    def reason(self) -> str:
        where = "" if self.scope == "use_case" else " per session"
        across = f" (this replica's share of {self.limit})" if self.share != self.limit else ""
        return f"concurrency limit{where}: {self.share} in flight{across}"


class SlotPool:
    """This replica's shares of ``limits`` and the calls holding them.

    ``replicas`` is how many gateway replicas share each limit, ``replica_index``
    this one's place among them (0-based; None when unknown: see
    :func:`~spendsentry.concurrency.replica_share`). Use cases without a limit
    get a slot always (counted, so ``in_flight`` tells the load).
    """

    def __init__(
        self,
        limits: Mapping[str, ConcurrencyLimit] | None = None,
        *,
        replicas: int = 1,
        replica_index: int | None = None,
        max_hold_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = dict(limits or {})
        self.max_hold_s = max_hold_s
        self.clock = clock
        self.replicas = replicas
        self.replica_index = replica_index
        replica_share(1, replicas, replica_index)  # checks replicas and index
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._live: dict[int, Slot] = {}
        self._use_cases: Counter[str] = Counter()
        self._sessions: Counter[tuple[str, str]] = Counter()
        #: Refusals by scope ("use_case", "session").
        self.refused: Counter[str] = Counter()
        #: Slots freed because they were held longer than ``max_hold_s``.
        self.reclaimed = 0

    def share(self, limit: int | None) -> int | None:
        """This replica's share of ``limit`` (None: unbounded)."""
        if limit is None:
            return None
        return replica_share(limit, self.replicas, self.replica_index)

    def take(self, use_case: str, session_id: str | None = None) -> Slot | None:
        """A slot for one call, or None when a share is used up."""
        return self._take(use_case, session_id)[0]

    def take_or_refusal(
        self, use_case: str, session_id: str | None = None
    ) -> tuple[Slot | None, Refusal | None]:
        """A slot for one call, or why not."""
        return self._take(use_case, session_id)

    def _take(self, use_case: str, session_id: str | None) -> tuple[Slot | None, Refusal | None]:
        limit = self.limits.get(use_case, ConcurrencyLimit())
        whole, per_session = (
            self.share(limit.max_in_flight),
            self.share(limit.max_in_flight_per_session),
        )
        with self._lock:
            now = self.clock()
            if self._full(use_case, session_id, whole, per_session):
                self._reclaim(now)
            if whole is not None and self._use_cases[use_case] >= whole:
                self.refused["use_case"] += 1
                return None, Refusal("use_case", whole, int(limit.max_in_flight or 0))
            session = (use_case, session_id) if session_id is not None else None
            if (
                session is not None
                and per_session is not None
                and self._sessions[session] >= per_session
            ):
                self.refused["session"] += 1
                limit_s = int(limit.max_in_flight_per_session or 0)
                return None, Refusal("session", per_session, limit_s)
            slot = Slot(use_case, session_id, next(self._numbers), now)
            self._live[slot.number] = slot
            self._use_cases[use_case] += 1
            if session is not None:
                self._sessions[session] += 1
            return slot, None

    def _full(
        self, use_case: str, session_id: str | None, whole: int | None, per_session: int | None
    ) -> bool:
        if whole is not None and self._use_cases[use_case] >= whole:
            return True
        if session_id is None or per_session is None:
            return False
        return self._sessions[(use_case, session_id)] >= per_session

    def _reclaim(self, now: float) -> None:
        """Free the slots held longer than ``max_hold_s`` (lost releases); under the lock."""
        if self.max_hold_s is None:
            return
        for slot in [s for s in self._live.values() if now - s.taken_at > self.max_hold_s]:
            self._free(slot)
            self.reclaimed += 1

    def give_back(self, slot: Slot) -> bool:
        """Free ``slot``; False when it was freed already (a second release is harmless)
        or is not this pool's."""
        with self._lock:
            # Identity, not equality: another pool's slot may carry the same number.
            if self._live.get(slot.number) is not slot:
                return False
            self._free(slot)
            return True

    def _free(self, slot: Slot) -> None:
        del self._live[slot.number]
        _decrement(self._use_cases, slot.use_case)
        if slot.session_id is not None:
            _decrement(self._sessions, (slot.use_case, slot.session_id))

    def in_flight(self, use_case: str | None = None, session_id: str | None = None) -> int:
        """Calls in flight: all, of ``use_case``, or of one of its sessions."""
        with self._lock:
            if use_case is None:
                return len(self._live)
            if session_id is None:
                return self._use_cases[use_case]
            return self._sessions[(use_case, session_id)]


def _decrement(counter: Counter[Any], key: Any) -> None:
    """One less of ``key``; the entry goes at zero (sessions come and go)."""
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
