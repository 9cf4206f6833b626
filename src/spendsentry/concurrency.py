"""Concurrency limits: how many calls of a use case may be in flight at once.

A limit is set per use case (``max_in_flight``) and optionally per session of it
(``max_in_flight_per_session``), in the policy files
(``[use_cases.NAME.concurrency]``) or straight in the gateway's guard. The
gateway's :class:`~spendsentry.client.ThrottleGuard` enforces it with in-flight
slots (:mod:`spendsentry.client.slots`).

Several gateway replicas must not multiply a limit: each replica holds a
*share* of it, with no coordination between replicas (no shared counter, no
extra round trip per call). :func:`replica_share` is the rule::

    replica i of R takes  limit // R, plus 1 if i < limit % R   (never below 1)

When every replica knows its index, the shares add up to the limit exactly. A
replica that does not know its index takes ``limit // R`` (never below 1), so
the shares add up to at most the limit. Either way the replicas together admit
at most ``max(limit, R)`` calls at once: a limit below the replica count is
overshot (every replica keeps 1 slot, so it can serve the use case at all), and
a replica's unused share is not lent to a busy one.

>>> [replica_share(10, 3, i) for i in range(3)]
[4, 3, 3]
>>> replica_share(10, 3), replica_share(1, 3, 2), replica_share(20, 1)
(3, 1, 20)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConcurrencyLimit", "replica_share", "replicas_bound"]


@dataclass(frozen=True, slots=True)
class ConcurrencyLimit:
    """The calls of one use case that may be in flight at once, across all replicas.

    ``max_in_flight`` bounds the use case, ``max_in_flight_per_session`` each of
    its sessions; None leaves that one unbounded.
    """

    max_in_flight: int | None = None
    max_in_flight_per_session: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_in_flight", "max_in_flight_per_session"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
                raise ValueError(f"{name} must be a whole number >= 1, not {value!r}")


def replica_share(limit: int, replicas: int, index: int | None = None) -> int:
    """The slots replica ``index`` (of ``replicas``) holds of ``limit`` (see the module doc)."""
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, not {replicas}")
    if index is not None and not 0 <= index < replicas:
        raise ValueError(f"replica index {index} is not in 0..{replicas - 1}")
    share = limit // replicas
    if index is not None and index < limit % replicas:
        share += 1
    return max(1, share)


def replicas_bound(limit: int, replicas: int) -> int:
    """The most calls ``replicas`` replicas admit together under ``limit``.

    >>> replicas_bound(10, 3), replicas_bound(1, 3), replicas_bound(2, 5)
    (10, 3, 5)
    """
    return max(limit, replicas)
