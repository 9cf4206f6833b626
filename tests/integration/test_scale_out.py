"""Scale-out: two workers in one group, and state that moves with the partitions.

The scenario of ``test_worker.py`` (six use cases over three hours of event time,
two cost spikes, duplicates, bad and late records) goes to 4-partition inputs.
Its use cases hash (murmur2, Kafka's default partitioner) to partitions 0, 1
and 2, two each: both workers of a group get traffic. Results are compared with
offline replay of the same records: accepted counts, per-use-case totals, dead
letters, and the alert records, with no duplicates and none missing.

A partition's engine closes minutes by its own watermark, so the comparison
takes replay's alerts up to the closed minute of the engine that owns each
use case (``/status`` ``partitions``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _worker_harness import Record, WorkerProcess, produce, replay_dead_letters, run_replay
from aiokafka import AIOKafkaProducer
from test_worker import _alert_key, _dead_key, _ts, make_scenario, read_docs

from spendsentry.broker import EmbeddedBroker, TopicSpec, ensure_topics
from spendsentry.engine import Engine
from spendsentry.worker.pipeline import Pipeline
from spendsentry.worker.snapshots import KafkaSnapshotStore
from spendsentry.worker.state import chunk_key, record_value

pytestmark = pytest.mark.integration

PARTITIONS = 4


def write_topics(path: Path, prefix: str) -> dict[str, str]:
    parts = {
        "usage": PARTITIONS,
        "outcomes": PARTITIONS,
        "alerts": 2,
        "throttle": 1,
        "deadletter": 2,
        "control": 1,
        "state": PARTITIONS,
    }
    names = {logical: f"{prefix}.{logical}" for logical in parts}
    lines = []
    for logical, name in names.items():
        lines += [f"[topics.{logical}]", f'name = "{name}"', f"partitions = {parts[logical]}"]
        if logical in ("throttle", "state"):
            lines.append('config = { "cleanup.policy" = "compact" }')
        lines.append("")
    path.write_text("\n".join(lines))
    return names


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[[str, str, Path], WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(bootstrap: str, group: str, topics: Path) -> WorkerProcess:
        # Each worker its own state dir (Faust's data), as on separate hosts.
        state = tmp_path / f"w{len(started)}" / "state"
        state.parent.mkdir(parents=True)
        w = WorkerProcess(bootstrap, topics, state, group)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def owned(status: dict[str, Any]) -> set[int]:
    return {int(p) for p in status["partitions"]}


def settled(statuses: list[dict[str, Any] | None], records: int) -> bool:
    """The group owns every partition once, all records are in, minutes closed."""
    if any(s is None for s in statuses):
        return False
    parts = [p for s in statuses if s for p in s["partitions"].values()]
    if sorted(int(p) for s in statuses if s for p in s["partitions"]) != list(range(PARTITIONS)):
        return False
    if sum(p["records"] for p in parts) != records:
        return False
    # Every engine with data has closed up to its idle watermark minus the lateness.
    return all(
        p["closed_until_ts"] is not None
        and p["watermark"] is not None
        and p["closed_until_ts"] >= p["watermark"] - 180
        for p in parts
        if p["accepted"]
    )


def wait_settled(group: list[WorkerProcess], records: int, timeout: float, what: str) -> list[Any]:
    import time

    deadline = time.monotonic() + timeout
    statuses: list[Any] = []
    while time.monotonic() < deadline:
        for w in group:
            assert w.proc.poll() is None, f"worker exited:\n{w.tail()}"
        statuses = [w.status() for w in group]
        if settled(statuses, records):
            return statuses
        time.sleep(0.3)
    tails = "\n".join(w.tail()[-1500:] for w in group)
    raise AssertionError(f"timed out waiting for {what}: {statuses}\n{tails}")


def wait_split(group: list[WorkerProcess], timeout: float) -> list[dict[str, Any]]:
    """Each worker owns half the partitions (the range assignor's split)."""
    import time

    deadline = time.monotonic() + timeout
    statuses: list[Any] = []
    while time.monotonic() < deadline:
        statuses = [w.status() for w in group]
        if all(s and len(owned(s)) == PARTITIONS // len(group) for s in statuses) and set().union(
            *(owned(s) for s in statuses)
        ) == set(range(PARTITIONS)):
            return statuses
        time.sleep(0.3)
    raise AssertionError(f"the partitions were not split: {statuses}")


def check_group_against_replay(
    statuses: list[dict[str, Any]],
    tmp: Path,
    records: list[Record],
    alerts: list[dict[str, Any]],
    dead: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Compare the group's results with replay's; return replay's alerts."""
    expected, replay_alerts = run_replay(records, tmp)
    replay_dead = replay_dead_letters(tmp)
    assert sum(s["accepted"] for s in statuses) == expected["accepted"]
    assert sum(s["duplicates"] for s in statuses) == expected["duplicates"]
    assert sum(s["late"] for s in statuses) == expected["rejected"].get("late", 0) > 0
    use_cases: dict[str, Any] = {}
    closed_by_use_case: dict[str, float] = {}
    for s in statuses:
        assert not set(s["use_cases"]) & set(use_cases), "a use case in two workers"
        use_cases.update(s["use_cases"])
        for p in s["partitions"].values():
            for name in p["use_cases"]:
                closed_by_use_case[name] = p["closed_until_ts"]
    assert set(use_cases) == set(expected["use_cases"])
    for name, totals in expected["use_cases"].items():
        got = use_cases[name]
        assert got["events_by_kind"] == totals["events_by_kind"], name
        assert got["input_tokens"] == totals["input_tokens"], name
        assert got["output_tokens"] == totals["output_tokens"], name
        assert got["cost_usd"] == pytest.approx(totals["cost_usd"], abs=1e-6), name
    assert Counter(map(_dead_key, dead)) == Counter(map(_dead_key, replay_dead))
    wanted = [
        a for a in replay_alerts if _ts(a["detected_at"]) <= closed_by_use_case[a["use_case"]]
    ]
    assert len(set(map(_alert_key, alerts))) == len(alerts), "duplicate alert records"
    assert sorted(map(_alert_key, alerts)) == sorted(map(_alert_key, wanted))
    by_key = {_alert_key(a): a for a in wanted}
    for a in alerts:
        assert a == by_key[_alert_key(a)]
    per_use_case = Counter(a["use_case"] for a in alerts)
    assert per_use_case == Counter(a["use_case"] for a in wanted)
    return wanted


# -- tests --------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_two_workers_in_one_group_emit_what_replay_emits(
    broker: EmbeddedBroker,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    workers: Callable[[str, str, Path], WorkerProcess],
) -> None:
    main, late = make_scenario(seed=5)
    names = write_topics(tmp_path / "topics.toml", unique_name("s"))
    group = unique_name("g")
    pair = [workers(broker.bootstrap, group, tmp_path / "topics.toml") for _ in range(2)]
    wait_split(pair, 90)
    asyncio.run(produce(broker.bootstrap, names, main))
    wait_settled(pair, len(main), 90, "the main records")
    asyncio.run(produce(broker.bootstrap, names, late))
    statuses = wait_settled(pair, len(main) + len(late), 60, "all records")
    assert all(s["accepted"] > 0 for s in statuses), "both workers should get traffic"
    alerts = read_docs(broker.bootstrap, names["alerts"], 2)
    dead = read_docs(broker.bootstrap, names["deadletter"], 2)
    wanted = check_group_against_replay(statuses, tmp_path / "replay", main + late, alerts, dead)
    assert len(wanted) >= 4
    for w in pair:
        assert w.stop() == 0, w.tail()


@pytest.mark.timeout(240)
def test_state_moves_with_the_partitions_on_rebalance(
    broker: EmbeddedBroker,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    workers: Callable[[str, str, Path], WorkerProcess],
) -> None:
    main, late = make_scenario(seed=5)
    # Minute ~95: before both spikes (minutes 100 and 140), after 95 minutes of
    # baselines that a fresh engine would not have.
    cut = len(main) * 95 // 180
    cut_ts = max(_first_ts(r) for r in main[:cut])
    names = write_topics(tmp_path / "topics.toml", unique_name("r"))
    group = unique_name("g")
    first = workers(broker.bootstrap, group, tmp_path / "topics.toml")
    first.wait_for(lambda s: len(s["partitions"]) == PARTITIONS, 90, "the first join")
    asyncio.run(produce(broker.bootstrap, names, main[:cut]))
    wait_settled([first], cut, 60, "the first part")
    second = workers(broker.bootstrap, group, tmp_path / "topics.toml")
    _, after = wait_split([first, second], 90)
    moved = owned(after)
    assert all(after["partitions"][str(p)]["restored"] for p in moved)
    # The moved engines arrived with their history: records the first worker read.
    assert sum(after["partitions"][str(p)]["records"] for p in moved) > 0
    asyncio.run(produce(broker.bootstrap, names, main[cut:]))
    wait_settled([first, second], len(main), 90, "the rest")
    asyncio.run(produce(broker.bootstrap, names, late))
    statuses = wait_settled([first, second], len(main) + len(late), 60, "all records")
    alerts = read_docs(broker.bootstrap, names["alerts"], 2)
    dead = read_docs(broker.bootstrap, names["deadletter"], 2)
    wanted = check_group_against_replay(statuses, tmp_path / "replay", main + late, alerts, dead)
    # An incident on a moved partition after the move was detected as replay
    # detected it: it needed the baselines learnt before the move.
    moved_use_cases = {u for p in moved for u in statuses[1]["partitions"][str(p)]["use_cases"]}
    after_move = [
        a
        for a in wanted
        if a["use_case"] in moved_use_cases
        and a["status"] == "firing"
        and _ts(a["detected_at"]) > cut_ts
    ]
    assert after_move, (moved, moved_use_cases, [_alert_key(a) for a in wanted])
    for w in (first, second):
        assert w.stop() == 0, w.tail()


def _first_ts(record: Record) -> float:
    import json

    try:
        doc = json.loads(record.value)
    except ValueError:
        return 0.0  # the scenario's bad records
    if isinstance(doc, list):
        doc = doc[0] if doc and isinstance(doc[0], dict) else {}
    ts = doc.get("ts") if isinstance(doc, dict) else None
    return float(ts) if isinstance(ts, int | float) else 0.0


@pytest.mark.timeout(60)
def _state(partition: int, records: int, published: list[str] | None = None) -> dict[str, Any]:
    """A pipeline's state to snapshot (``published`` makes it as large as needed)."""
    pipeline = Pipeline(Engine(), partition=partition)
    pipeline.records = records
    state = pipeline.snapshot_state()
    state["published"] = published or []
    return state


def test_snapshot_store_finds_the_latest_complete_snapshot(
    broker: EmbeddedBroker, unique_name: Callable[[str], str]
) -> None:
    """Chunked snapshots, another group's records in between, and a torn snapshot."""
    spec = TopicSpec(unique_name("state"), 2, {"cleanup.policy": "compact"})

    async def scenario() -> None:
        await ensure_topics(broker.bootstrap, [spec])
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        await producer.start()
        mine = KafkaSnapshotStore(broker.bootstrap, spec, "g1", chunk_bytes=2000)
        other = KafkaSnapshotStore(broker.bootstrap, spec, "g2", chunk_bytes=2000)
        reader = KafkaSnapshotStore(broker.bootstrap, spec, "g1", chunk_bytes=2000)
        for store in (mine, other, reader):
            await store.start()
        try:
            assert await reader.latest(0) is None
            for i in range(3):
                await mine.save(producer, 0, _state(0, i, ["a" * 250] * (10 + i)))
                await other.save(producer, 0, _state(0, 100 + i, ["x" * 500] * 10))
                await mine.save(producer, 1, _state(1, i))
            found = await reader.latest(0)
            assert found is not None and found.seq == 3 and len(found.header["chunk_offsets"]) == 2
            assert (await reader.load(found))["records"] == 2
            assert reader.seq[0] == 3  # the next snapshot continues the sequence
            # A crash between the chunks and the manifest of snapshot 4: the
            # chunks are there, the manifest is not. Snapshot 3 still loads.
            for index in range(2):
                value = record_value(
                    {"type": "chunk", "seq": 4, "writer": mine.writer, "index": index, "count": 3},
                    b"torn",
                )
                await producer.send_and_wait(
                    spec.name, value=value, key=chunk_key("g1", 0, 0, index), partition=0
                )
            found = await reader.latest(0)
            assert found is not None and found.seq == 3
            assert (await reader.load(found))["records"] == 2
            p1 = await reader.latest(1)
            assert p1 is not None
            loaded = await reader.load(p1)
            assert (loaded["partition"], loaded["records"]) == (1, 2)
        finally:
            for store in (mine, other, reader):
                await store.stop()
            await producer.stop()

    asyncio.run(scenario())
