"""The event-id index: bounded, exact within its horizon, cheap to snapshot."""

from __future__ import annotations

from collections import OrderedDict

import msgspec
from _snapshots import plain
from hypothesis import given
from hypothesis import strategies as st

from spendsentry.dedupe import EventIdIndex
from spendsentry.snapshot.engine import dump_dedupe, load_dedupe
from spendsentry.snapshot.legacy import _EventIdIndex


def test_bounded_by_max_ids_evicting_the_oldest_minutes() -> None:
    index = EventIdIndex(max_ids=1_000)
    for i in range(5_000):
        assert not index.seen(f"id-{i}", i // 100)
    assert len(index) <= 1_000
    assert index.evicted == 5_000 - len(index)
    # The newest ids are still known, the oldest are not.
    assert index.seen("id-4999", 49)
    assert not index.seen("id-0", 0)


def test_expire_forgets_whole_minutes_only() -> None:
    index = EventIdIndex()
    for minute in range(10):
        for i in range(3):
            index.seen(f"{minute}-{i}", minute)
    index.expire(before_minute=7)
    assert len(index) == 9
    assert index.seen("7-0", 7) and not index.seen("6-0", 6)


@given(st.lists(st.tuples(st.text(max_size=12), st.integers(0, 20)), max_size=200))
def test_snapshot_round_trip_answers_the_same(ids: list[tuple[str, int]]) -> None:
    index = EventIdIndex(max_ids=50)
    for event_id, minute in ids:
        index.seen(event_id, minute)
    copy = EventIdIndex(max_ids=50)
    load_dedupe(copy, plain(dump_dedupe(index)))
    assert len(copy) == len(index) and copy.evicted == index.evicted
    for event_id, minute in [*ids, ("never-seen", 3)]:
        assert copy.seen(event_id, minute) == index.seen(event_id, minute)


def test_snapshot_is_flat_bytes_not_one_object_per_id() -> None:
    index = EventIdIndex()
    for i in range(200_000):
        index.seen(f"gateway-7f3a-{i:010d}", 29_000_000 + i // 20_000)
    # 8 bytes per id plus framing: pickling two million strings one by one is
    # what stalled the worker's consume loop.
    assert len(msgspec.msgpack.encode(dump_dedupe(index))) < 200_000 * 8 + 10_000


def test_restores_a_snapshot_of_the_previous_format() -> None:
    old = _EventIdIndex.__new__(_EventIdIndex)  # what a version-2 pickle reads as
    old.__setstate__({"max_ids": 10, "evicted": 2, "_ids": OrderedDict([("a", 5), ("b", 6)])})
    assert len(old) == 2 and old.evicted == 2
    assert old.seen("a", 5) and not old.seen("c", 6)
    old.expire(before_minute=6)
    assert not old.seen("a", 5)
