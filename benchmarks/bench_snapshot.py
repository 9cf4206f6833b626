"""Snapshot encode and decode time and size: the plain-data document against pickle.

Run with ``python benchmarks/bench_snapshot.py [--hours 24] [--seed 7] [--repeat 7]``.
A simulated scenario (``spendsentry simulate``: every use case of the demo
policies) is replayed into one worker pipeline, and its state, as the worker
snapshots it on its consume loop, is encoded and decoded both ways in the same
run: the version-3 document (:func:`spendsentry.snapshot.encode_state`, then
:func:`~spendsentry.snapshot.decode_state` and a restore into a fresh engine)
and ``pickle`` of the live objects (what version 2 did). Times are the median of
``--repeat`` runs; ratios are document / pickle. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import gc
import pickle
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spendsentry.engine import Engine
from spendsentry.ingest import Decoder
from spendsentry.ingest.deadletter import SourcePosition
from spendsentry.policy import PolicySet
from spendsentry.simulate.scenario import Scenario
from spendsentry.snapshot import decode_state, encode_state
from spendsentry.worker.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]


def _median_s(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def build(hours: float, seed: int) -> Pipeline:
    """A pipeline that replayed ``hours`` of the scenario (what a worker holds)."""
    policies = PolicySet.load(ROOT / "streams" / "policies")
    pipeline = Pipeline(Engine(policies), partition=0)
    decoder = Decoder()
    with tempfile.TemporaryDirectory() as tmp:
        events_path, _ = Scenario(seed=seed, hours=hours).write(Path(tmp))
        batch: list[Any] = []
        with open(events_path, "rb") as f:
            for i, line in enumerate(f):
                batch += decoder.decode(line, SourcePosition("bench", i), now=4e9).events
                if len(batch) >= 5_000:
                    pipeline.engine.process(batch)
                    pipeline.engine.advance()
                    batch = []
        pipeline.engine.process(batch)
        pipeline.engine.advance()
    return pipeline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)

    pipeline = build(args.hours, args.seed)
    engine = pipeline.engine
    policies = engine.policies
    state = pipeline.snapshot_state()
    doc = encode_state(state)
    pickled = pickle.dumps({"version": 2, "state": state}, protocol=5)

    def restore_document() -> None:
        Pipeline(Engine(policies), partition=0).restore_state(decode_state(doc), now=0.0)

    timings = {
        "encode": (
            _median_s(lambda: encode_state(pipeline.snapshot_state()), args.repeat),
            _median_s(
                lambda: pickle.dumps({"version": 2, "state": pipeline.snapshot_state()}, 5),
                args.repeat,
            ),
        ),
        "decode": (
            _median_s(restore_document, args.repeat),
            _median_s(lambda: pickle.loads(pickled), args.repeat),
        ),
    }
    print(
        f"scenario seed {args.seed}, {args.hours:g} h: {len(engine.use_cases)} use cases, "
        f"{engine.stats.accepted:,} events, {len(engine._seen_ids):,} remembered ids"
    )
    print(f"{'':8} {'document':>12} {'pickle':>12} {'ratio':>7}")
    print(f"{'size':8} {len(doc):>10,} B {len(pickled):>10,} B {len(doc) / len(pickled):>7.2f}")
    for name, (new, old) in timings.items():
        print(f"{name:8} {new * 1e3:>9.1f} ms {old * 1e3:>9.1f} ms {new / old:>7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
