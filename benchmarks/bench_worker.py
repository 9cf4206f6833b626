"""Worker throughput: the real ``spendsentry worker`` process against the raw ceiling.

Run with ``python benchmarks/bench_worker.py [--runs 3]``. Each run of each
traffic shape starts an embedded broker, publishes the events with
``spendsentry produce`` (to the topics of streams/topics.toml, before anything
reads them, so produce speed is not measured), then reads them twice:

1. ceiling: a plain aiokafka consumer, ``getmany`` + ``orjson.loads`` per
   record over the same input topics (the most any Python consumer can do);
2. worker: ``python -m spendsentry worker`` as a subprocess (the integration
   tests' :class:`WorkerProcess`), events/s from its own ``/metrics``: the
   ``spendsentry_events_total`` counter is polled, and the rate runs from the
   first poll that sees a record counted to the poll that sees the last one.

The ceiling is timed the same way (from its first batch to its last record),
so start-up costs (process start, group join, snapshot restore) are in neither.

Traffic shapes:

``dense``
    A large company: ``--dense-rate`` events per event-second (100k) over many
    use cases, all within one event-time minute: the cost of ingest.
``sample``
    examples/sample-6h.jsonl.gz: six hours of a dozen use cases (its junk
    lines included). Most of the cost is closing minutes (detectors).

Prints each run, then the median per shape and the median of the per-run
ratios worker/ceiling (the machines here are shared and noisy: the ratio is
the figure to compare), and last a one-line JSON summary. Not collected by
pytest; tests/integration/test_bench_worker.py runs it on a tiny input.

``--latency-rate R`` (e.g. 50000) measures event-to-alert latency through a
real worker process instead (``python -m spendsentry worker`` with
``--allowed-lateness 1``): ``--producers`` processes write R usage events/s
in all, whose event time is the wall clock at produce time (it is also the Kafka
record timestamp), 40 use cases with a ``tokens_per_minute`` budget. At ``--waves``
consecutive minute boundaries a new group of 10 use cases steps its input tokens
up fivefold (the injected incidents; the rest never step). The budget monitor
needs two anomalous minutes, so each stepped use case alerts when its second
stepped minute closes: one sample per stepped use case, over several minute
closes (so p99 is not one moment's luck). Latency of one alert = its arrival on
``ai.alerts`` minus the moment its minute could first be closed: the end of the
minute (``detected_at``) plus the allowed lateness, which is the produce time of
the first event past that point (event time is produce time here). An alert
cannot come earlier; everything after is the pipeline (consumer fetch, decode,
engine, watermark, detectors, publish).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from spendsentry.broker import EmbeddedBroker, ensure_topics, free_port
from spendsentry.timeutil import format_ts, parse_ts
from spendsentry.worker.topics import TopicsConfig

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "sample-6h.jsonl.gz"
#: The topics a deployment creates (12 partitions of usage and outcomes).
TOPICS_FILE = ROOT / "streams" / "topics.toml"

# The worker process as the integration tests run it (one harness, not a copy).
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from _worker_harness import WorkerProcess  # noqa: E402

WEEK = 7 * 86400.0
SHAPES = ("dense", "sample")

# -- traffic shapes ----------------------------------------------------------------

#: Priced models of the bundled sample, so the dense shape costs what real traffic does.
DENSE_MODELS = ("gpt-4.1-mini", "gpt-4o-mini", "gpt-4o", "text-embedding-3-small")


def write_dense(path: Path, n: int, rate: float, use_cases: int, seed: int = 1) -> None:
    """``n`` usage events at ``rate`` per event-second over ``use_cases`` use cases.

    They start on a whole minute ten minutes ago, so at 100k events per
    event-second they all fall in one minute: no minute closes while they are
    counted, the run measures ingest.
    """
    rng = random.Random(seed)
    start = (int(time.time()) // 60) * 60 - 600.0
    with path.open("wb") as fh:
        for i in range(n):
            doc = {
                "event_id": f"d{i}",
                "ts": format_ts(start + i / rate),
                "use_case": f"uc{rng.randrange(use_cases)}",
                "provider": "openai",
                "model": DENSE_MODELS[i % len(DENSE_MODELS)],
                "input_tokens": rng.randint(50, 2000),
                "output_tokens": rng.randint(10, 500),
                "session_id": f"s{rng.randrange(2000)}",
            }
            fh.write(orjson.dumps(doc) + b"\n")


def _shift_doc(doc: object, shift: float) -> object:
    if isinstance(doc, dict) and isinstance(doc.get("ts"), str | int | float):
        ts = _ts(doc["ts"])
        if ts is not None:  # a bad timestamp stays bad: the worker dead-letters it
            doc["ts"] = format_ts(ts + shift)
    elif isinstance(doc, list):
        return [_shift_doc(d, shift) for d in doc]
    return doc


def _sample_lines(limit: int) -> Iterator[bytes]:
    with gzip.open(SAMPLE, "rb") as fh:
        for i, line in enumerate(fh):
            if limit and i >= limit:
                return
            yield line.rstrip(b"\n")


def write_sample(path: Path, limit: int = 0) -> None:
    """The bundled sample (its first ``limit`` lines; 0: all), moved by whole weeks
    to end within the last week: the same traffic, the same hours and weekdays,
    never in the future nor older than what a worker takes as current."""
    last = max(
        (ts for line in _sample_lines(limit) if (ts := _line_ts(line)) is not None),
        default=time.time(),
    )
    shift = ((time.time() - last) // WEEK) * WEEK
    with path.open("wb") as fh:
        for line in _sample_lines(limit):
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                fh.write(line + b"\n")  # junk stays junk
                continue
            fh.write(orjson.dumps(_shift_doc(doc, shift)) + b"\n")


def _ts(value: object) -> float | None:
    try:
        return parse_ts(value)
    except (TypeError, ValueError):
        return None


def _line_ts(line: bytes) -> float | None:
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return _ts(doc.get("ts")) if isinstance(doc, dict) else None


def publish(bootstrap: str, path: Path, batch: int, cwd: Path) -> None:
    """``spendsentry produce`` the file: keyed by use case, JSON arrays of ``batch``."""
    cmd = [
        sys.executable, "-m", "spendsentry", "produce", str(path), "--broker", bootstrap,
        "--topics", str(TOPICS_FILE), "--batch", str(batch),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"spendsentry produce failed ({done.returncode}):\n{done.stderr}")
    print(f"  {done.stdout.strip()}", flush=True)


# -- measuring -----------------------------------------------------------------------


@dataclass
class Rate:
    """Events counted between the first and the last observation of a reader."""

    events: int = 0
    seconds: float = 0.0

    @property
    def per_s(self) -> float | None:
        # One observation only (a tiny input read in one batch): no rate.
        return self.events / self.seconds if self.seconds > 0 else None


@dataclass
class Observed:
    """What one reader saw of the whole topic."""

    rate: Rate
    total_events: int
    rejected: dict[str, int] = field(default_factory=dict)
    #: Events counted before the first observation (outside the window).
    before: int = 0


def _input_partitions(topics: TopicsConfig) -> list[TopicPartition]:
    return [
        TopicPartition(topic.name, p)
        for topic in (topics.usage, topics.outcomes)
        for p in range(topic.partitions)
    ]


def _events_in(value: bytes | None) -> int:
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return 0
    return len(doc) if isinstance(doc, list) else 1


async def ceiling(bootstrap: str, topics: TopicsConfig, max_batch: int) -> tuple[Observed, int]:
    """``getmany`` + ``orjson.loads`` over the input topics, fetched as the worker's
    consumer fetches (same fetch sizes, wait and batch size); returns what it
    saw and how many records the topics hold."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 << 20,
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    try:
        tps = _input_partitions(topics)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records = events = 0
        first: tuple[float, int] | None = None
        deadline = time.monotonic() + 600
        while not await _caught_up(consumer, tps):
            if time.monotonic() > deadline:
                raise SystemExit(f"the ceiling read {records:,} records and not the end in 600 s")
            batch = await consumer.getmany(timeout_ms=200, max_records=max_batch)
            for rs in batch.values():
                for r in rs:
                    events += _events_in(r.value)
                records += len(rs)
            if batch and first is None:
                first = (time.perf_counter(), events)
        assert first is not None, "the input topics are empty"
        rate = Rate(events - first[1], time.perf_counter() - first[0])
        return Observed(rate, events, before=first[1]), records
    finally:
        await consumer.stop()


