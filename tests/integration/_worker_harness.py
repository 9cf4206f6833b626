"""Helpers for tests that run ``spendsentry worker`` as a subprocess on a real broker.

tests/integration/test_worker.py keeps its helpers next to its tests; the fault
and secrets tests need a few more knobs (environment, policies, log level, the
labelled simulator as input), so they share this small module instead.

Everything binds 127.0.0.1; a worker runs in its own process group and is
stopped by pid (SIGTERM, a grace period, then SIGKILL of the group).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

import spendsentry.replay
from spendsentry.broker import TopicSpec, free_port
from spendsentry.engine import Engine, EngineConfig
from spendsentry.policy import PolicySet
from spendsentry.replay import Sinks, replay, summary
from spendsentry.simulate import Scenario
from spendsentry.timeutil import parse_ts

PARTITIONS = {
    "usage": 3,
    "outcomes": 3,
    "alerts": 2,
    "throttle": 1,
    "deadletter": 2,
    "control": 1,
    # Worker state (snapshots) once it moves to a compacted topic; a worker that
    # keeps state in --state-dir ignores this table.
    "state": 3,
}
_COMPACTED = ("throttle", "state")


@dataclass(frozen=True)
class Record:
    """One Kafka message: logical input topic, key, value."""

    topic: str  # "usage" or "outcomes"
    key: bytes
    value: bytes


# -- input --------------------------------------------------------------------


def scenario_start(hours: float) -> datetime:
    """A whole-minute start ``hours`` + 1 h before now: no event is in the future."""
    return datetime.fromtimestamp((int(time.time()) // 60) * 60 - int((hours + 1) * 3600), UTC)


def scenario_events(seed: int, hours: float, incidents: Iterable[str]) -> list[dict[str, Any]]:
    """The labelled simulator's events (event-time order)."""
    sc = Scenario(seed=seed, start=scenario_start(hours), hours=hours, incidents=list(incidents))
    return list(sc.iter_events())


