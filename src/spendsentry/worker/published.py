"""``PublishedKeys``: the dedupe keys of the alerts a state has published, oldest forgotten first.

A restored state suppresses what it (or a process that crashed after
publishing) already published: keys are
:func:`spendsentry.messages.alert.dedupe_key` values, kept in insertion order
and snapshotted with the state as a plain list.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

#: Remembered published alert keys (enough for days of incidents).
MAX_PUBLISHED_KEYS = 100_000


class PublishedKeys:
    """The alert keys a state has published (insertion-ordered, at most ``limit``).

    >>> keys = PublishedKeys(["a"], limit=2)
    >>> keys.mark("a"), keys.mark("b"), keys.mark("c")
    (False, True, True)
    >>> list(keys), len(keys), "a" in keys
    (['b', 'c'], 2, False)
    """

    __slots__ = ("_keys", "limit")

    def __init__(self, keys: Iterable[str] = (), *, limit: int = MAX_PUBLISHED_KEYS) -> None:
        self._keys: dict[str, None] = dict.fromkeys(keys)
        self.limit = limit

    def mark(self, key: str) -> bool:
        """Remember ``key`` as published; False if it already was."""
        keys = self._keys
        if key in keys:
            return False
        keys[key] = None
        if len(keys) > self.limit:
            del keys[next(iter(keys))]
        return True

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


__all__ = ["MAX_PUBLISHED_KEYS", "PublishedKeys"]
