"""Replay with absurd event times in front costs about what the traffic alone costs.

    python benchmarks/bench_poison.py [--hours 1] [--runs 3]

Simulates ``--hours`` of labelled traffic, then in the same run replays (1) the
traffic alone and (2) the same file with poison lines in front: ``ts`` 1, year 1,
a year back, a week and a day back (valid otherwise), and one record per use case a
year back; and (3) the traffic after an outlier that arrived alone, in a batch of
its own (as a worker's first fetch may), which starts the engine's clock. Prints the
median seconds of each over ``--runs``, the ratios to (1), and the dead-letter
reasons of the poisoned run. Before the event-time fix (issue 12)
the poisoned replay closed every minute since 1970 and did not finish.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import orjson

from spendsentry.cli import main as cli
from spendsentry.engine import Engine
from spendsentry.replay import Sinks, replay
from spendsentry.timeutil import parse_ts

DAY = 86_400.0


def poison_lines(first_ts: float, use_cases: list[str]) -> list[bytes]:
    def event(event_id: str, ts: object, use_case: str = "support_chat") -> bytes:
        doc = {"event_id": event_id, "ts": ts, "use_case": use_case, "model": "gpt-4o-mini"}
        return orjson.dumps(doc)

    lines = [
        event("p-epoch", 1),
        event("p-year-1", "0001-01-01T00:00:00Z"),
        event("p-year", first_ts - 365 * DAY),
        event("p-week", first_ts - 8 * DAY),
    ]
    lines += [event(f"p-{uc}", first_ts - 365 * DAY, uc) for uc in use_cases]
    return lines


def timed_replay(path: Path, pin: float | None = None) -> tuple[float, dict[str, int]]:
    engine = Engine()
    started = time.perf_counter()
    if pin is not None:
        # The worker's case: a fetch that holds nothing but the outlier starts
        # the clock; the jump to real traffic costs its use case at most a day
        # of empty minutes (dormancy), then the clock moves at once.
        from spendsentry.events import UsageEvent

        engine.process([UsageEvent("pin", pin, "support_chat", model="gpt-4o-mini")])
        engine.advance()
    result = replay([str(path)], engine, Sinks())
    return time.perf_counter() - started, result.rejected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        cli(["simulate", "--out", str(out), "--hours", str(args.hours), "--seed", str(args.seed)])
        clean = out / "events.jsonl"
        lines = clean.read_bytes().splitlines()
        docs = [orjson.loads(line) for line in lines[:2000]]
        first = min(parse_ts(d["ts"]) for d in docs if "ts" in d)
        use_cases = sorted({d["use_case"] for d in docs if "use_case" in d})
        poisoned = out / "poisoned.jsonl"
        poisoned.write_bytes(b"\n".join(poison_lines(first, use_cases) + lines) + b"\n")
        clean_s, poisoned_s, pinned_s, reasons = [], [], [], {}
        for _ in range(args.runs):
            clean_s.append(timed_replay(clean)[0])
            seconds, reasons = timed_replay(poisoned)
            poisoned_s.append(seconds)
            pinned_s.append(timed_replay(clean, pin=first - 365 * DAY)[0])
    figures = {
        "bench": "poison",
        "events": len(lines),
        "traffic_alone_s": round(statistics.median(clean_s), 3),
        "with_poison_s": round(statistics.median(poisoned_s), 3),
        "ratio": round(statistics.median(poisoned_s) / statistics.median(clean_s), 3),
        "poisoned_rejected": reasons,
        "outlier_alone_first_s": round(statistics.median(pinned_s), 3),
        "outlier_alone_first_ratio": round(
            statistics.median(pinned_s) / statistics.median(clean_s), 3
        ),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