def as_records(events: Iterable[dict[str, Any]], per_message: int = 25) -> list[Record]:
    """Group events into JSON-array messages keyed by use case, as a gateway batches.

    Events of one use case and one input topic go together, at most
    ``per_message`` per array, and a message never spans more than one
    event-time minute, so disorder stays far inside the allowed lateness.
    """
    records: list[Record] = []
    open_groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    minute = None

    def flush_all() -> None:
        for (topic, use_case), docs in open_groups.items():
            records.append(Record(topic, use_case.encode(), orjson.dumps(docs)))
        open_groups.clear()

    for event in events:
        ts = event["ts"]
        this_minute = int((parse_ts(ts) if isinstance(ts, str) else ts) // 60)
        if this_minute != minute:
            flush_all()
            minute = this_minute
        topic = "outcomes" if event.get("type") == "outcome" else "usage"
        group = open_groups.setdefault((topic, event["use_case"]), [])
        group.append(event)
        if len(group) >= per_message:
            records.append(Record(topic, event["use_case"].encode(), orjson.dumps(group)))
            del open_groups[(topic, event["use_case"])]
    flush_all()
    return records


def count_events(records: Iterable[Record]) -> int:
    total = 0
    for r in records:
        doc = json.loads(r.value)
        total += len(doc) if isinstance(doc, list) else 1
    return total


# -- topics, producing, reading -----------------------------------------------


def write_topics_file(path: Path, prefix: str) -> dict[str, str]:
    """A topics TOML with unique names; returns logical -> topic name."""
    names = {logical: f"{prefix}.{logical}" for logical in PARTITIONS}
    lines = []
    for logical, name in names.items():
        lines += [f"[topics.{logical}]", f'name = "{name}"', f"partitions = {PARTITIONS[logical]}"]
        if logical in _COMPACTED:
            lines.append('config = { "cleanup.policy" = "compact" }')
        lines.append("")
    path.write_text("\n".join(lines))
    return names


def topic_specs(names: Mapping[str, str]) -> list[TopicSpec]:
    return [
        TopicSpec(name, PARTITIONS[logical], {"cleanup.policy": "compact"})
        if logical in _COMPACTED
        else TopicSpec(name, PARTITIONS[logical])
        for logical, name in names.items()
    ]


async def produce(bootstrap: str, names: Mapping[str, str], records: Iterable[Record]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, acks="all", enable_idempotence=False
    )
    await producer.start()
    try:
        for r in records:
            await producer.send(names[r.topic], r.value, key=r.key)
        await producer.flush()
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str, partitions: int) -> list[bytes]:
    """Every record value of ``topic`` in (partition, offset) order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: dict[TopicPartition, list[bytes]] = {tp: [] for tp in tps}
        deadline = time.monotonic() + 30
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                out[tp] += [r.value for r in records if r.value is not None]
        return [value for tp in tps for value in out[tp]]
    finally:
        await consumer.stop()


# -- replay, the reference -------------------------------------------------------


def run_replay(
    records: list[Record], tmp: Path, policies: PolicySet | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(summary, alerts) of ``spendsentry.replay`` over the same messages, in order.

    Batches of 500 events, as the worker's ``--max-batch 500``.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    inp = tmp / "input.jsonl"
    inp.write_bytes(b"".join(r.value + b"\n" for r in records))
    engine = Engine(policies or PolicySet.empty(), config=EngineConfig(allowed_lateness_s=120.0))
    sinks = Sinks(str(tmp / "alerts.jsonl"), None, str(tmp / "dead.jsonl"))
    saved = spendsentry.replay.BATCH_SIZE
    spendsentry.replay.BATCH_SIZE = 500
    try:
        result = replay([str(inp)], engine, sinks)
    finally:
        spendsentry.replay.BATCH_SIZE = saved
        sinks.close()
    alerts = [json.loads(x) for x in (tmp / "alerts.jsonl").read_text().splitlines()]
    return summary(result, engine), alerts


def replay_dead_letters(tmp: Path) -> list[dict[str, Any]]:
    """The dead-letter records of the :func:`run_replay` that wrote to ``tmp``."""
    return [json.loads(x) for x in (tmp / "dead.jsonl").read_text().splitlines()]


def alert_key(a: Mapping[str, Any]) -> str:
    """The worker's dedupe key of an alert record (docs/worker.md)."""
    return f"{a['alert_id']}:{a['status']}:{a['severity']}:{a['incident_seq']}"


def alerts_up_to(alerts: Iterable[Mapping[str, Any]], closed_until_ts: float) -> list[str]:
    """Keys of the alerts detected in minutes the worker has closed."""
    return [alert_key(a) for a in alerts if parse_ts(a["detected_at"]) <= closed_until_ts]


