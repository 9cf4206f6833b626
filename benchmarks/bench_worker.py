"""Worker throughput: raw aiokafka ``getmany`` + orjson vs the worker pipeline.

Run with ``python benchmarks/bench_worker.py [--events N]``. It starts an
embedded broker, writes N usage events to a 6-partition topic, then reads them
back twice in the same run:

1. raw: ``getmany`` + ``orjson.loads`` per record (the ceiling for any consumer);
2. pipeline: ``getmany`` + :class:`spendsentry.worker.Pipeline.handle` (decode and
   validate, engine ``process``, watermarks, ``advance``, metrics), as the worker's
   consume loop runs it;

and prints events/s for both and their ratio. Not collected by pytest.

``--latency-rate R`` (e.g. 50000, half the pipeline's rate) measures event-to-alert
latency through a real worker process instead (``python -m spendsentry worker``
with ``--allowed-lateness 1``): ``--producers`` processes write R usage events/s
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
import gc
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from spendsentry.broker import EmbeddedBroker, TopicSpec, ensure_topics, free_port
from spendsentry.engine import Engine
from spendsentry.policy import PolicySet
from spendsentry.timeutil import parse_ts
from spendsentry.worker import Pipeline, WorkerMetrics
from spendsentry.worker.topics import TopicsConfig

PARTITIONS = 6


async def produce(bootstrap: str, topic: str, n: int, span_s: float) -> None:
    rng = random.Random(1)
    start = time.time() - span_s - 600
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    try:
        for i in range(n):
            uc = f"uc{rng.randrange(40)}"
            doc = {
                "event_id": f"e{i}",
                "ts": start + i * (span_s / n),
                "use_case": uc,
                "provider": "openai",
                "model": "gpt-4o-mini",
                "input_tokens": rng.randint(50, 2000),
                "output_tokens": rng.randint(10, 500),
                "cost_usd": 0.001,
                "session_id": f"s{rng.randrange(500)}",
            }
            await producer.send(topic, orjson.dumps(doc), key=uc.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def consume(bootstrap: str, topic: str, n: int, pipeline: Pipeline | None) -> float:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        if pipeline is not None:
            pipeline.watermarks.assign([(topic, p) for p in range(PARTITIONS)], now=time.time())
        seen = 0
        started = time.perf_counter()
        deadline = time.monotonic() + 600
        while seen < n and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            if pipeline is None:
                for records in batch.values():
                    for r in records:
                        orjson.loads(r.value)
                    seen += len(records)
            else:
                pipeline.handle(batch)
                seen += sum(len(rs) for rs in batch.values())
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def main(n: int, event_rate: float, gc_freeze: bool = False) -> None:
    # Event time advances at ``event_rate`` events per second, as it would in a
    # stream that really carries that many events: detectors run once per use
    # case per closed minute, so packing hours of event time into a few
    # thousand events would measure the detectors, not the stream path.
    span_s = n / event_rate
    with EmbeddedBroker() as broker:
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        await ensure_topics(broker.bootstrap, [TopicSpec(topic, PARTITIONS)])
        t = time.perf_counter()
        await produce(broker.bootstrap, topic, n, span_s)
        print(f"produced {n:,} events in {time.perf_counter() - t:.1f}s")
        if gc_freeze:
            # What the worker would gain from gc.freeze() after start-up: full
            # collections stop walking the long-lived heap (see docs/worker.md).
            gc.collect()
            gc.freeze()
        raw = await consume(broker.bootstrap, topic, n, None)
        metrics = WorkerMetrics.create(CollectorRegistry())
        pipeline = Pipeline(Engine(PolicySet.empty()), metrics=metrics)
        worker = await consume(broker.bootstrap, topic, n, pipeline)
        print(f"raw getmany + orjson : {raw:>10,.0f} events/s")
        print(f"worker pipeline      : {worker:>10,.0f} events/s")
        print(f"ratio raw / pipeline : {raw / worker:>10.1f}")
        print(f"accepted {pipeline.engine.stats.accepted:,}, alerts {pipeline.engine.stats.alerts}")


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument(
        "--event-rate",
        type=float,
        default=5_000.0,
        help="events per second of event time (default 5,000)",
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
    parser.add_argument(
        "--gc-freeze", action="store_true", help="gc.freeze() before the read phases"
    )
    args = parser.parse_args()
    if args.latency_rate:
        asyncio.run(latency(args.latency_rate, args.waves, args.producers, args.tick, args.trace))
    else:
        asyncio.run(main(args.events, args.event_rate, args.gc_freeze))
