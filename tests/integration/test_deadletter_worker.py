"""One big bad record neither kills the worker nor loses its dead letter (issue 12, item 2).

Before: the dead letter of an ~800 KB invalid record (base64 plus a preview,
~1.07 MB) was over the producer's ``max_request_size``; the
``MessageSizeTooLargeError`` ended the consume loop and the worker exited,
with the shutdown checkpoint committing past the record. Now the letter is cut
to fit (flagged), a publish the broker refuses goes to a local file, and a
letter written nowhere holds its partition's snapshot and commit.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from _worker_harness import (
    PARTITIONS,
    Record,
    WorkerProcess,
    as_records,
    count_events,
    produce,
    read_all,
    scenario_events,
    topic_specs,
    wait_for_metric,
    write_topics_file,
)
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from spendsentry.broker import EmbeddedBroker, ensure_topics
from spendsentry.engine import Engine
from spendsentry.ingest import Decoder, SourcePosition
from spendsentry.ingest.deadletter import MAX_DEAD_LETTER_BYTES
from spendsentry.policy import PolicySet
from spendsentry.worker.metrics import WorkerMetrics
from spendsentry.worker.service import IngestService, WorkerConfig
from spendsentry.worker.topics import TopicsConfig

BIG = 800_000


def _big_invalid(size: int = BIG) -> bytes:
    """An ~800 KB JSON object that is no event: dead-lettered as missing_field."""
    head = b'{"use_case":"support_chat","note":"'
    return head + b"x" * (size - len(head) - 2) + b'"}'


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_an_800_kb_bad_record_then_traffic_keeps_the_worker_up(
    broker: EmbeddedBroker,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    valid = as_records(scenario_events(seed=3, hours=0.5, incidents=()))
    big = _big_invalid()
    junk = orjson.dumps([1] * 50_000)  # 100 KB of junk elements: one letter
    sent = [Record("usage", b"support_chat", big), Record("usage", b"junk", junk), *valid]
    names = write_topics_file(tmp_path / "topics.toml", unique_name("big"))
    asyncio.run(ensure_topics(broker.bootstrap, topic_specs(names)))
    asyncio.run(produce(broker.bootstrap, names, sent))
    worker = WorkerProcess(
        broker.bootstrap, tmp_path / "topics.toml", tmp_path / "state", unique_name("g")
    )
    workers.append(worker)
    expected = count_events(valid)
    status = worker.wait_for(
        lambda s: s["records"] == len(sent) and s["accepted"] == expected,
        150,
        "every valid event counted",
    )
    assert status["accepted"] == expected
    wait_for_metric(worker, "spendsentry_rejected_total", 50_000, reason="not_object")
    raw_letters = asyncio.run(
        read_all(broker.bootstrap, names["deadletter"], PARTITIONS["deadletter"])
    )
    letters = [orjson.loads(v) for v in raw_letters]
    assert max(len(v) for v in raw_letters) <= MAX_DEAD_LETTER_BYTES
    [truncated] = [d for d in letters if d.get("original_truncated")]
    assert truncated["reason"] == "missing_field"
    assert truncated["original_size"] == BIG
    assert truncated["original_sha256"] == hashlib.sha256(big).hexdigest()
    assert big.startswith(base64.b64decode(truncated["original_b64"]))
    [summary] = [d for d in letters if "rejected_elements" in d]
    assert summary["rejected_elements"] == {"not_object": 50_000}
    assert len(letters) == 2
    assert worker.proc.poll() is None
    assert b"the consume loop failed" not in worker.output()
    print(
        f"\nFIGURES big_record: record_bytes={BIG}, "
        f"dead_letter_bytes={max(len(v) for v in raw_letters)}, "
        f"valid_events={expected}, worker_up=True"
    )


# -- a dead letter the broker refuses: file, or hold the partition ----------------------


@dataclass
class _Record:
    """What aiokafka's ConsumerRecord carries that the pipeline reads."""

    topic: str
    partition: int
    offset: int
    value: bytes


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_refused_dead_letter_goes_to_the_file_or_holds_the_partition(
    broker: EmbeddedBroker, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    asyncio.run(_refused(broker, unique_name, tmp_path))


async def _refused(broker: EmbeddedBroker, unique_name: Callable[[str], str], tmp: Path) -> None:
    names = write_topics_file(tmp / "topics.toml", unique_name("refused"))
    topics = TopicsConfig.load(str(tmp / "topics.toml"))
    await ensure_topics(broker.bootstrap, topic_specs(names))
    state = tmp / "state"
    config = WorkerConfig(broker.bootstrap, topics=topics, state_dir=state)
    metrics = WorkerMetrics.create(CollectorRegistry())
    service = IngestService(config, Engine(PolicySet.empty()), metrics, decoder=Decoder())
    # A producer whose request limit is below the configured one (a broker or
    # client set lower than the worker was told): the broker path refuses
    # every ~0.98 MB letter, for real.
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, max_request_size=200_000)
    await producer.start()
    service.producer = producer
    try:
        pipeline = service.parts.new_pipeline(0)
        service.parts.add(pipeline)
        out = service.parts.handle({0: [_Record(names["usage"], 0, 5, _big_invalid())]})
        [letter] = out.dead_letters
        assert letter.source == SourcePosition(names["usage"], None, 0, 5)

        # 1. Refused by the producer: written to the local file, nothing held.
        await service.publisher.publish(producer, [], out.dead_letters)
        fallback = state / "deadletters.jsonl"
        [line] = fallback.read_bytes().splitlines()
        assert orjson.loads(line)["original_size"] == BIG
        assert service.deadletters.held([0]) == set()
        assert metrics.deadletter_failures.labels("MessageSizeTooLargeError", "file")._value.get()

        # 2. The file cannot be written either: the letter is held, and so is
        # partition 0's snapshot (its pipeline stays dirty: nothing committed).
        fallback.unlink()
        fallback.mkdir()
        await service.publisher.publish(producer, [], out.dead_letters)
        assert service.deadletters.held([0, 1]) == {0}
        assert metrics.deadletters_unwritten._value.get() == 1
        assert await service.checkpoints.capture() is None
        assert pipeline.dirty

        # 3. The file comes back: the next batch's retry writes it, the hold lifts.
        fallback.rmdir()
        await service.deadletters.retry(producer)
        assert service.deadletters.held([0]) == set()
        assert len(fallback.read_bytes().splitlines()) == 1
        assert metrics.deadletters_unwritten._value.get() == 0
    finally:
        await producer.stop()
