"""``/metrics`` across a SIGKILL: Prometheus ``increase()`` counts every event once.

A killed worker's successor restores the last snapshot and processes again
what came after it. Counters incremented as records were processed counted that
stretch twice (issue 12, item 8: ~9 % more events and cost than produced).
The engine-work counters are now the totals the partition's last *durable*
snapshot holds, restored with it (docs/reliability.md, "Metrics across
restarts"), so a scraper sees one continuous counter per series.

The scraper here is simulated the way Prometheus computes ``increase()`` over a
range: per series (same labels; a restarted worker keeps its scrape identity,
as a restarted container in the same pod does), the sum of the rises between
consecutive samples, where a drop is a counter reset and the new value counts
from zero. A series counts from zero at its first sample (exporters are
expected to start a series at 0; Prometheus otherwise misses its first value).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _worker_harness import (
    WorkerProcess,
    as_records,
    count_events,
    produce,
    scenario_start,
    write_topics_file,
)
from prometheus_client.parser import text_string_to_metric_families

from spendsentry.broker import EmbeddedBroker

pytestmark = pytest.mark.integration

#: Families whose increase() must equal what was produced.
COUNTED = ("spendsentry_events_total", "spendsentry_cost_usd_total", "spendsentry_tokens_total")

Series = tuple[str, frozenset[tuple[str, str]]]


def _usage_events(seed: int, minutes: int, use_cases: int, per_minute: int) -> list[dict[str, Any]]:
    """Usage events with a reported cost, in event-time order (nothing to price)."""
    rng = random.Random(seed)
    start = scenario_start(minutes / 60).timestamp()
    events = []
    for minute in range(minutes):
        for k in range(per_minute):
            for u in range(use_cases):
                ts = start + minute * 60 + (k * use_cases + u) * 60 / (per_minute * use_cases)
                events.append(
                    {
                        "event_id": f"m{minute}-{k}-{u}",
                        "ts": ts,
                        "use_case": f"uc-{u}",
                        "model": "gpt-4o-mini",
                        "input_tokens": rng.randint(50, 800),
                        "output_tokens": rng.randint(10, 200),
                        "cost_usd": round(rng.uniform(0.0005, 0.05), 6),
                    }
                )
    return events


def _scrape(worker: WorkerProcess) -> dict[Series, float]:
    text = worker.get("/metrics").decode()
    samples: dict[Series, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in COUNTED:
                samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def _increase(scrapes: list[dict[Series, float]]) -> dict[str, float]:
    """Prometheus ``increase()`` over all the scrapes, summed per family."""
    last: dict[Series, float] = {}
    total = dict.fromkeys(COUNTED, 0.0)
    for scrape in scrapes:
        for series, value in scrape.items():
            before = last.get(series, 0.0)
            total[series[0]] += value - before if value >= before else value
            last[series] = value
    return total


def _committed_records(status: dict[str, Any]) -> int:
    # Records reflected by the durable snapshots (what the counters show).
    return sum(p.get("committed_records", p["records"]) for p in status["partitions"].values())


@pytest.mark.timeout(240)
def test_increase_of_event_and_cost_counters_across_a_sigkill_equals_what_was_produced(
    broker: EmbeddedBroker,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    events = _usage_events(seed=8, minutes=40, use_cases=6, per_minute=12)
    produced = {
        "spendsentry_events_total": float(len(events)),
        "spendsentry_cost_usd_total": sum(e["cost_usd"] for e in events),
        "spendsentry_tokens_total": float(
            sum(e["input_tokens"] + e["output_tokens"] for e in events)
        ),
    }
    records = as_records(events)
    first, second = int(len(records) * 0.6), int(len(records) * 0.8)
    names = write_topics_file(tmp_path / "topics.toml", unique_name("m"))
    group, state = unique_name("g"), tmp_path / "state"
    scrapes: list[dict[Series, float]] = []

    def start(interval: float) -> WorkerProcess:
        w = WorkerProcess(
            broker.bootstrap, tmp_path / "topics.toml", state, group, snapshot_interval=interval
        )
        workers.append(w)
        w.wait_for(lambda s: len(s["assignment"]) == 7, 90, "the group join")
        scrapes.append(_scrape(w))
        return w

    # Snapshots every 4 s: one lands after the first 60 %, and the next 20 % are
    # processed (and scraped) before the next one, then the worker is killed.
    worker = start(4.0)
    asyncio.run(produce(broker.bootstrap, names, records[:first]))
    worker.wait_for(lambda s: s["records"] == first, 60, "the first 60 %")
    processed_at = time.time()
    scrapes.append(_scrape(worker))
    worker.wait_for(lambda s: (s["last_snapshot_at"] or 0) > processed_at, 30, "a snapshot of them")
    scrapes.append(_scrape(worker))
    asyncio.run(produce(broker.bootstrap, names, records[first:second]))
    status = worker.wait_for(lambda s: s["records"] == second, 60, "the next 20 %")
    scrapes.append(_scrape(worker))
    uncommitted = second - _committed_records(status)
    worker.kill()

    worker = start(1.0)
    worker.wait_for(lambda s: s["restored"], 30, "the restore")
    scrapes.append(_scrape(worker))
    asyncio.run(produce(broker.bootstrap, names, records[second:]))
    status = worker.wait_for(
        lambda s: s["records"] == len(records) and _committed_records(s) == len(records),
        90,
        "every record in a durable snapshot",
    )
    scrapes.append(_scrape(worker))
    increase = _increase(scrapes)

    assert status["accepted"] == len(events) == count_events(records)
    for family, want in produced.items():
        assert increase[family] == pytest.approx(want, rel=0.01), (family, increase, produced)
    # The design gives more than 1 %: each event exactly once.
    assert increase["spendsentry_events_total"] == len(events)
    assert increase["spendsentry_cost_usd_total"] == pytest.approx(
        produced["spendsentry_cost_usd_total"], rel=1e-9
    )
    assert worker.stop() == 0, worker.tail()
    print(
        "\nFIGURES metrics_after_sigkill: "
        f"events={len(events)}, messages={len(records)}, "
        f"records_processed_not_in_a_snapshot_at_kill={uncommitted}, "
        f"increase_events={increase['spendsentry_events_total']:.0f}, "
        f"increase_cost_usd={increase['spendsentry_cost_usd_total']:.6f}, "
        f"produced_cost_usd={produced['spendsentry_cost_usd_total']:.6f}"
    )
