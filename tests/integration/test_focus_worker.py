"""``worker --focus-dir``: a closed hour's FOCUS file holds the whole hour, across a restart.

The hour's first half is read by one worker run, which stops (final snapshot,
commit); the second half by the next run, restored from that snapshot. The
hour's file must hold both halves: the ledger of open hours travels in the
partition's snapshot, like the engine's state.
"""

from __future__ import annotations

import asyncio
import csv
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from spendsentry.broker import EmbeddedBroker, ensure_topics, free_port
from spendsentry.engine import Engine
from spendsentry.focus import hour_file
from spendsentry.policy import PolicySet
from spendsentry.windows import NANO
from spendsentry.worker.app import run_worker
from spendsentry.worker.service import WorkerConfig
from spendsentry.worker.topics import TopicsConfig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]


def _events(hour: int, minutes: range, tag: str) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"{tag}-{m}-{k}",
            "ts": hour + m * 60 + 7 * k,
            "use_case": "support_chat",
            "model": "gpt-4o-mini",
            "provider": "openai",
            "input_tokens": 900 + m,
            "cached_input_tokens": 200,
            "output_tokens": 80 + k,
            # A reported cost with nine decimals: the file must keep every nano-dollar.
            "cost_usd": round(0.000317123 + m * 1e-9 + k * 3e-9, 9),
        }
        for m in minutes
        for k in range(3)
    ]


async def _produce(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for e in events:
            await producer.send(topic, json.dumps(e).encode(), key=b"support_chat")
        await producer.flush()
    finally:
        await producer.stop()


async def _run(config: WorkerConfig, done: Callable[[Any], bool]) -> None:
    stop, started = asyncio.Event(), asyncio.Event()
    services: list[Any] = []

    def on_started(service: Any) -> None:
        services.append(service)
        started.set()

    worker = asyncio.create_task(
        run_worker(
            config, Engine(PolicySet.empty()), stop, web_port=free_port(), on_started=on_started
        )
    )
    try:
        await asyncio.wait_for(started.wait(), 30)
        deadline = time.monotonic() + 60
        while not done(services[0]):
            assert not worker.done(), "the worker stopped on its own"
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        assert await asyncio.wait_for(worker, 40) == 0


def test_a_closed_hour_is_written_whole_across_a_restart(
    broker: EmbeddedBroker, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    names = {k: unique_name(k) for k in ("usage", "outcomes", "alerts", "throttle", "dl", "ctl")}
    topics = TopicsConfig.from_dict(
        {
            "usage": {"name": names["usage"], "partitions": 1},
            "outcomes": {"name": names["outcomes"], "partitions": 1},
            "alerts": {"name": names["alerts"], "partitions": 1},
            "throttle": {"name": names["throttle"], "partitions": 1},
            "deadletter": {"name": names["dl"], "partitions": 1},
            "control": {"name": names["ctl"], "partitions": 1},
            "state": {"name": unique_name("state"), "partitions": 1},
        }
    )
    focus = tmp_path / "focus"
    config = WorkerConfig(
        bootstrap=broker.bootstrap,
        group_id=unique_name("worker"),
        topics=topics,
        state_dir=tmp_path / "state",
        focus_dir=focus,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        snapshot_interval_s=0.5,
    )
    hour = int(time.time() // 3600) * 3600 - 3 * 3600
    first = _events(hour, range(30), "a")
    second = _events(hour, range(30, 60), "b") + _events(hour + 3600, range(6), "c")
    path = hour_file(focus, hour, 0)

    def accepted(n: int) -> Callable[[Any], bool]:
        def check(service: Any) -> bool:
            pipeline = service.parts.pipelines.get(0)
            return pipeline is not None and pipeline.engine.stats.accepted >= n

        return check

    async def scenario() -> None:
        # Before any record: a produced-to topic would be auto-created with 4 partitions.
        await ensure_topics(broker.bootstrap, [topics.usage, topics.outcomes])
        await _produce(broker.bootstrap, names["usage"], first)
        await _run(config, accepted(len(first)))
        assert not path.exists()  # the hour is still open
        await _produce(broker.bootstrap, names["usage"], second)
        await _run(config, lambda service: path.exists())

    asyncio.run(asyncio.wait_for(scenario(), 140))
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    hour_events = [e for e in first + second if e["ts"] < hour + 3600]
    billed = sum(round(float(r["BilledCost"]) * NANO) for r in rows)
    assert billed == sum(round(e["cost_usd"] * NANO) for e in hour_events)
    by_sku = {r["SkuId"]: int(r["ConsumedQuantity"]) for r in rows}
    assert by_sku == {
        "gpt-4o-mini/input": sum(e["input_tokens"] - 200 for e in hour_events),
        "gpt-4o-mini/cached_input": 200 * len(hour_events),
        "gpt-4o-mini/output": sum(e["output_tokens"] for e in hour_events),
    }
    assert {r["ChargePeriodStart"] for r in rows} == {
        time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(hour))
    }
    assert not hour_file(focus, hour + 3600, 0).exists()  # the next hour is open