def assert_totals_equal(status: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Per-use-case totals of ``/status`` equal replay's summary."""
    assert set(status["use_cases"]) == set(expected["use_cases"])
    counts = {k: status[k] for k in ("accepted", "duplicates", "late", "records")}
    for name, totals in expected["use_cases"].items():
        got = status["use_cases"][name]
        for field in ("events_by_kind", "input_tokens", "output_tokens", "outcomes"):
            assert got[field] == totals[field], (name, field, got[field], totals[field], counts)
        assert abs(got["cost_usd"] - totals["cost_usd"]) < 1e-6, name
    assert status["accepted"] == expected["accepted"]


def caught_up(status: Mapping[str, Any], records: int, until: float | None = None) -> bool:
    """All ``records`` consumed, event time closed up to the idle watermark, no
    throttle command still held back from the catch-up (they go out once the
    backlog is read: docs/throttling.md) and nothing still being published.

    ``until`` (the data's last event time): also closed up to it. The watermark
    is the least over partitions that are not idle, and a partition whose last
    event is early (an outcome flow that stopped) counts as idle only after 30 s
    of wall clock: until then "closed up to the watermark" is not the data's end.
    """
    closed, watermark = status["closed_until_ts"], status["watermark"]
    return (
        status["records"] == records
        and closed is not None
        and watermark is not None
        and closed >= watermark - 180
        and (until is None or closed >= until - 180)
        and not status.get("throttle", {}).get("held_while_catching_up", 0)
        # The last batch's alerts and commands are on their way to the broker.
        and not status.get("publishing", 0)
    )


# -- the worker process ----------------------------------------------------------


class WorkerProcess:
    """``python -m spendsentry worker`` in its own process group, output to a file."""

    def __init__(
        self,
        bootstrap: str,
        topics_file: Path,
        state_dir: Path,
        group: str,
        *,
        policies: Path | None = None,
        env: Mapping[str, str] | None = None,
        extra_args: Iterable[str] = (),
        snapshot_interval: float = 1.0,
    ) -> None:
        self.port = free_port()
        self.log = state_dir.parent / f"worker-{self.port}.log"
        if policies is None:
            policies = state_dir.parent / "no-policies"
            policies.mkdir(exist_ok=True)
        argv = [
            sys.executable, "-m", "spendsentry", "worker",
            "--broker", bootstrap,
            "--web-port", str(self.port),
            "--topics", str(topics_file),
            "--group", group,
            "--state-dir", str(state_dir),
            "--policies", str(policies),
            "--idle-partition", "2",
            "--snapshot-interval", str(snapshot_interval),
            "--session-timeout-ms", "6000",
            "--max-batch", "500",
            *extra_args,
        ]  # fmt: skip
        self._log_file = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            cwd=state_dir.parent,
            env={**os.environ, **(env or {})},
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
            body: bytes = r.read()
            return body

    def status(self) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] = json.loads(self.get("/status"))
            return doc
        except (OSError, ValueError):
            return None

    def wait_for(
        self, check: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"worker exited:\n{self.tail()}"
            status = self.status()
            if status is not None and check(status):
                return status
            time.sleep(0.2)
        raise AssertionError(
            f"timed out waiting for {what}; status={_short(status)}\n{self.tail()}"
        )

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def output(self) -> bytes:
        return self.log.read_bytes()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._log_file.close()

    def stop(self, grace: float = 20.0) -> int | None:
        """SIGTERM, grace period, then SIGKILL of the process group."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log_file.close()
        return self.proc.returncode


def metric_sum(text: str, sample: str, **labels: str) -> float:
    """The sum of ``sample`` over every series whose labels include ``labels``
    (engine-work counters carry a ``partition`` label: this sums over it)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def wait_for_metric(
    worker: WorkerProcess, sample: str, value: float, timeout: float = 30.0, **labels: str
) -> str:
    """Scrape until ``metric_sum`` reaches ``value`` (engine-work counters show
    what the last durable snapshot holds); return the last scrape's text."""
    deadline = time.monotonic() + timeout
    while True:
        text = worker.get("/metrics").decode()
        got = metric_sum(text, sample, **labels)
        if got >= value or time.monotonic() > deadline:
            assert got == value, f"{sample}{labels}: {got} (expected {value})"
            return text
        time.sleep(0.2)


def _short(status: Mapping[str, Any] | None) -> Any:
    if status is None:
        return None
    return {k: v for k, v in status.items() if k not in ("view", "use_cases")}


def seeded_points(seed: int, n: int, size: int) -> list[int]:
    """``n`` distinct sorted cut points in ``(0, size)``, from a seeded rng."""
    rng = random.Random(seed)
    return sorted(rng.sample(range(size // 10, size * 9 // 10), n))


def assert_same_alerts(
    published: list[Mapping[str, Any]],
    reference: list[Mapping[str, Any]],
    closed_until_ts: float,
) -> int:
    """Every reference alert up to the worker's last closed minute was published
    exactly once, and nothing else was; returns how many that is."""
    got = [alert_key(a) for a in published]
    doubled = [k for k, n in Counter(got).items() if n > 1]
    assert not doubled, f"published more than once: {doubled[:5]}"
    want = alerts_up_to(reference, closed_until_ts)

    def show(alerts: Iterable[Mapping[str, Any]], keys: set[str]) -> list[tuple[str, ...]]:
        return [
            (a["use_case"], a["kind"], a["status"], a["detected_at"])
            for a in alerts
            if alert_key(a) in keys
        ]

    extra, missing = set(got) - set(want), set(want) - set(got)
    assert not extra and not missing, {
        "extra": show(published, extra),
        "missing": show(reference, missing),
    }
    return len(want)
