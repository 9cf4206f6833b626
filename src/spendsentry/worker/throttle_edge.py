"""Throttle commands at the publishing edge: from event time to the wall clock.

The engine and its :class:`~spendsentry.actions.ThrottlePlanner` are pure: a
command's ``issued_at`` and ``expires_at`` are *event time* (the alert's
``detected_at`` plus the policy's duration), so ``spendsentry replay`` writes
the same commands as the worker. Gateways expire commands by their *wall
clock*. The two agree only while the worker is live; when event time lags the
wall clock (the demo, a worker catching up after an outage, history produced
into a topic) an event-time command reaches a gateway already expired.

So the worker, and only the worker (replay stays in event time), does two
things where it signs and publishes:

1. **Re-stamp.** Times move onto the wall clock by the worker's current lag
   (``now`` minus the worker's event time): ``issued_at = min(now, t + lag)``
   and ``expires_at = issued_at + duration``. A live worker publishes
   ``issued_at`` ~ now and the full duration, as before; a command published
   late keeps the time it has left at the head of the stream, and one that has
   already run out there arrives expired (a gateway then drops the scope's
   command, which is what a live run would leave it with). The event-time
   values travel as ``event_time_issued_at`` / ``event_time_expires_at``;
   ``command_id`` and ``version`` do not change.
2. **Hold while catching up.** While the worker is behind (records wait on an
   assigned partition *and* its event time is more than ``catch_up_after_s``
   behind the wall clock), nothing is published: the scopes that changed are
   remembered, and once it has caught up (or after ``max_hold_s``, so a worker
   that never catches up still throttles) the *latest* command of each such
   scope is published, re-stamped against the event time reached by then. A
   block whose release is already in the backlog is never published; its
   release is (harmless, and versions on the topic stay monotonic).

Both conditions are needed: the demo and a replayed day run far behind the
wall clock with no backlog (commands go out at once), and a busy live worker
always has a few records waiting with current event time.

Held commands are not in the snapshot: what to publish is derived from the
engines' planners (their latest command per scope) and the versions already
published, and :meth:`CommandEdge.revisit` marks a restored engine's recent
scopes again, so a crash between a snapshot and the flush loses nothing.

>>> from spendsentry.actions.commands import CommandReason, Scope, ThrottleCommand
>>> cmd = ThrottleCommand.build(Scope("support_chat"), "block", {}, version=1,
...     issued_at=1000.0, expires_at=4600.0, reason=CommandReason(None, None, "x"))
>>> doc = wall_clock_body(cmd, event_time=1060.0, now=90_060.0)  # 89,000 s behind
>>> doc["issued_at"], doc["expires_at"], doc["event_time_issued_at"]
('1970-01-02T01:00:00.000Z', '1970-01-02T02:00:00.000Z', '1970-01-01T00:16:40.000Z')
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from spendsentry.actions import ThrottleCommand, ThrottleKeys
from spendsentry.timeutil import format_ts

__all__ = ["CATCH_UP_AFTER_S", "MAX_HOLD_S", "CommandEdge", "wall_clock_body", "wall_clock_doc"]

#: Event time this far behind the wall clock, with records waiting, is catching up.
CATCH_UP_AFTER_S = 300.0
#: A worker that stays behind still publishes its latest commands this often.
MAX_HOLD_S = 60.0
#: Scopes whose published version is remembered (oldest forgotten first).
MAX_REMEMBERED = 200_000


def wall_clock_body(cmd: ThrottleCommand, *, event_time: float, now: float) -> dict[str, Any]:
    """``cmd``'s message (unsigned) with its times on the wall clock (see the module doc).

    ``event_time`` is the worker's event time now (``-inf``: none yet, taken as live).
    """
    duration = cmd.expires_at - cmd.issued_at
    lag = now - event_time if math.isfinite(event_time) else now - cmd.issued_at
    # Never in the future: an operator's release carries its wall-clock time.
    issued = min(now, cmd.issued_at + lag)
    body = cmd.body()
    body["event_time_issued_at"] = body["issued_at"]
    body["event_time_expires_at"] = body["expires_at"]
    body["issued_at"] = format_ts(issued)
    body["expires_at"] = format_ts(issued + duration)
    return body


def wall_clock_doc(
    cmd: ThrottleCommand, keys: ThrottleKeys, *, event_time: float, now: float
) -> dict[str, Any]:
    """The message the worker publishes: re-stamped, then signed with ``keys``."""
    body = wall_clock_body(cmd, event_time=event_time, now=now)
    body["signature"] = keys.sign(body)
    return body


class CommandEdge:
    """Which scopes have a command to publish, and when to publish it.

    Parameters
    ----------
    catch_up_after_s, max_hold_s
        See the module doc.
    """

    def __init__(
        self, *, catch_up_after_s: float = CATCH_UP_AFTER_S, max_hold_s: float = MAX_HOLD_S
    ) -> None:
        self.catch_up_after_s = catch_up_after_s
        self.max_hold_s = max_hold_s
        #: Scope keys whose latest command may not be published yet (in order).
        self.waiting: dict[str, None] = {}
        #: Highest version published (or known on the topic) per scope key.
        self.published: dict[str, int] = {}
        #: Commands superseded in the same window and never published.
        self.skipped = 0
        self._offered = 0
        self._held_since: float | None = None

    def offer(self, commands: Iterable[ThrottleCommand], *, now: float) -> None:
        """Commands the engines just issued (only their scopes are remembered)."""
        for cmd in commands:
            self.waiting[cmd.scope_key] = None
            self._offered += 1
        if self.waiting and self._held_since is None:
            self._held_since = now

    def revisit(self, latest: Iterable[ThrottleCommand], *, now: float) -> None:
        """A restored (or returning) engine's recent commands: publish any not yet out."""
        for cmd in latest:
            if cmd.version > self.published.get(cmd.scope_key, 0):
                self.waiting[cmd.scope_key] = None
        if self.waiting and self._held_since is None:
            self._held_since = now

    def known(self, versions: Mapping[str, int]) -> None:
        """Versions already on the throttle topic (read at start-up)."""
        for key, version in versions.items():
            self._remember(key, version)

    def behind(self, *, lagging: bool, event_time: float, now: float) -> bool:
        """Catching up: records wait and event time is far behind the wall clock."""
        return lagging and math.isfinite(event_time) and now - event_time > self.catch_up_after_s

    def due(self, *, lagging: bool, event_time: float, now: float) -> bool:
        """Whether the waiting scopes are to be published now."""
        if not self.waiting:
            return False
        if not self.behind(lagging=lagging, event_time=event_time, now=now):
            return True
        return self._held_since is not None and now - self._held_since >= self.max_hold_s

    def take(self, latest: Callable[[str], ThrottleCommand | None]) -> list[ThrottleCommand]:
        """The latest command of each waiting scope that is not published yet.

        ``latest(scope_key)`` is the owning engine's latest command there (None:
        not owned here any more, or released from the command line, which
        published its own release).
        """
        out: list[ThrottleCommand] = []
        for key in self.waiting:
            cmd = latest(key)
            if cmd is not None and cmd.version > self.published.get(key, 0):
                out.append(cmd)
        self.skipped += max(0, self._offered - len(out))
        self.waiting.clear()
        self._offered = 0
        self._held_since = None
        return out

    def mark_published(self, cmd: ThrottleCommand) -> None:
        self._remember(cmd.scope_key, cmd.version)

    def _remember(self, key: str, version: int) -> None:
        published = self.published
        if version > published.get(key, 0):
            published.pop(key, None)
            published[key] = version
        while len(published) > MAX_REMEMBERED:
            del published[next(iter(published))]
