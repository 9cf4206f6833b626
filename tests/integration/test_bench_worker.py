"""benchmarks/bench_worker.py runs end to end on a tiny input, so it cannot rot.

benchmarks/ is not collected; this runs the throughput benchmark as a user
would (a subprocess with its own embedded brokers and worker processes), one
run of each traffic shape on a few thousand events, and checks its JSON
summary: both readers got through every record, the worker counted every
event the ceiling read (minus the sample's deliberately bad ones). No figure
is asserted: speed is what the benchmark reports, not what a test checks.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_worker.py"
EVENTS = 2_000


def run_bench(*args: str) -> tuple[str, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, str(BENCH), *args],
        capture_output=True,
        text=True,
        timeout=170,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    summary: dict[str, Any] = orjson.loads(lines[-1])
    return done.stdout, summary


def test_the_worker_benchmark_runs_both_shapes_on_a_tiny_input() -> None:
    # One event per message and small batches: a few thousand events still
    # make several batches for each reader.
    out, summary = run_bench(
        "--runs", "1", "--dense-events", str(EVENTS), "--sample-lines", str(EVENTS),
        "--batch", "1", "--max-batch", "100", "--poll", "0.01",
    )  # fmt: skip
    assert summary["bench"] == "worker" and summary["runs"] == 1
    assert set(summary["shapes"]) == {"dense", "sample"}
    for name, shape in summary["shapes"].items():
        assert shape["records"] == EVENTS, (name, out)
        assert shape["ceiling_events_per_s"] > 0, (name, out)
        # The worker may get through a tiny input before its web server answers
        # the first scrape: then it has no window, and says so (null).
        for key in ("worker_events_per_s", "ratio_worker_to_ceiling"):
            assert shape[key] is None or shape[key] > 0, (name, key, out)
    dense = summary["shapes"]["dense"]
    assert dense["events"] == dense["worker_events_counted"] == EVENTS
    assert dense["rejected"] == {}
    # The sample's first lines are all valid: every one is counted.
    sample = summary["shapes"]["sample"]
    assert sample["events"] == sample["worker_events_counted"] == EVENTS
    assert "dense: 1 run(s)" in out and "sample: median ceiling" in out
