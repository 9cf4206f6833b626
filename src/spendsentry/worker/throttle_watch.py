"""The throttle commands in force at the gateways, whoever issued them.

A worker's engines know the commands they issued. The gateways enforce what is
on ``ai.throttle``: those, plus commands of other workers (their partitions'
use cases) and of operators (``spendsentry throttle release``, scripts that sign
their own). :class:`ThrottleWatch` follows the topic as a gateway does (verified
commands only, newest version per scope) so the worker's
``spendsentry_active_throttles`` and ``/status`` count them all.
:func:`in_force` merges the two views by scope key:

* a topic command in force that is not one of the engines' (another scope, or a
  newer version of an engine's scope) is *elsewhere*;
* an engine's command whose scope has a newer version on the topic is superseded.

>>> from spendsentry.actions.commands import CommandReason, Scope, ThrottleCommand
>>> mine = ThrottleCommand.build(Scope("a"), "block", {}, version=2, issued_at=0.0,
...     expires_at=900.0, reason=CommandReason(None, None, "x"))
>>> topic = {"a": {"scope_key": "a", "version": 2, "action": "block",
...                "expires_at": "2026-01-01T00:00:00Z"},
...          "b": {"scope_key": "b", "version": 1, "action": "limit_rate",
...                "expires_at": "2999-01-01T00:00:00Z"}}
>>> count, elsewhere = in_force([mine], topic, now=1.8e9)
>>> count, [d["scope_key"] for d in elsewhere]
(2, ['b'])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from spendsentry.actions.commands import ThrottleCommand
from spendsentry.actions.signing import ThrottleKeys
from spendsentry.actions.throttle_topic import ThrottleTopic
from spendsentry.kafka.compacted import CompactedFollower
from spendsentry.kafka.security import KafkaSecurity
from spendsentry.timeutil import parse_ts

__all__ = ["ThrottleWatch", "in_force"]


class ThrottleWatch:
    """Follows ``topic`` for the newest verified command per scope (none without keys).

    ``on_change`` is called after each record (in the follower's task), so a
    gauge can be brought up to date when another worker or an operator publishes.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        keys: ThrottleKeys,
        *,
        security: KafkaSecurity | None = None,
        on_change: Callable[[], object] = lambda: None,
    ) -> None:
        self.keys = keys
        self.on_change = on_change
        self.found = ThrottleTopic()
        self.follower = CompactedFollower(
            bootstrap, topic, self._take, security=security, name="throttle watch"
        )

    def _take(self, value: bytes | None) -> None:
        self.found.take(value, self.keys)
        self.on_change()

    @property
    def latest(self) -> dict[str, dict[str, Any]]:
        """The newest verified command per scope key read so far."""
        return self.found.latest

    async def start(self) -> None:
        """Follow the topic in the running event loop (not without keys: nothing verifies)."""
        if self.keys.accepted:
            await self.follower.start("spendsentry-throttle-watch")

    async def stop(self) -> None:
        await self.follower.stop()


def in_force(
    own: Iterable[ThrottleCommand], topic: Mapping[str, Mapping[str, Any]], *, now: float
) -> tuple[int, list[dict[str, Any]]]:
    """How many scopes are throttled, counting ``own`` (the engines' commands in
    force) and the ``topic``'s commands in force at ``now`` (wall clock); and the
    topic's commands that are not the engines' (see the module doc)."""
    mine = {c.scope_key: c for c in own}
    elsewhere: list[dict[str, Any]] = []
    superseded = 0
    for key, doc in sorted(topic.items()):
        version = int(doc["version"])
        held = mine.get(key)
        newer = held is None or version > held.version
        if held is not None and version > held.version:
            superseded += 1
        if newer and doc["action"] != "release" and _expires(doc) > now:
            elsewhere.append(dict(doc))
    return len(mine) - superseded + len(elsewhere), elsewhere


def _expires(doc: Mapping[str, Any]) -> float:
    try:
        return parse_ts(doc["expires_at"])
    except (KeyError, TypeError, ValueError):
        return -float("inf")
