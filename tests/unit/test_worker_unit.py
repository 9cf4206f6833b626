"""The worker's pure parts: metrics, watermarks, the batch pipeline, snapshots, topics."""

from __future__ import annotations

import json
import math
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from spendsentry.clock import EventClock, event_time
from spendsentry.engine import Engine, EngineConfig
from spendsentry.policy import PolicySet
from spendsentry.worker import (
    BatchOutput,
    PartitionSet,
    TopicsConfig,
    UseCaseLabels,
    WorkerMetrics,
)
from spendsentry.worker.metrics import PartitionCounters
from spendsentry.worker.state import (
    SnapshotError,
    assemble,
    encode_snapshot,
    pack_state,
    parse_record,
    unpack_state,
)

pytestmark = pytest.mark.timeout(30)

NOW = float(int(time.time()) // 60 * 60)


@dataclass
class Rec:
    """Stands in for an aiokafka ConsumerRecord."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


def usage(n: int, ts: float, use_case: str = "support", **extra: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "event_id": f"e{n}",
        "ts": ts,
        "use_case": use_case,
        "input_tokens": 100,
        "output_tokens": 10,
        "cost_usd": 0.5,
    }
    doc.update(extra)
    return doc


def batch(*records: Rec) -> dict[tuple[str, int], list[Rec]]:
    out: dict[tuple[str, int], list[Rec]] = {}
    for r in records:
        out.setdefault((r.topic, r.partition), []).append(r)
    return out


def engine() -> Engine:
    return Engine(PolicySet.empty(), config=EngineConfig(allowed_lateness_s=120.0))


def new_parts(
    registry: CollectorRegistry | None = None, limit: int = 50, *, numbers: tuple[int, ...] = (0,)
) -> PartitionSet:
    """The worker's batch path (usage "u", outcomes "o") owning partitions ``numbers``."""
    metrics = WorkerMetrics.create(registry, use_case_limit=limit) if registry else None
    parts = PartitionSet(
        engine, metrics, inputs=("u", "o"), idle_after_s=10.0, use_case_labels=limit
    )
    for p in numbers:
        parts.fresh(p)
    return parts


def commit(s: PartitionSet) -> None:
    """What the worker does once a snapshot of every pipeline is durable."""
    for p in s.pipelines.values():
        p.commit_counters(p.capture_counters())


# -- metrics --------------------------------------------------------------------


def test_metrics_count_events_tokens_cost_rejections_and_duplicates() -> None:
    registry = CollectorRegistry()
    s = new_parts(registry)
    start = NOW - 3600
    records = [
        Rec("u", 0, 0, json.dumps(usage(1, start)).encode()),
        Rec("u", 0, 1, json.dumps([usage(2, start + 1), usage(3, start + 2)]).encode()),
        Rec("u", 0, 2, json.dumps(usage(1, start)).encode()),  # duplicate
        Rec("u", 0, 3, b"{oops"),
        Rec(
            "o",
            0,
            0,
            json.dumps(
                {
                    "type": "outcome",
                    "event_id": "o1",
                    "ts": start + 3,
                    "use_case": "support",
                    "outcome": "resolved",
                }
            ).encode(),
        ),
    ]
    s.handle(batch(*records), now=NOW)
    get = registry.get_sample_value
    support = {"use_case": "support", "partition": "0"}
    # Process work counts at once; engine work once a snapshot holding it is durable.
    assert get("spendsentry_records_total", {"topic": "u"}) == 4
    assert get("spendsentry_batch_seconds_count") == 1
    assert get("spendsentry_processing_lag_seconds_count") == 2  # one per partition
    assert get("spendsentry_events_total", {**support, "kind": "llm_call"}) is None
    commit(s)
    assert get("spendsentry_events_total", {**support, "kind": "llm_call"}) == 3
    assert get("spendsentry_events_total", {**support, "kind": "outcome"}) == 1
    assert get("spendsentry_tokens_total", {**support, "direction": "input"}) == 300
    assert get("spendsentry_tokens_total", {**support, "direction": "output"}) == 30
    assert get("spendsentry_cost_usd_total", support) == pytest.approx(1.5)
    assert get("spendsentry_duplicates_total", {"partition": "0"}) == 1
    assert get("spendsentry_rejected_total", {"reason": "not_json", "partition": "0"}) == 1
    # A second batch adds its increments, it does not recount the totals.
    s.handle(batch(Rec("u", 0, 4, json.dumps(usage(4, start + 4)).encode())), now=NOW)
    assert get("spendsentry_events_total", {**support, "kind": "llm_call"}) == 3
    commit(s)
    assert get("spendsentry_events_total", {**support, "kind": "llm_call"}) == 4
    assert get("spendsentry_cost_usd_total", support) == pytest.approx(2.0)


def test_counters_continue_from_the_snapshot_and_count_a_replayed_stretch_once() -> None:
    # A worker snapshots after 10 events, processes 5 more (shown on no scrape:
    # not durable), and dies; its successor restores the snapshot and processes
    # the 5 again. The counters go 10 -> 10 -> 15: never 20, never back to 0.
    start = NOW - 3600
    recs = [Rec("u", 0, i, json.dumps(usage(i, start + i)).encode()) for i in range(15)]
    first = new_parts(CollectorRegistry())
    first.handle(batch(*recs[:10]), now=NOW)
    one = first.pipelines[0]
    captured = one.capture_counters()
    state = unpack_state(pack_state(one.snapshot_state()))
    one.commit_counters(captured)
    first.handle(batch(*recs[10:]), now=NOW)
    assert one.accounting.committed.events == {("support", "llm_call"): 10}

    registry = CollectorRegistry()
    second = new_parts(registry)
    second.pipelines[0].restore_state(state, now=NOW)
    key = {"use_case": "support", "kind": "llm_call", "partition": "0"}
    assert registry.get_sample_value("spendsentry_events_total", key) == 10
    second.handle(batch(*recs[10:]), now=NOW)
    commit(second)
    assert registry.get_sample_value("spendsentry_events_total", key) == 15
    assert registry.get_sample_value(
        "spendsentry_cost_usd_total", {"use_case": "support", "partition": "0"}
    ) == pytest.approx(7.5)


def test_a_snapshot_without_counters_restores_them_from_the_engine_totals() -> None:
    start = NOW - 3600
    old = new_parts()
    old.handle(batch(*[Rec("u", 0, i, json.dumps(usage(i, start + i)).encode()) for i in range(3)]))
    state = old.pipelines[0].snapshot_state()
    del state["counters"]  # as written by a release before the counters were kept
    p = new_parts().pipelines[0]
    p.restore_state(unpack_state(pickle.dumps({"version": 2, "state": state})), now=NOW)
    assert p.accounting.committed.events == {("support", "llm_call"): 3}
    assert p.accounting.committed.cost_nano == {"support": 1_500_000_000}


def test_use_case_label_cardinality_is_capped() -> None:
    registry = CollectorRegistry()
    s = new_parts(registry, limit=2)
    start = NOW - 3600
    records = [
        Rec("u", 0, i, json.dumps(usage(i, start + i, use_case=f"uc{i % 4}")).encode())
        for i in range(8)
    ]
    s.handle(batch(*records), now=NOW)
    commit(s)
    samples = [
        s
        for metric in registry.collect()
        if metric.name == "spendsentry_events"
        for s in metric.samples
        if s.name == "spendsentry_events_total"
    ]
    labels = {s.labels["use_case"] for s in samples}
    assert len(labels) == 3 and "other" in labels
    assert sum(s.value for s in samples) == 8
    other = {"use_case": "other", "kind": "llm_call", "partition": "0"}
    assert registry.get_sample_value("spendsentry_events_total", other) == 4


def test_rerank_moves_a_label_to_a_much_busier_use_case_and_drops_its_series() -> None:
    counters = PartitionCounters.empty(label_limit=1)
    counters.add_use_case("quiet", {"llm_call": 1}, 10, 1, 100)
    counters.add_use_case("busy", {"llm_call": 50}, 500, 50, 5_000)
    assert counters.events == {("quiet", "llm_call"): 1, ("other", "llm_call"): 50}
    assert counters.rerank() == ["quiet"]
    assert ("quiet", "llm_call") not in counters.events
    counters.add_use_case("busy", {"llm_call": 5}, 0, 0, 0)
    counters.add_use_case("quiet", {"llm_call": 1}, 0, 0, 0)
    # "other" never goes back: it keeps busy's past and takes quiet's future.
    assert counters.events == {("other", "llm_call"): 51, ("busy", "llm_call"): 5}


def test_use_case_labels_do_not_flap_between_similar_volumes() -> None:
    cap = UseCaseLabels(limit=1)
    cap.count("a", 10)
    assert cap.label("a") == "a"
    cap.count("b", 15)  # busier, but not twice as busy
    assert cap.label("b") == "other"
    assert cap.rerank() == []


# -- watermarks and event time --------------------------------------------------


def test_watermark_waits_for_every_active_partition_and_skips_idle_ones() -> None:
    w = EventClock(idle_after_s=5.0)
    w.assign(["a", "b"], now=0.0)
    w.observe("a", [500.0], now=1.0)
    assert event_time([w], now=1.0) == -math.inf
    w.observe("b", [300.0], now=2.0)
    assert event_time([w], now=2.0) == 300.0
    w.observe("a", [900.0], now=8.0)
    assert event_time([w], now=8.0, pending={"b"}) == 300.0  # b has a backlog: never idle
    assert event_time([w], now=8.0) == 900.0
    w.observe("b", [400.0], now=9.0)
    assert event_time([w], now=9.0) == 400.0  # b is active again ...
    pipeline = new_parts().pipelines[0]
    for reached in (900.0, 400.0):
        pipeline.advance(now=9.0, out=BatchOutput(), event_time=reached)
    assert pipeline.watermark == 900.0  # ... but event time never moves backwards


def test_events_behind_the_watermark_of_every_partition_are_dead_lettered_as_late() -> None:
    s = new_parts(numbers=(0, 1))
    for p in (0, 1):
        s.pipelines[p].watermarks.assign([("u", p)], now=NOW)
    first, second = s.pipelines[0], s.pipelines[1]
    start = NOW - 7200
    recs0 = [Rec("u", 0, i, json.dumps(usage(i, start + 30 * i)).encode()) for i in range(40)]
    recs1 = [
        Rec("u", 1, i, json.dumps(usage(100 + i, start + 30 * i, "b")).encode()) for i in range(40)
    ]
    out = s.handle(batch(*recs0), now=NOW)
    assert first.engine.closed_until is not None and not first.closing_started  # waits for 1
    out = s.handle(batch(*recs1), now=NOW)
    for pl in (first, second):
        assert pl.closing_started and pl.engine.closed_until is not None
        assert pl.engine.closed_until * 60 <= pl.watermark - 120
    late = Rec("u", 1, 40, json.dumps(usage(999, start)).encode())
    out = s.handle(batch(late), now=NOW)
    assert [d.reason.value for d in out.dead_letters] == ["late"]
    stats = s.view().stats
    assert stats.late == 1 and stats.accepted == 80


def test_an_older_minute_on_a_partition_read_later_is_not_late_before_closing_starts() -> None:
    # Outcomes p feed the engine of usage p: the second partition of one engine.
    s = new_parts()
    s.pipelines[0].watermarks.assign([("u", 0), ("o", 0)], now=NOW)
    start = NOW - 7200
    s.handle(batch(Rec("u", 0, 0, json.dumps(usage(1, start + 600)).encode())), now=NOW)
    outcome = {
        "type": "outcome",
        "event_id": "o1",
        "ts": start,
        "use_case": "support",
        "outcome": "resolved",
    }
    out = s.handle(batch(Rec("o", 0, 0, json.dumps(outcome).encode())), now=NOW)
    engine = s.pipelines[0].engine
    assert out.dead_letters == [] and engine.stats.accepted == 2
    assert engine.closed_until is not None and engine.closed_until * 60 <= start


# -- snapshots and alert dedupe -------------------------------------------------


def _restore(records: tuple[bytes, list[bytes]]) -> dict[str, object]:
    """Decode a manifest value and its chunk values as the store would."""
    manifest_value, chunk_values = records
    header, inline = parse_record(manifest_value)
    return unpack_state(assemble(header, inline, chunk_values))


def test_snapshot_round_trip_restores_engine_offsets_and_published_keys() -> None:
    s = new_parts()
    p = s.pipelines[0]
    p.watermarks.assign([("u", 0)], now=NOW)
    start = NOW - 3600
    s.handle(batch(*[Rec("u", 0, i, json.dumps(usage(i, start + i)).encode()) for i in range(5)]))
    assert p.mark_published("a1:firing:warning:1")
    encoded = encode_snapshot(p.snapshot_state(), group="g", partition=0, seq=1, writer="w")
    assert encoded.chunks == [] and encoded.manifest_key == b"g:0"

    q = new_parts(numbers=()).new_pipeline(0)
    q.restore_state(_restore((encoded.manifest_value(chunk_offsets=[]), [])), now=NOW)
    assert q.offsets == {("u", 0): 5}
    assert q.engine.stats.accepted == 5
    assert q.watermarks.max_ts == {("u", 0): start + 4}
    assert not q.mark_published("a1:firing:warning:1")  # already published: suppressed
    assert q.mark_published("a1:resolved:warning:1")


def test_large_snapshot_is_chunked_into_alternating_slots_and_reassembled() -> None:
    state = bytes(range(256)) * 40  # ~10 kB of document
    first = encode_snapshot(state, group="g", partition=3, seq=1, writer="w", chunk_bytes=4096)
    second = encode_snapshot(state, group="g", partition=3, seq=2, writer="w", chunk_bytes=4096)
    assert len(first.chunks) == 3
    assert [k for k, _ in first.chunks] == [b"g:3:1:0", b"g:3:1:1", b"g:3:1:2"]
    # The next snapshot never overwrites the chunks the latest manifest needs.
    assert not {k for k, _ in first.chunks} & {k for k, _ in second.chunks}
    values = [v for _, v in first.chunks]
    header, inline = parse_record(first.manifest_value(chunk_offsets=[10, 11, 12]))
    assert assemble(header, inline, values) == state


@pytest.mark.parametrize(
    "damage",
    ["missing", "reordered", "other_snapshot", "flipped_byte"],
)
def test_torn_or_foreign_chunks_are_refused_with_a_reason(damage: str) -> None:
    state = bytes(range(256)) * 40
    enc = encode_snapshot(state, group="g", partition=0, seq=4, writer="w", chunk_bytes=4096)
    other = encode_snapshot(state, group="g", partition=0, seq=6, writer="w", chunk_bytes=4096)
    values: list[bytes | None] = [v for _, v in enc.chunks]
    if damage == "missing":
        values[1] = None
    elif damage == "reordered":
        values[0], values[1] = values[1], values[0]
    elif damage == "other_snapshot":
        values[2] = other.chunks[2][1]
    else:
        raw = bytearray(values[2] or b"")
        raw[-1] ^= 0xFF
        values[2] = bytes(raw)
    header, inline = parse_record(enc.manifest_value(chunk_offsets=[0, 1, 2]))
    with pytest.raises(SnapshotError):
        assemble(header, inline, values)


@pytest.mark.parametrize(
    "value", [b"", b"SSS2", b"SSS2\x00\x00\x00\x09{}", b"SSS2\x00\x00\x00\x02{}", b"junk"]
)
def test_bad_state_records_raise_snapshot_error(value: bytes) -> None:
    with pytest.raises(SnapshotError):
        parse_record(value)


def test_snapshot_of_another_version_is_refused() -> None:
    with pytest.raises(SnapshotError, match="version"):
        unpack_state(pickle.dumps({"version": -1, "state": {}}))


def test_topics_file_overrides_defaults(tmp_path: Path) -> None:
    path = tmp_path / "topics.toml"
    path.write_text(
        '[topics.usage]\nname = "x.usage"\npartitions = 2\n'
        '[topics.notifier]\nname = "ignored"\npartitions = 1\n'
    )
    topics = TopicsConfig.load(path)
    assert (topics.usage.name, topics.usage.partitions) == ("x.usage", 2)
    assert topics.alerts.name == "ai.alerts"
    assert topics.throttle.config["cleanup.policy"] == "compact"
    assert [s.name for s in topics.specs()] == [
        "x.usage", "ai.outcomes", "ai.alerts", "ai.throttle", "ai.deadletter", "ai.control",
        "ai.state",
    ]  # fmt: skip
    assert topics.state.config["cleanup.policy"] == "compact"


def test_late_events_are_counted_per_use_case_with_a_capped_label() -> None:
    registry = CollectorRegistry()
    p = new_parts(registry, limit=1)
    start = NOW - 7200
    recs = [Rec("u", 0, i, json.dumps(usage(i, start + 30 * i)).encode()) for i in range(40)]
    p.handle(batch(*recs), now=NOW)
    # History produced into the live topic: a use case with a label, one without.
    late = [
        Rec("u", 0, 40 + i, json.dumps(usage(900 + i, start, use_case=uc)).encode())
        for i, uc in enumerate(["support", "support", "history_a", "history_b"])
    ]
    out = p.handle(batch(*late), now=NOW)
    assert [d.reason.value for d in out.dead_letters] == ["late"] * 4

    def late_of(label: str) -> float | None:
        return registry.get_sample_value("spendsentry_late_events_total", {"use_case": label})

    assert late_of("support") == 2 and late_of("other") == 2
    assert late_of("history_a") is None  # the label set stays bounded


# -- what the worker's shell changes, through the pipeline's own methods ---------


def test_checkpoint_state_records_the_alerts_offsets_and_counts_the_state_saved() -> None:
    s = new_parts()
    p = s.pipelines[0]
    p.assign_inputs([("u", 0)], now=NOW)
    s.handle(batch(*[Rec("u", 0, i, json.dumps(usage(i, NOW - 60)).encode()) for i in range(3)]))
    assert s.changed() == [0]
    state, counters = p.checkpoint_state({0: 7, 2: 1})
    assert s.changed() == [] and not p.dirty
    assert counters.records == 3 and state["offsets"] == {("u", 0): 3}
    from spendsentry.worker.pipeline import alerts_offsets_of

    assert alerts_offsets_of(state) == {0: 7, 2: 1}
    assert alerts_offsets_of(p.snapshot_state()) == {}  # a snapshot from before read-back


def test_rewind_start_at_touch_and_take_behind_own_the_offsets_and_the_dirty_flag() -> None:
    s = new_parts()
    p = s.pipelines[0]
    p.start_at({("u", 0): 10, ("o", 0): 0})
    assert p.offsets == {("u", 0): 10, ("o", 0): 0} and not p.dirty
    s.handle(batch(Rec("u", 0, 4, json.dumps(usage(4, NOW)).encode())))
    assert p.take_behind() == {("u", 0): 10}
    assert p.take_behind() == {}
    p.rewind(("u", 0), 0)  # the topic was recreated: continue from its start
    assert p.offsets[("u", 0)] == 0 and p.dirty
    p.checkpoint_state({})
    p.touch()
    assert s.changed() == [0]


def test_fresh_engines_continue_throttle_versions_and_the_set_finds_the_latest_command() -> None:
    s = new_parts()
    p = s.pipelines[0]
    p.observe_throttle_versions({"use_case=support": 4, "use_case=bad": 0})
    assert p.engine.planner.version("use_case=support") == 4
    assert p.engine.planner.ignored_versions == 1  # out of range: ignored, as before
    assert p.engine.planner.latest("use_case=support") is None
    assert s.latest_command("use_case=support") is None
    assert p.recent_commands() == []