async def _caught_up(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> bool:
    """Every partition read up to the high watermark its last fetch reported.

    Not ``end_offsets``: the embedded broker (Tansu) answers ListOffsets with an
    offset short of the end of a partition written in several batches (measured:
    150 for a partition whose records run to offset 233); fetch responses carry
    the right one.
    """
    for tp in tps:
        high = consumer.highwater(tp)
        if high is None or await consumer.position(tp) < high:
            return False
    return True


@dataclass
class Counters:
    """The worker's counters of interest, from one ``/metrics`` scrape."""

    records: int
    events: int
    rejected: dict[str, int]


def read_counters(text: str) -> Counters:
    records = events = 0.0
    rejected: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "spendsentry_records_total":
                records += s.value
            elif s.name == "spendsentry_events_total":
                events += s.value
            elif s.name == "spendsentry_rejected_total" and s.value:
                rejected[s.labels["reason"]] = int(s.value)
    return Counters(int(records), int(events), rejected)


def run_worker(
    bootstrap: str,
    tmp: Path,
    records: int,
    events: int,
    max_batch: int,
    poll_s: float,
    timeout: float,
) -> Observed:
    """The worker process over the pre-produced topics, its counters polled.

    The window runs from the first scrape that sees a record counted to the one
    that sees the last (``spendsentry_records_total``: this process's work, live);
    events per second are records per second times the input's events per
    record. The engine-work counters (``spendsentry_events_total``) advance only
    with durable snapshots, so the total is read once the last one is written.

    Flags as the integration tests run it, except the batch size and snapshot
    interval, which are the defaults. ``--idle-partition 2`` (the harness's) lets
    partitions that carry nothing stop holding event time back early in the
    run; with the default 30 s, a backlog read in less than that would be
    ingested before the first minute closes, and the closing (the sample's main
    cost) would fall outside the measured window.
    """
    worker = WorkerProcess(
        bootstrap,
        TOPICS_FILE,
        tmp / "state",
        group=f"bench-{uuid.uuid4().hex[:8]}",
        snapshot_interval=5.0,
        extra_args=["--max-batch", str(max_batch), "--no-notify"],
    )
    try:
        first: tuple[float, int] | None = None
        deadline = time.monotonic() + timeout
        while True:
            if worker.proc.poll() is not None:
                raise SystemExit(f"the worker exited:\n{worker.tail()}")
            if time.monotonic() > deadline:
                raise SystemExit(f"the worker did not count {records:,} records in {timeout:.0f} s")
            try:
                text = worker.get("/metrics").decode()
            except OSError:
                text = None  # not listening yet
            at = time.perf_counter()
            if text is not None:
                now = read_counters(text)
                if first is None and now.records > 0:
                    first = (at, now.records)
                if first is not None and now.records >= records:
                    per_record = events / records if records else 0.0
                    rate = Rate(int((now.records - first[1]) * per_record), at - first[0])
                    before = int(first[1] * per_record)
                    final = _durable_counters(worker, records, deadline)
                    return Observed(rate, final.events, final.rejected, before=before)
            time.sleep(poll_s)
    finally:
        worker.stop()


def _durable_counters(worker: WorkerProcess, records: int, deadline: float) -> Counters:
    """The counters once every record is in a durable snapshot (or at the deadline).

    Events are the engines' own total (``/status``): the per-label series on
    ``/metrics`` follow the busiest use cases, and a label that drops out of the
    top takes its series with it, so their sum is not a total.
    """
    status: dict = {}
    while time.monotonic() < deadline:
        status = worker.status() or {}
        durable = sum(p.get("committed_records", 0) for p in status.get("partitions", {}).values())
        if durable >= records:
            break
        time.sleep(0.2)
    counters = read_counters(worker.get("/metrics").decode())
    return Counters(counters.records, int(status.get("accepted", 0)), counters.rejected)


@dataclass
class RunResult:
    ceiling: Observed
    worker: Observed
    records: int

    @property
    def ratio(self) -> float | None:
        c, w = self.ceiling.rate.per_s, self.worker.rate.per_s
        return w / c if c and w else None


def one_run(shape: str, data: Path, args: argparse.Namespace) -> RunResult:
    topics = TopicsConfig.load(TOPICS_FILE)
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory(prefix="bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        publish(broker.bootstrap, data, args.batch, tmp)
        raw, records = asyncio.run(ceiling(broker.bootstrap, topics, args.max_batch))
        worker = run_worker(
            broker.bootstrap,
            tmp,
            records,
            raw.total_events,
            args.max_batch,
            args.poll,
            args.timeout,
        )
    result = RunResult(raw, worker, records)
    print(
        f"  {shape}: {records:,} records, {raw.total_events:,} events; "
        f"ceiling {_fmt(raw.rate.per_s)} events/s, worker {_fmt(worker.rate.per_s)} events/s "
        f"(counted {worker.total_events:,}, {worker.before:,} before its first scrape; "
        f"rejected {worker.rejected or 0}), "
        f"worker/ceiling {_fmt(result.ratio, '.3f')}",
        flush=True,
    )
    return result


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    return "n/a" if value is None else format(value, spec)


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


@dataclass
class ShapeSummary:
    """One traffic shape over all runs: medians, and what the last run counted."""

    records: int
    events: int
    worker_events_counted: int
    rejected: dict[str, int]
    ceiling_events_per_s: float | None
    worker_events_per_s: float | None
    #: The median of the per-run ratios (each run's pair shares its machine load).
    ratio_worker_to_ceiling: float | None


def summarize(results: list[RunResult]) -> ShapeSummary:
    last = results[-1]
    return ShapeSummary(
        records=last.records,
        events=last.ceiling.total_events,
        worker_events_counted=last.worker.total_events,
        rejected=last.worker.rejected,
        ceiling_events_per_s=_round(_median([r.ceiling.rate.per_s for r in results])),
        worker_events_per_s=_round(_median([r.worker.rate.per_s for r in results])),
        ratio_worker_to_ceiling=_round(_median([r.ratio for r in results]), 3),
    )


def _round(value: float | None, digits: int = 0) -> float | None:
    return None if value is None else round(value, digits)


def throughput(args: argparse.Namespace) -> dict[str, object]:
    """Every shape, ``args.runs`` times; returns the summary printed as JSON."""
    shapes: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="bench-data-") as data_dir:
        for shape in args.shapes:
            data = Path(data_dir, f"{shape}.jsonl")
            if shape == "dense":
                write_dense(data, args.dense_events, args.dense_rate, args.dense_use_cases)
            else:
                write_sample(data, args.sample_lines)
            print(f"{shape}: {args.runs} run(s)", flush=True)
            summary = summarize([one_run(shape, data, args) for _ in range(args.runs)])
            shapes[shape] = asdict(summary)
            print(
                f"{shape}: median ceiling {_fmt(summary.ceiling_events_per_s)} events/s, "
                f"worker {_fmt(summary.worker_events_per_s)} events/s, "
                f"worker/ceiling {_fmt(summary.ratio_worker_to_ceiling, '.3f')}",
                flush=True,
            )
    return {
        "bench": "worker",
        "runs": args.runs,
        "batch": args.batch,
        "max_batch": args.max_batch,
        "shapes": shapes,
    }


# -- event-to-alert latency through a real worker process ------------------------

LATENCY_USE_CASES = 40
#: Use cases stepping up per wave; the last ones never step (the control group).
WAVE = 10
#: Mean tokens of a normal event (input 100..500, output 50).
MEAN_TOKENS = 350
LATENESS_S = 1.0


def _step_minute(uc: int, waves: int) -> int | None:
    """The wave (0-based minute after the first step) in which ``uc`` steps up."""
    wave = uc // WAVE
    return wave if wave < waves else None


async def produce_steady(
    bootstrap: str,
    topic: str,
    rate: float,
    step_at: float,
    waves: int,
    until: float,
    part: int,
    tick_s: float,
) -> None:
    """Produce ``rate`` events/s, event time = produce time, until ``until``.

    Like a gateway's usage reporter, events are batched: every ``tick_s`` each
    use case's events of that tick go out as one JSON array (0: one message per
    event). The Kafka record timestamp is the send time. Use case ``uc`` steps
    its input tokens up fivefold from ``step_at`` plus 60 s per wave before it
    (see :func:`_step_minute`).
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20, enable_idempotence=False
    )
    await producer.start()
    rng = random.Random(2 + part)
    keys = [f"uc{i}".encode() for i in range(LATENCY_USE_CASES)]
    steps = [
        step_at + 60.0 * w if (w := _step_minute(uc, waves)) is not None else float("inf")
        for uc in range(LATENCY_USE_CASES)
    ]
    sent = behind = messages = 0
    start = time.time()
    try:
        while (now := time.time()) < until:
            due = int((now - start) * rate)
            behind = max(behind, due - sent)
            pending: dict[int, list[dict[str, object]]] = {}
            while sent < due:
                uc = sent % LATENCY_USE_CASES
                tokens = rng.randint(100, 500)
                now = time.time()
                if now >= steps[uc]:
                    tokens *= 5
                event = {
                    "event_id": f"l{part}-{sent}",
                    "ts": now,
                    "use_case": f"uc{uc}",
                    "model": "gpt-4o-mini",
                    "input_tokens": tokens,
                    "output_tokens": 50,
                    "cost_usd": 0.0001,
                }
                sent += 1
                if tick_s > 0:
                    pending.setdefault(uc, []).append(event)
                    continue
                await producer.send(
                    topic, orjson.dumps(event), key=keys[uc], timestamp_ms=int(now * 1000)
                )
                messages += 1
            stamp = int(time.time() * 1000)
            for uc, events in pending.items():
                await producer.send(topic, orjson.dumps(events), key=keys[uc], timestamp_ms=stamp)
                messages += 1
            await asyncio.sleep(tick_s or 0.005)
        await producer.flush()
    finally:
        await producer.stop()
    elapsed = time.time() - start
    print(f"producer {part}: {sent:,} events in {messages:,} messages in {elapsed:.0f}s = "
          f"{sent / elapsed:,.0f} ev/s (at most {behind:,} events behind schedule)",
          flush=True)  # fmt: skip


def _stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, a grace period, then SIGKILL of the process group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _wait_ready(port: int, worker: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited with {worker.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as r:
                if b"ai.usage" in r.read():
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("the worker did not get ready within 90 s")


def _metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        return r.read().decode()


def _lags(text: str) -> str:
    """The worker's watermark lag and summed consumer lag, from /metrics."""
    watermark = lag = 0.0
    for line in text.splitlines():
        if line.startswith("spendsentry_watermark_lag_seconds "):
            watermark = float(line.split()[-1])
        elif line.startswith("spendsentry_consumer_lag{"):
            lag += float(line.split()[-1])
    return f"watermark lag {watermark:.2f}s, consumer lag {lag:,.0f} records"


def _percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


async def latency(
    rate: float, waves: int, producers: int, tick_s: float, trace: bool = False
) -> None:
    # Normal tokens per use case per minute, and a budget 2.5 times that: the
    # fivefold step overruns it, normal traffic never does.
    per_minute = rate / LATENCY_USE_CASES * 60 * MEAN_TOKENS
    budget = int(per_minute * 2.5)
    stepped = min(LATENCY_USE_CASES, waves * WAVE)
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        topics = TopicsConfig.defaults()
        await ensure_topics(broker.bootstrap, topics.specs())
        policies = Path(tmp, "policies")
        policies.mkdir()
        (policies / "bench.toml").write_text(
            f'[defaults]\nowner = "#bench"\n[defaults.budgets]\ntokens_per_minute = {budget}\n'
        )
        port = free_port()
        cmd = [
            sys.executable, "-m", "spendsentry", "worker", "--broker", broker.bootstrap,
            "--policies", str(policies), "--state-dir", str(Path(tmp, "state")),
            "--allowed-lateness", str(LATENESS_S), "--idle-partition", "5",
            "--web-port", str(port), "--no-notify", "--session-timeout-ms", "6000",
            "--log-level", "WARNING",
        ]  # fmt: skip
        worker = subprocess.Popen(cmd, cwd=tmp, start_new_session=True)
        writers: list[subprocess.Popen[bytes]] = []
        consumer = AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10
        )
        # The baseline: the same broker's produce-to-consume latency of the
        # usage messages themselves, read by a plain consumer in the same run.
        raw = AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10
        )
        transport: list[float] = []
        try:
            _wait_ready(port, worker)
            await consumer.start()
            await raw.start()
            alert_tps = [TopicPartition(topics.alerts.name, p) for p in range(3)]
            consumer.assign(alert_tps)
            await consumer.seek_to_end(*alert_tps)
            usage_tps = [
                TopicPartition(topics.usage.name, p) for p in range(topics.usage.partitions)
            ]
            raw.assign(usage_tps)
            await raw.seek_to_end(*usage_tps)
            # The first wave steps up at a minute boundary at least 10 s from
            # now, one more wave each minute; each alerts when its second
            # stepped minute closes, so the run ends 2 minutes after the last.
            step_at = (int((time.time() + 10) // 60) + 1) * 60.0
            until = step_at + 60 * (waves - 1) + 120 + 10
            print(f"latency run: {rate:,.0f} ev/s from {producers} producer(s), first step at "
                  f"+{step_at - time.time():.0f}s, {waves} wave(s) of {WAVE} use cases, "
                  f"{until - time.time():.0f}s in all; budget {budget:,} tokens/min")  # fmt: skip
            writers = [
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--_produce",
                        broker.bootstrap,
                        topics.usage.name,
                        str(rate / producers),
                        str(step_at),
                        str(waves),
                        str(until),
                        str(n),
                        str(tick_s),
                    ],
                    start_new_session=True,
                )
                for n in range(producers)
            ]
            latencies: list[float] = []
            early: list[str] = []
            deadline = until + 30
            next_trace = time.time()
            while time.time() < deadline and len(latencies) < stepped:
                if trace and time.time() >= next_trace:
                    next_trace += 1.0
                    lags = _lags(await asyncio.to_thread(_metrics_text, port))
                    print(f"[{time.strftime('%H:%M:%S')}] {lags}", flush=True)
                for records in (await raw.getmany(timeout_ms=0, max_records=20_000)).values():
                    now = time.time()
                    transport.extend(now - r.timestamp / 1000 for r in records)
                batch = await consumer.getmany(timeout_ms=20)
                arrived = time.time()
                for records in batch.values():
                    for r in records:
                        alert = orjson.loads(r.value)
                        if alert.get("status") != "firing" or alert.get("kind") != "budget_burn":
                            continue
                        detected = parse_ts(alert["detected_at"])
                        if detected < step_at + 120:
                            early.append(alert["use_case"])  # before its step: a false alarm
                            continue
                        latencies.append(arrived - (detected + LATENESS_S))
            for w in writers:
                w.wait(60)
            if not latencies:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
                    print("no alert; worker status:", r.read()[:1500].decode(errors="replace"))
        finally:
            await consumer.stop()
            await raw.stop()
            for w in writers:
                _stop(w)
            _stop(worker)
        if early:
            print(f"alerts before any step (the budget is too tight for this rate): {early}")
        if not latencies:
            raise SystemExit("no alert arrived")
        latencies.sort()
        print(f"alerts {len(latencies)} (of {stepped} stepped use cases, {waves} minute closes)")
        print(
            f"event-to-alert latency: p50 {_percentile(latencies, 0.5):.2f}s  "
            f"p99 {_percentile(latencies, 0.99):.2f}s  max {latencies[-1]:.2f}s "
            f"(minute end + {LATENESS_S:.0f}s lateness -> arrival on ai.alerts)"
        )
        if transport:
            transport.sort()
            print(
                f"baseline, the broker alone (usage message sent -> read by a plain consumer, "
                f"{len(transport):,} messages): p50 {_percentile(transport, 0.5):.2f}s  "
                f"p99 {_percentile(transport, 0.99):.2f}s  max {transport[-1]:.2f}s"
            )


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per shape (default 3)")
    parser.add_argument(
        "--shapes",
        nargs="+",
        choices=SHAPES,
        default=list(SHAPES),
        help="traffic shapes to run (default: both)",
    )
    parser.add_argument(
        "--dense-events", type=int, default=300_000, help="dense: events (default 300,000)"
    )
    parser.add_argument(
        "--dense-rate",
        type=float,
        default=100_000.0,
        help="dense: events per second of event time (default 100,000)",
    )
    parser.add_argument(
        "--dense-use-cases", type=int, default=500, help="dense: use cases (default 500)"
    )
    parser.add_argument(
        "--sample-lines",
        type=int,
        default=0,
        help="sample: read only the first N lines of the sample (default 0: all)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=100,
        help="events per message, as spendsentry produce --batch (default 100)",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=5_000,
        help="records per getmany, worker and ceiling (default 5,000: the worker's)",
    )
    parser.add_argument(
        "--poll",
        type=float,
        default=0.05,
        metavar="SECONDS",
        help="interval between two scrapes of the worker's /metrics (default 0.05)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="give up on a worker run after this long (default 600)",
    )
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=0.0,
        help="measure event-to-alert latency at this many events/s through a worker process",
    )
    parser.add_argument(
        "--waves",
        type=int,
        default=3,
        help="latency run: minutes in which a new group of 10 use cases steps up (default 3)",
    )
    parser.add_argument(
        "--producers",
        type=int,
        default=1,
        help="latency run: producer processes sharing the rate (default 1)",
    )
    parser.add_argument(
        "--tick",
        type=float,
        default=0.1,
        metavar="SECONDS",
        help="latency run: producers send each use case's events of a tick as one JSON array "
        "(default 0.1; 0: one message per event)",
    )
    parser.add_argument(
        "--trace", action="store_true", help="latency run: print the worker's lags every second"
    )
    return parser.parse_args()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_produce":
        bootstrap, topic, rate, step_at, waves, until, part, tick = sys.argv[2:10]
        asyncio.run(
            produce_steady(
                bootstrap,
                topic,
                float(rate),
                float(step_at),
                int(waves),
                float(until),
                int(part),
                float(tick),
            )
        )
        raise SystemExit(0)
    args = _parse_args()
    if args.latency_rate:
        asyncio.run(latency(args.latency_rate, args.waves, args.producers, args.tick, args.trace))
    else:
        print(orjson.dumps(throughput(args)).decode())
