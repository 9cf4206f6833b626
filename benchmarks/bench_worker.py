"""Worker throughput: raw aiokafka ``getmany`` + orjson vs the worker pipeline.

Run with ``python benchmarks/bench_worker.py [--events N]``. It starts an
embedded broker, writes N usage events to a 6-partition topic, then reads them
back twice in the same run:

1. raw: ``getmany`` + ``orjson.loads`` per record (the ceiling for any consumer);
2. pipeline: ``getmany`` + :class:`spendsentry.worker.Pipeline.handle` (decode and
   validate, engine ``process``, watermarks, ``advance``, metrics), as the worker's
   consume loop runs it;

and prints events/s for both and their ratio. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from spendsentry.broker import EmbeddedBroker, TopicSpec, ensure_topics
from spendsentry.engine import Engine
from spendsentry.policy import PolicySet
from spendsentry.worker import Pipeline, WorkerMetrics

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


async def main(n: int, event_rate: float) -> None:
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
        raw = await consume(broker.bootstrap, topic, n, None)
        metrics = WorkerMetrics.create(CollectorRegistry())
        pipeline = Pipeline(Engine(PolicySet.empty()), metrics=metrics)
        worker = await consume(broker.bootstrap, topic, n, pipeline)
        print(f"raw getmany + orjson : {raw:>10,.0f} events/s")
        print(f"worker pipeline      : {worker:>10,.0f} events/s")
        print(f"ratio raw / pipeline : {raw / worker:>10.1f}")
        print(f"accepted {pipeline.engine.stats.accepted:,}, alerts {pipeline.engine.stats.alerts}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument(
        "--event-rate",
        type=float,
        default=5_000.0,
        help="events per second of event time (default 5,000)",
    )
    args = parser.parse_args()
    asyncio.run(main(args.events, args.event_rate))
