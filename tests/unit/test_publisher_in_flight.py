"""A batch's results are "in flight" from the moment the publisher starts on them
until the last one is handed to the producer: ``/status`` shows the count, so a
reader that sees every record consumed knows whether the output is on the topics
yet (the race behind a flaky integration test)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from spendsentry.worker.config import WorkerConfig
from spendsentry.worker.deadletters import DeadLetterSink
from spendsentry.worker.metrics import WorkerMetrics
from spendsentry.worker.partitions import PartitionSet
from spendsentry.worker.publisher import Publisher
from spendsentry.worker.status_page import StatusBoard


class _Alert:
    use_case = "support_chat"

    def to_dict(self) -> dict[str, Any]:
        return {"use_case": self.use_case, "kind": "cost_spike", "status": "firing"}


class _SlowProducer:
    """Holds every send until released, as a broker under load does."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.sent: list[tuple[str, bytes]] = []

    async def send(self, topic: str, *, value: bytes, key: bytes) -> None:
        await self.release.wait()
        self.sent.append((topic, value))


def _publisher(tmp_path: Path) -> Publisher:
    config = WorkerConfig("localhost:9092")
    metrics = WorkerMetrics.create(CollectorRegistry())
    parts = PartitionSet(lambda: None, inputs=config.topics.inputs)
    sink = DeadLetterSink(
        "ai.deadletter", config.topics.inputs, tmp_path / "dl.jsonl", metrics, max_bytes=1 << 20
    )
    return Publisher(config, parts, sink, StatusBoard(), metrics)


def test_results_count_as_in_flight_until_sent(tmp_path: Path) -> None:
    publisher = _publisher(tmp_path)
    producer = _SlowProducer()

    async def run() -> list[int]:
        seen = [publisher.in_flight]
        task = asyncio.create_task(publisher.publish(producer, [_Alert(), _Alert()], []))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        seen.append(publisher.in_flight)
        producer.release.set()
        await task
        seen.append(publisher.in_flight)
        return seen

    assert asyncio.run(run()) == [0, 2, 0]
    assert len(producer.sent) == 2


def test_a_failed_send_does_not_leave_results_in_flight(tmp_path: Path) -> None:
    publisher = _publisher(tmp_path)

    class _Broken:
        async def send(self, topic: str, *, value: bytes, key: bytes) -> None:
            raise ConnectionError("broker gone")

    async def run() -> None:
        await publisher.publish(_Broken(), [_Alert()], [])  # type: ignore[arg-type]

    try:
        asyncio.run(run())
    except ConnectionError:
        pass
    else:  # pragma: no cover - the send above always raises
        raise AssertionError("the failed send should propagate")
    assert publisher.in_flight == 0
