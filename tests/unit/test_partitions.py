"""One engine per input partition: routing, event time, control actions, moves."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import pytest

from spendsentry.engine import Engine, EngineConfig
from spendsentry.policy import PolicySet
from spendsentry.worker import PartitionSet
from spendsentry.worker.state import (
    assemble,
    encode_snapshot,
    pack_state,
    parse_record,
    unpack_state,
)

pytestmark = pytest.mark.timeout(30)

NOW = float(int(time.time()) // 60 * 60)
INPUTS = ("u", "o")


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    value: bytes | None


def engine() -> Engine:
    return Engine(PolicySet.empty(), config=EngineConfig(allowed_lateness_s=120.0))


def parts(*numbers: int) -> PartitionSet:
    s = PartitionSet(engine, inputs=INPUTS, idle_after_s=10.0)
    for p in numbers:
        s.fresh(p).watermarks.assign([("u", p)], now=NOW)
    return s


def usage(n: int, ts: float, use_case: str, cost: float = 0.01, tokens: int = 100) -> bytes:
    return json.dumps(
        {
            "event_id": f"e{n}",
            "ts": ts,
            "use_case": use_case,
            "input_tokens": tokens,
            "output_tokens": 10,
            "cost_usd": cost,
        }
    ).encode()


def traffic(minutes: int = 200) -> dict[int, list[Rec]]:
    """Two use cases per partition, a spike (cost and prompt size) on each near the end.

    Detectors warm up for a few hours of minutes before they judge anything.
    """
    start = NOW - (minutes + 30) * 60
    out: dict[int, list[Rec]] = {0: [], 1: []}
    n = 0
    for minute in range(minutes):
        for p, names in ((0, ("a", "b")), (1, ("c", "d"))):
            for name in names:
                spike = minute >= minutes - 12 and name in ("a", "c")
                for k in range(3):
                    n += 1
                    ts = start + minute * 60 + 10 * k + ord(name[0]) % 7
                    cost = 0.5 if spike else 0.01 + 0.001 * ((n * 7) % 5)
                    tokens = 4000 if spike else 100 + (n * 13) % 50
                    out[p].append(Rec("u", p, len(out[p]), usage(n, ts, name, cost, tokens)))
    return out


def keys(alerts: list[object]) -> list[str]:
    return sorted(a.dedupe_key for a in alerts)  # type: ignore[attr-defined]


def run(s: PartitionSet, feed: dict[int, list[Rec]], step: int = 40) -> list[object]:
    alerts: list[object] = []
    longest = max(len(v) for v in feed.values())
    for i in range(0, longest, step):
        batch = {(("u", p)): rs[i : i + step] for p, rs in feed.items() if rs[i : i + step]}
        alerts += s.handle(batch, now=NOW).alerts
    alerts += s.tick(now=NOW + 60).alerts  # everything idle: minutes close
    return alerts


def test_each_partition_number_has_its_own_engine_and_records_of_others_are_dropped() -> None:
    s = parts(0)
    out = s.handle(
        {("u", 0): [Rec("u", 0, 0, usage(1, NOW - 600, "a"))], ("u", 1): [Rec("u", 1, 0, b"{}")]},
        now=NOW,
    )
    assert out.dead_letters == [] and s.dropped == 1
    assert s.pipelines[0].engine.stats.accepted == 1
    assert s.offsets() == {("u", 0): 1}


def test_two_sets_splitting_the_partitions_alert_like_one_set() -> None:
    feed = traffic()
    whole = run(parts(0, 1), feed)
    split = run(parts(0), {0: feed[0]}) + run(parts(1), {1: feed[1]})
    assert whole, "the spikes should alert"
    assert keys(split) == keys(whole)
    assert {a.use_case for a in whole} >= {"a", "c"}  # type: ignore[attr-defined]


def test_a_partition_moved_mid_stream_through_its_snapshot_alerts_like_one_set() -> None:
    feed = traffic()
    whole = run(parts(0, 1), feed)
    half = len(feed[1]) * 2 // 3  # after the baselines, before the spike
    first = parts(0, 1)
    moved = run(first, {0: feed[0][: len(feed[0]) * 2 // 3], 1: feed[1][:half]})
    # The first worker hands partition 1 over: snapshot, drop.
    pipeline = first.remove(1)
    assert pipeline is not None
    encoded = encode_snapshot(pipeline.snapshot_state(), group="g", partition=1, seq=2, writer="w")
    header, inline = parse_record(encoded.manifest_value(chunk_offsets=[]))
    second = PartitionSet(engine, inputs=INPUTS, idle_after_s=10.0)
    restored = second.new_pipeline(1)
    restored.restore_state(unpack_state(assemble(header, inline, [])), now=NOW)
    second.add(restored)
    rest1 = feed[1][half:]
    moved += run(second, {1: rest1})
    moved += run(first, {0: feed[0][len(feed[0]) * 2 // 3 :]})
    assert keys(moved) == keys(whole)
    assert second.pipelines[1].records == len(feed[1])


def test_records_the_state_already_reflects_are_skipped_and_reported() -> None:
    s = parts(0)
    recs = [Rec("u", 0, i, usage(i, NOW - 900 + i, "a")) for i in range(5)]
    s.handle({("u", 0): recs}, now=NOW)
    s.handle({("u", 0): recs[2:]}, now=NOW)  # delivered again
    pl = s.pipelines[0]
    assert pl.records == 5 and pl.engine.stats.duplicates == 0
    assert pl.behind == {("u", 0): 5}


def test_an_idle_partition_follows_the_event_time_of_the_others() -> None:
    s = parts(0, 1)
    s.handle({("u", 0): [Rec("u", 0, 0, usage(1, NOW - 3600, "a"))]}, now=NOW)
    s.handle({("u", 1): [Rec("u", 1, 0, usage(2, NOW - 3600, "c"))]}, now=NOW)
    s.handle({("u", 0): [Rec("u", 0, 1, usage(3, NOW - 900, "a"))]}, now=NOW + 6)
    s.handle({("u", 0): [Rec("u", 0, 2, usage(4, NOW - 600, "a"))]}, now=NOW + 11)
    quiet = s.pipelines[1]
    # Partition 1 has been silent for 11 s while partition 0 delivered: its
    # minutes close with partition 0's time.
    assert quiet.watermark == NOW - 600
    assert quiet.engine.closed_until is not None
    assert quiet.engine.closed_until * 60 >= NOW - 600 - 180
    assert s.watermark == NOW - 600 and not math.isinf(s.watermark)


def test_after_a_silence_of_the_whole_worker_no_partition_counts_idle_at_once() -> None:
    # A broker outage or a paused producer: nothing arrives anywhere for longer
    # than the idle time. The first partition to deliver again must not close
    # minutes the other partition's records (produced, not fetched yet) are in.
    s = parts(0, 1)
    s.handle({("u", 0): [Rec("u", 0, 0, usage(1, NOW - 3600, "a"))]}, now=NOW)
    s.handle({("u", 1): [Rec("u", 1, 0, usage(2, NOW - 3600, "c"))]}, now=NOW)
    s.handle({("u", 0): [Rec("u", 0, 1, usage(3, NOW - 600, "a"))]}, now=NOW + 60)
    assert s.watermark == NOW - 3600  # partition 1 still holds event time back
    out = s.handle({("u", 1): [Rec("u", 1, 1, usage(4, NOW - 1200, "c"))]}, now=NOW + 61)
    assert out.dead_letters == []  # not late
    assert s.watermark == NOW - 1200
    # ... and once it has been silent while partition 0 delivers, it is idle.
    s.handle({("u", 0): [Rec("u", 0, 2, usage(5, NOW - 500, "a"))]}, now=NOW + 66)
    s.handle({("u", 0): [Rec("u", 0, 3, usage(6, NOW - 400, "a"))]}, now=NOW + 72)
    assert s.watermark == NOW - 400


def control(offset: int, doc: object) -> Rec:
    return Rec("ctl", 0, offset, json.dumps(doc).encode())


SNOOZE = {
    "action": "snooze",
    "alert_id": None,
    "scope_key": None,
    "use_case": "a",
    "kind": "cost_spike",
    "until": "2099-01-01T00:00:00Z",
    "user": "U1",
    "at": "2024-01-01T00:00:00Z",
}


def test_control_actions_reach_every_engine_once_and_one_engine_reports_bad_ones() -> None:
    s = parts(0, 1)
    out_first = s.handle({}, now=NOW)
    s.apply_control([control(0, SNOOZE), control(1, {"action": "nope"})], out_first)
    assert [d.reason.value for d in out_first.dead_letters] == ["invalid_value"]
    for p in (0, 1):
        assert s.pipelines[p].control_offsets == {0: 2}
        assert ("a", "cost_spike") in s.pipelines[p].engine.planner.snoozes
    again = s.handle({}, now=NOW)
    s.apply_control([control(0, SNOOZE), control(1, {"action": "nope"})], again)
    assert again.dead_letters == []  # applied once per state
    assert s.control_start(0) == 2
    only_one = parts(1)
    out = only_one.handle({}, now=NOW)
    only_one.apply_control([control(5, {"action": "nope"})], out)
    assert out.dead_letters == []  # partition 0's owner reports it


def test_merged_view_sums_the_engines() -> None:
    s = parts(0, 1)
    s.handle({("u", 0): [Rec("u", 0, 0, usage(1, NOW - 600, "a"))]}, now=NOW)
    s.handle({("u", 1): [Rec("u", 1, 0, usage(2, NOW - 600, "c"))]}, now=NOW)
    view = s.view()
    assert view.stats.accepted == 2 and set(view.use_cases) == {"a", "c"}
    assert view.firing() == []
    assert s.records == 2
    assert unpack_state(pack_state(s.pipelines[0].snapshot_state()))["partition"] == 0


def test_feedback_is_taken_by_the_engine_holding_the_use_case_and_shows_in_metrics() -> None:
    from prometheus_client import CollectorRegistry

    from spendsentry.worker.metrics import WorkerMetrics

    registry = CollectorRegistry()
    s = PartitionSet(engine, WorkerMetrics.create(registry), inputs=INPUTS, idle_after_s=10.0)
    for p in (0, 1):
        s.fresh(p).watermarks.assign([("u", p)], now=NOW)
    feed = traffic(60)
    run(s, feed)
    false_alarm = {**SNOOZE, "action": "false_alarm", "until": None, "at": "2024-01-01T00:00:00Z"}
    out = s.handle({}, now=NOW)
    s.apply_control([control(0, false_alarm), control(1, false_alarm)], out)
    # "a" is partition 0's: its engine alone queues it; both engines saw the records.
    assert len(s.pipelines[0].engine.pending_feedback) == 2
    assert s.pipelines[1].engine.pending_feedback == []
    assert s.control_start(0) == 2

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    labels = {"use_case": "a", "kind": "cost_spike", "verdict": "false_alarm"}
    assert value("spendsentry_feedback_total", **labels) == 2.0
    feed_more = {("u", 0): [Rec("u", 0, 10_000, usage(99_999, NOW, "a"))]}
    s.handle(feed_more, now=NOW + 300)
    s.tick(now=NOW + 600)  # a minute closes: the feedback (dated long ago) applies
    assert s.pipelines[0].engine.pending_feedback == []
    tuned = value("spendsentry_detector_sensitivity", use_case="a", detector="cost_spike")
    assert tuned == pytest.approx(0.64)
    # The tuned state goes with the snapshot (the control offsets are past it).
    assert s.pipelines[0].engine.use_cases["a"].feedback.false_alarms == {"cost_spike": 2}
