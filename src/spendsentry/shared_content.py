"""Which use case first embedded each content hash in the last day, across all use cases.

The engine is per use case: every use case has its own monitors and its own
:class:`~spendsentry.windows.ContentTracker` (re-embeds *within* the use case).
Content embedded by *several* use cases (two teams each building a vector store
of the same documents) is only visible across use cases, so the engine owns one
:class:`SharedContentIndex` and consults it as it closes each use case's minute.

Attribution: the first use case to embed a content hash owns it; every later
embedding of it by *another* use case within the TTL is a cross-use-case
duplicate of that later use case (the one that could have read a shared store
instead). Minutes close in (minute, use case) order, so two use cases embedding
the same new content in the same minute resolve the same way on every run: the
one whose name sorts first owns it.

Memory is bounded like :class:`~spendsentry.dedupe.EventIdIndex`: hashes are
kept as xxh3-64 integers, expire after ``ttl_minutes`` without an embedding,
and beyond ``max_hashes`` the least recently embedded go first (counted in
``evicted``).

>>> index = SharedContentIndex()
>>> index.close_minute("kb", 10, {"doc-1": 1, "doc-2": 1})
(0, ())
>>> index.close_minute("search", 12, {"doc-1": 2, "doc-9": 1})
(2, ('kb',))
>>> index.close_minute("kb", 13, {"doc-1": 1})   # the owner re-embeding is its own business
(0, ())
"""

from __future__ import annotations

from collections import OrderedDict

from xxhash import xxh3_64_intdigest

#: Owners named per minute at most (the alert lists them; names come from producers).
MAX_OWNERS_NAMED = 5


class SharedContentIndex:
    """Content hash -> (first embedder, last minute any use case embedded it)."""

    def __init__(self, ttl_minutes: int = 24 * 60, max_hashes: int = 500_000) -> None:
        self.ttl_minutes = ttl_minutes
        self.max_hashes = max_hashes
        # Recency order (see windows.SessionTracker for why an OrderedDict).
        self._owners: OrderedDict[int, tuple[str, int]] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._owners)

    def close_minute(
        self, use_case: str, minute: int, hashes: dict[str, int]
    ) -> tuple[int, tuple[str, ...]]:
        """Merge one use case's embedded hashes of ``minute``.

        Returns how many of its embeddings repeat content another use case
        embedded first (within the TTL), and those use cases (most repeated
        first, at most :data:`MAX_OWNERS_NAMED`).
        """
        owners = self._owners
        horizon = minute - self.ttl_minutes
        shared = 0
        by_owner: dict[str, int] = {}
        for content in sorted(hashes):
            key = xxh3_64_intdigest(content.encode("utf-8", "surrogatepass"))
            found = owners.get(key)
            if found is None or found[1] <= horizon:
                owners[key] = (use_case, minute)
            else:
                owner = found[0]
                if owner != use_case:
                    n = hashes[content]
                    shared += n
                    by_owner[owner] = by_owner.get(owner, 0) + n
                owners[key] = (owner, minute)
            owners.move_to_end(key)
        self._expire(horizon)
        named = sorted(by_owner, key=lambda u: (-by_owner[u], u))[:MAX_OWNERS_NAMED]
        return shared, tuple(named)

    def _expire(self, horizon: int) -> None:
        owners = self._owners
        while owners:
            _, (_, last) = next(iter(owners.items()))
            if last > horizon and len(owners) <= self.max_hashes:
                break
            owners.popitem(last=False)
            if last > horizon:
                self.evicted += 1
