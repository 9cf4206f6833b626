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
with ``--allowed-lateness 1``): a producer process writes R usage events/s whose
event time is the wall clock at produce time (it is also the Kafka record
timestamp), 40 use cases with a ``tokens_per_minute`` budget; at a minute boundary
half of them step their input tokens up fivefold (the injected incident). The
budget monitor needs two anomalous minutes, so each stepped use case alerts when
the second stepped minute closes. Latency of one alert = its arrival on
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
#: The first half of the use cases steps its input tokens up (the incident).
STEPPED = 20
#: Mean tokens of a normal event (input 100..500, output 50).
MEAN_TOKENS = 350
LATENESS_S = 1.0


async def produce_steady(bootstrap: str, topic: str, rate: float, step_at: float, until: float):
    """Produce ``rate`` events/s, event time = produce time, until ``until``."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20, enable_idempotence=False
    )
    await producer.start()
    rng = random.Random(2)
    keys = [f"uc{i}".encode() for i in range(LATENCY_USE_CASES)]
    sent = behind = 0
    start = time.time()
    try:
        while (now := time.time()) < until:
            due = int((now - start) * rate)
            behind = max(behind, due - sent)
            while sent < due:
                uc = sent % LATENCY_USE_CASES
                tokens = rng.randint(100, 500)
                now = time.time()
                if now >= step_at and uc < STEPPED:
                    tokens *= 5
                value = orjson.dumps(
                    {
                        "event_id": f"l{sent}",
                        "ts": now,
                        "use_case": f"uc{uc}",
                        "model": "gpt-4o-mini",
                        "input_tokens": tokens,
                        "output_tokens": 50,
                        "cost_usd": 0.0001,
                    }
                )
                await producer.send(topic, value, key=keys[uc], timestamp_ms=int(now * 1000))
                sent += 1
            await asyncio.sleep(0.005)
        await producer.flush()
    finally:
        await producer.stop()
    elapsed = time.time() - start
    print(f"producer: {sent:,} events in {elapsed:.0f}s = {sent / elapsed:,.0f} ev/s "
          f"(at most {behind:,} events behind schedule)", flush=True)  # fmt: skip


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


async def latency(rate: float) -> None:
    # Normal tokens per use case per minute, and a budget 2.5 times that: the
    # fivefold step overruns it, normal traffic never does.
    per_minute = rate / LATENCY_USE_CASES * 60 * MEAN_TOKENS
    budget = int(per_minute * 2.5)
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
        producer: subprocess.Popen[bytes] | None = None
        consumer = AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10
        )
        try:
            _wait_ready(port, worker)
            await consumer.start()
            alert_tps = [TopicPartition(topics.alerts.name, p) for p in range(3)]
            consumer.assign(alert_tps)
            await consumer.seek_to_end(*alert_tps)
            # The incident starts at a minute boundary, at least 10 s from now,
            # and the run ends once its second minute has closed (plus slack).
            step_at = (int((time.time() + 10) // 60) + 1) * 60.0
            until = step_at + 120 + 10
            print(f"latency run: {rate:,.0f} ev/s, incident at +{step_at - time.time():.0f}s, "
                  f"{until - time.time():.0f}s in all; budget {budget:,} tokens/min")  # fmt: skip
            producer = subprocess.Popen(
                [sys.executable, __file__, "--_produce", broker.bootstrap, topics.usage.name,
                 str(rate), str(step_at), str(until)],
                start_new_session=True,
            )  # fmt: skip
            latencies: list[float] = []
            deadline = until + 30
            while time.time() < deadline and len(latencies) < STEPPED:
                batch = await consumer.getmany(timeout_ms=50)
                arrived = time.time()
                for records in batch.values():
                    for r in records:
                        alert = orjson.loads(r.value)
                        if alert.get("status") != "firing" or alert.get("kind") != "budget_burn":
                            continue
                        closable = parse_ts(alert["detected_at"]) + LATENESS_S
                        latencies.append(arrived - closable)
            producer.wait(60)
            if not latencies:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
                    print("no alert; worker status:", r.read()[:1500].decode(errors="replace"))
        finally:
            await consumer.stop()
            if producer is not None:
                _stop(producer)
            _stop(worker)
        if not latencies:
            raise SystemExit("no alert arrived")
        latencies.sort()
        p50 = latencies[len(latencies) // 2]
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(f"alerts {len(latencies)} (of {STEPPED} stepped use cases)")
        print(
            f"event-to-alert latency: p50 {p50:.2f}s  p99 {p99:.2f}s  max {latencies[-1]:.2f}s "
            f"(minute end + {LATENESS_S:.0f}s lateness -> arrival on ai.alerts)"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_produce":
        bootstrap, topic, rate, step_at, until = sys.argv[2:7]
        asyncio.run(produce_steady(bootstrap, topic, float(rate), float(step_at), float(until)))
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
        "--gc-freeze", action="store_true", help="gc.freeze() before the read phases"
    )
    args = parser.parse_args()
    if args.latency_rate:
        asyncio.run(latency(args.latency_rate))
    else:
        asyncio.run(main(args.events, args.event_rate, args.gc_freeze))
