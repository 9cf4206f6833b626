"""The issue's whole attack on one worker (issue 12, "Done when").

Absurd timestamps at the head of a partition, an 800 KB bad record and a forged
``ai.throttle`` record, followed by real traffic: the worker stays up,
``/metrics`` keeps answering, every real event is counted, the big record's
dead letter is on ``ai.deadletter``, and a restart does not stall on a snapshot
that holds the outlier. Before the fix the year-old record alone made the
consume loop close every minute of a year, one by one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from _worker_harness import (
    PARTITIONS,
    Record,
    WorkerProcess,
    as_records,
    count_events,
    metric_sum,
    produce,
    read_all,
    scenario_events,
    topic_specs,
    wait_for_metric,
    write_topics_file,
)

from spendsentry.broker import EmbeddedBroker, ensure_topics

pytestmark = pytest.mark.integration

YEAR = 365 * 86_400
FORGED = b'{"scope_key":"support_chat","version":18446744073709551615}'


def _poison(now: float) -> list[Record]:
    def event(event_id: str, ts: object) -> Record:
        doc = {"event_id": event_id, "ts": ts, "use_case": "support_chat", "model": "gpt-4o-mini"}
        return Record("usage", b"support_chat", orjson.dumps(doc))

    big = b'{"use_case":"support_chat","note":"' + b"x" * 800_000 + b'"}'
    return [
        event("poison-epoch", 1),
        event("poison-year-1", "0001-01-01T00:00:00Z"),
        event("poison-last-year", now - YEAR),
        Record("usage", b"support_chat", big),
    ]


@pytest.mark.timeout(300)
def test_poison_big_record_and_forged_throttle_then_traffic(
    broker: EmbeddedBroker,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    valid = as_records(scenario_events(seed=5, hours=1.0, incidents=()))
    sent = [*_poison(time.time()), *valid]
    names = write_topics_file(tmp_path / "topics.toml", unique_name("poison"))
    asyncio.run(ensure_topics(broker.bootstrap, topic_specs(names)))
    asyncio.run(produce(broker.bootstrap, names, [Record("throttle", b"support_chat", FORGED)]))
    asyncio.run(produce(broker.bootstrap, names, sent))
    group = unique_name("g")
    state = tmp_path / "state"
    worker = WorkerProcess(broker.bootstrap, tmp_path / "topics.toml", state, group)
    workers.append(worker)
    expected = count_events(valid)

    # /metrics answers all along (each GET has a 5 s timeout) while the
    # worker works through the poison and the traffic.
    scrapes = 0

    def done(status: dict) -> bool:
        nonlocal scrapes
        worker.get("/metrics")
        scrapes += 1
        return status["records"] == len(sent) and status["accepted"] == expected

    status = worker.wait_for(done, 200, "every real event counted")
    assert status["accepted"] == expected  # the year-old event is not among them
    metrics = wait_for_metric(worker, "spendsentry_rejected_total", 2, reason="bad_timestamp")
    assert metric_sum(metrics, "spendsentry_rejected_total", reason="late") >= 1
    letters = [
        orjson.loads(v)
        for v in asyncio.run(
            read_all(broker.bootstrap, names["deadletter"], PARTITIONS["deadletter"])
        )
    ]
    reasons = sorted(d["reason"] for d in letters)
    assert reasons.count("bad_timestamp") == 2
    assert any(d.get("original_truncated") for d in letters)  # the 800 KB record
    late = [d for d in letters if d["reason"] == "late"]
    assert late and "poison-last-year" in str(late)

    # Event time reached the traffic without walking the year in between.
    closed_until = status["closed_until_ts"]
    assert closed_until is not None and closed_until > time.time() - 3 * 3600

    # A restart resumes from the snapshot and keeps answering.
    assert worker.stop() == 0
    again = WorkerProcess(broker.bootstrap, tmp_path / "topics.toml", state, group)
    workers.append(again)
    status = again.wait_for(lambda s: s["records"] >= 0, 60, "the restarted worker answers")
    again.get("/metrics")
    assert again.proc.poll() is None
    print(f"\nFIGURES poison_stream: events={expected}, metrics_scrapes={scrapes}")
