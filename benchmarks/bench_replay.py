"""Replay throughput on a simulated day, against reading the same file raw.

    python benchmarks/bench_replay.py [--hours 24] [--seed 1]

Simulates a labelled day (about half a million events), then in the same run
times (1) the ceiling: reading the JSON Lines file and ``orjson.loads`` on
every line, and (2) ``spendsentry replay`` on it, in-process, with every
output written; prints events/s for both and their ratio (machines here are
shared and noisy, so the ratio is the figure to compare).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import orjson

from spendsentry.cli import main as cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        cli(["simulate", "--out", str(out), "--hours", str(args.hours), "--seed", str(args.seed)])
        events = out / "events.jsonl"
        started = time.perf_counter()
        n = 0
        with events.open("rb") as f:
            for line in f:
                orjson.loads(line)
                n += 1
        raw = n / (time.perf_counter() - started)
        started = time.perf_counter()
        code = cli([
            "replay", str(events), "--alerts-out", str(out / "alerts.jsonl"),
            "--commands-out", str(out / "commands.jsonl"),
            "--deadletter-out", str(out / "dl.jsonl"), "--summary-json", str(out / "s.json"),
            "--policies", str(root / "streams" / "policies"), "--quiet",
        ])  # fmt: skip
        elapsed = time.perf_counter() - started
        summary = json.loads((out / "s.json").read_text())
        assert code == 0
    print(f"events              : {n:,}")
    print(f"raw read + orjson   : {raw:>10,.0f} events/s")
    print(f"replay (all outputs): {n / elapsed:>10,.0f} events/s  ({elapsed:.1f} s)")
    print(f"ratio raw / replay  : {raw / (n / elapsed):>10.1f}")
    print(f"accepted {summary['accepted']:,}, alerts {summary['alerts']}")


if __name__ == "__main__":
    main()
