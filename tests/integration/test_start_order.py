"""Start order (issue 18, item 6): gateways often publish before any worker ran.

A producer that writes to ``ai.usage`` first makes the broker auto-create it
with its own partition count (Tansu: 4), not the topics file's. The worker must
then create the missing co-partitioned topics (outcomes, state) with that count
and run, instead of exiting on a partition mismatch it could have avoided; and
``spendsentry broker`` creates the topics file's topics as it starts, so nothing
is auto-created in the first place.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from _worker_harness import (
    PARTITIONS,
    WorkerProcess,
    as_records,
    count_events,
    produce,
    scenario_events,
    wait_for_metric,
    write_topics_file,
)
from aiokafka.admin import AIOKafkaAdminClient

from spendsentry.broker import EmbeddedBroker, TopicSpec, ensure_topics, free_port

pytestmark = pytest.mark.integration


async def _partition_counts(bootstrap: str, topics: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in topics if t in existing]
        described = await admin.describe_topics(wanted) if wanted else []
    finally:
        await admin.close()
    return {t["topic"]: len(t["partitions"]) for t in described if not t["error_code"]}


@pytest.mark.timeout(180)
def test_worker_started_after_a_producer_runs_and_counts_every_event(
    broker: EmbeddedBroker,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    names = write_topics_file(tmp_path / "topics.toml", unique_name("startorder"))
    records = [
        r
        for r in as_records(scenario_events(seed=3, hours=0.5, incidents=()))
        if r.topic == "usage"
    ]
    # The gateway publishes first: nothing created ai.usage, the broker does.
    asyncio.run(asyncio.wait_for(produce(broker.bootstrap, names, records), 60))
    auto = asyncio.run(_partition_counts(broker.bootstrap, [names["usage"]]))[names["usage"]]
    assert auto != PARTITIONS["usage"], "the broker's default must differ for this test"

    worker = WorkerProcess(
        broker.bootstrap, tmp_path / "topics.toml", tmp_path / "state", unique_name("g")
    )
    workers.append(worker)
    expected = count_events(records)
    worker.wait_for(lambda s: s["accepted"] == expected, 120, "every event counted")
    wait_for_metric(worker, "spendsentry_events_total", expected, timeout=60)
    counts = asyncio.run(
        _partition_counts(broker.bootstrap, [names["usage"], names["outcomes"], names["state"]])
    )
    assert counts == {names["usage"]: auto, names["outcomes"]: auto, names["state"]: auto}
    assert worker.proc.poll() is None


@pytest.mark.timeout(60)
def test_cli_broker_creates_the_topics_of_the_topics_file(
    unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    names = write_topics_file(tmp_path / "topics.toml", unique_name("brokercli"))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "spendsentry", "broker", "--port", str(port),
         "--topics", str(tmp_path / "topics.toml")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    stdout = proc.stdout
    assert stdout is not None
    threading.Thread(target=lambda: [lines.put(x) for x in stdout], daemon=True).start()
    try:
        seen: list[str] = []
        while not any(x.startswith("bootstrap=") for x in seen):
            try:
                seen.append(lines.get(timeout=30))
            except queue.Empty:
                pytest.fail(f"no bootstrap line within 30 s: {seen}")
        counts = asyncio.run(
            asyncio.wait_for(_partition_counts(f"127.0.0.1:{port}", list(names.values())), 20)
        )
        assert counts == {names[logical]: n for logical, n in PARTITIONS.items()}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()


@pytest.mark.timeout(90)
def test_an_existing_partition_mismatch_stays_a_clear_error(
    broker: EmbeddedBroker,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    names = write_topics_file(tmp_path / "topics.toml", unique_name("mismatch"))
    records = as_records(scenario_events(seed=4, hours=0.2, incidents=()))
    usage = [r for r in records if r.topic == "usage"][:5]
    asyncio.run(asyncio.wait_for(produce(broker.bootstrap, names, usage), 60))
    asyncio.run(ensure_topics(broker.bootstrap, [TopicSpec(names["outcomes"], 3)]))
    counts = asyncio.run(_partition_counts(broker.bootstrap, [names["usage"], names["outcomes"]]))
    assert counts[names["usage"]] != counts[names["outcomes"]]

    worker = WorkerProcess(
        broker.bootstrap, tmp_path / "topics.toml", tmp_path / "state", unique_name("g")
    )
    workers.append(worker)
    assert worker.proc.wait(timeout=60) == 2
    out = worker.output().decode()
    assert "they must be equal" in out and "delete and recreate" in out
    assert "Traceback" not in out
