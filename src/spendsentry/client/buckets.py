"""Token buckets: the rate limits of ``limit_rate`` commands, on the gateway.

A bucket holds up to ``capacity`` tokens and refills at ``rate_per_minute``;
a call takes ``n`` tokens or, when there are not enough, is refused with the
seconds until there will be. The capacity defaults to one minute of rate, so a
scope may burst to its per-minute limit and then settles at the rate.

>>> b = TokenBucket(60, now=0.0)          # 60 per minute, i.e. 1 per second
>>> b.take(60, now=0.0)                    # the whole minute's burst
0.0
>>> b.take(1, now=0.0)                     # empty: retry after one second
1.0
>>> b.take(1, now=1.0)
0.0
"""

from __future__ import annotations

import math

__all__ = ["TokenBucket"]


class TokenBucket:
    """A token bucket (not thread-safe by itself; the guard holds a lock).

    Parameters
    ----------
    rate_per_minute : float
        Refill rate; must be positive.
    capacity : float, optional
        Maximum tokens held (default: ``rate_per_minute``).
    now : float
        Clock reading at creation (the bucket starts full).
    """

    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, rate_per_minute: float, capacity: float | None = None, *, now: float):
        if not rate_per_minute > 0 or math.isinf(rate_per_minute):
            raise ValueError(f"rate_per_minute must be a positive number, not {rate_per_minute!r}")
        self.rate = rate_per_minute / 60.0
        self.capacity = float(capacity if capacity is not None else rate_per_minute)
        self.tokens = self.capacity
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def peek(self, n: float, *, now: float) -> float:
        """Seconds until ``n`` tokens are available (0.0: now); takes nothing."""
        self._refill(now)
        if n <= self.tokens:
            return 0.0
        if n > self.capacity:
            # Never satisfiable at once: the wait for a full bucket, so a
            # caller retrying then gets through with a smaller request.
            return (self.capacity - self.tokens) / self.rate
        return (n - self.tokens) / self.rate

    def take(self, n: float, *, now: float) -> float:
        """Take ``n`` tokens if available (returns 0.0), else the seconds to wait."""
        wait = self.peek(n, now=now)
        if wait == 0.0:
            self.tokens -= n
        return wait
