"""What a reader of ``ai.throttle`` keeps: the newest trusted command per scope.

:class:`ThrottleTopic` folds the records of the compacted throttle topic,
judged by :func:`~spendsentry.actions.commands.trusted_command`;
:func:`read_commands` reads the topic to its end into one
(:func:`spendsentry.kafka.read_to_end`), for the worker's start-up read of the
versions, ``spendsentry throttle list`` and tests. The gateway's
:class:`~spendsentry.client.ThrottleGuard` follows the topic instead and keeps
its own state (expiry, buckets). All three are re-exported by
:mod:`spendsentry.client`.

Examples
--------
>>> found = ThrottleTopic()
>>> found.take(b"not json", ThrottleKeys.of("k"))
>>> found.records, dict(found.rejected), found.latest
(1, {'invalid': 1}, {})
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from spendsentry.actions.commands import Rejection, trusted_command
from spendsentry.actions.signing import ThrottleKeys
from spendsentry.kafka.compacted import read_to_end
from spendsentry.kafka.security import KafkaSecurity
from spendsentry.messages.topics import THROTTLE_TOPIC
from spendsentry.timeutil import parse_ts

__all__ = ["ThrottleTopic", "read_commands", "read_latest"]


@dataclass(slots=True)
class ThrottleTopic:
    """What a read of ai.throttle found (see :func:`read_commands`)."""

    #: The newest trusted command per scope key (sorted by key).
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Records ignored, by reason (``invalid``, ``unsigned``, ``bad_signature``).
    rejected: Counter[str] = field(default_factory=Counter)
    #: The first few of them, for a log line (their scope keys are not trusted).
    examples: list[Rejection] = field(default_factory=list)
    #: Records read (tombstones included).
    records: int = 0

    def take(self, value: bytes | None, keys: ThrottleKeys) -> None:
        """Count one record; keep it if it is a trusted command newer than the one held."""
        self.records += 1
        if value is None:
            return  # a tombstone: compaction's business
        doc = trusted_command(value, keys)
        if isinstance(doc, Rejection):
            self.rejected[doc.reason] += 1
            if len(self.examples) < _EXAMPLES:
                self.examples.append(doc)
            return
        held = self.latest.get(doc["scope_key"])
        if held is None or doc["version"] > held["version"]:
            self.latest[doc["scope_key"]] = doc

    def versions(self, limit: int) -> dict[str, int]:
        """Version per scope of the ``limit`` most recently issued trusted commands."""
        newest = sorted(self.latest.items(), key=lambda kv: _issued(kv[1]), reverse=True)
        return {key: int(doc["version"]) for key, doc in newest[:limit]}

    def describe_rejected(self) -> str:
        """One line for the log: how many were ignored and why, with examples."""
        counts = ", ".join(f"{reason}={n}" for reason, n in sorted(self.rejected.items()))
        shown = "; ".join(
            f"{r.scope_key[:60]!r}: {r.reason} ({r.detail[:120]})" for r in self.examples
        )
        return f"{sum(self.rejected.values())} ignored ({counts}), e.g. {shown}"


#: Rejected records kept as examples for the log.
_EXAMPLES = 3


def _issued(doc: Mapping[str, Any]) -> float:
    try:
        return parse_ts(doc["issued_at"])
    except (KeyError, TypeError, ValueError):
        return -float("inf")


async def read_commands(
    bootstrap: str,
    topic: str = THROTTLE_TOPIC,
    *,
    keys: ThrottleKeys,
    timeout_s: float = 20.0,
    security: KafkaSecurity | None = None,
) -> ThrottleTopic:
    """The newest trusted command per scope on ``topic`` (read from the beginning).

    Only commands that :func:`~spendsentry.actions.commands.trusted_command`
    accepts with ``keys`` count: a forged record (unsigned, signed with
    another key, malformed, a version out of range) is counted in
    ``rejected`` and can neither hide nor replace a real command.

    Raises
    ------
    TimeoutError
        The topic could not be read to its end within ``timeout_s``.
    """
    found = ThrottleTopic()
    await read_to_end(
        bootstrap,
        topic,
        lambda value: found.take(value, keys),
        timeout_s=timeout_s,
        security=security,
    )
    found.latest = dict(sorted(found.latest.items()))
    return found


async def read_latest(
    bootstrap: str,
    topic: str = THROTTLE_TOPIC,
    *,
    keys: ThrottleKeys | None = None,
    timeout_s: float = 20.0,
    security: KafkaSecurity | None = None,
) -> dict[str, tuple[dict[str, Any], bool | None]]:
    """The newest command per scope key on ``topic`` (read from the beginning).

    Returns ``{scope_key: (command, verified)}``. With ``keys``, only trusted
    commands (as :func:`read_commands`; ``verified`` is True). Without keys,
    every record that is a JSON object with a scope key and a version, not
    verified (``verified`` is None): for looking, never for acting on.

    Raises
    ------
    TimeoutError
        The topic could not be read to its end within ``timeout_s``.
    """
    if keys is not None:
        found = await read_commands(
            bootstrap, topic, keys=keys, timeout_s=timeout_s, security=security
        )
        return {key: (doc, True) for key, doc in found.latest.items()}
    latest: dict[str, tuple[dict[str, Any], bool | None]] = {}

    def take(value: bytes | None) -> None:
        try:
            doc = orjson.loads(value or b"")
            key, version = doc["scope_key"], int(doc["version"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return
        held = latest.get(key)
        if held is None or version > int(held[0]["version"]):
            latest[key] = (doc, None)

    await read_to_end(bootstrap, topic, take, timeout_s=timeout_s, security=security)
    return dict(sorted(latest.items()))
