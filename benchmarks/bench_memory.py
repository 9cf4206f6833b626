"""Engine memory per active use case, per live session and per remembered event id.

Run with ``python benchmarks/bench_memory.py``. Each figure is the difference
of ``tracemalloc``-traced memory between two engines that differ only in the
counted thing (so fixed costs cancel out), after enough event time for every
window to fill:

* use cases: 50 and 250 use cases, 90 minutes of event time (the 1-hour cost
  window and the detectors' baselines are full), 3 calls a minute each;
* sessions: one use case with 1,000 and 11,000 sessions active in the last
  minutes (within ``session_idle_minutes``), each making calls;
* event ids: the dedupe index holding 10,000 and 110,000 ids.

Not collected by pytest.
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc
from collections.abc import Callable

from spendsentry.engine import Engine
from spendsentry.events import UsageEvent
from spendsentry.policy import PolicySet

T0 = 1_793_577_600.0  # 2026-11-02T00:00:00Z


def traced(build: Callable[[], object]) -> int:
    """Bytes still allocated by ``build()``'s result once it returns."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = build()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return after - before


def use_cases(n: int, minutes: int = 90, calls: int = 3) -> Engine:
    engine = Engine(PolicySet.empty())
    i = 0
    for minute in range(minutes):
        batch = []
        for k in range(calls):
            for u in range(n):
                ts = T0 + minute * 60 + k * (60 / calls)
                batch.append(
                    UsageEvent(f"e{i}", ts, f"use-case-{u}", model="gpt-4o-mini",
                               input_tokens=400 + k, output_tokens=80, session_id=f"s{u}-{k}")
                )  # fmt: skip
                i += 1
        engine.process(batch)
        engine.advance()
    return engine


def sessions(n: int, minutes: int = 10) -> Engine:
    engine = Engine(PolicySet.empty())
    i = 0
    for minute in range(minutes):
        batch = []
        for s in range(n):
            ts = T0 + minute * 60 + (s % 60)
            batch.append(
                UsageEvent(f"e{i}", ts, "agents", kind="tool_call", session_id=f"session-{s:06d}",
                           tool_name="search", cost_usd=0.0)
            )  # fmt: skip
            i += 1
        engine.process(batch)
        engine.advance()
    return engine


def event_ids(n: int) -> Engine:
    engine = Engine(PolicySet.empty())
    engine.process(
        UsageEvent(f"01JCK2X9Q4W5E6R7T8Y{i:07d}", T0 + i * 1e-4, "ids", model="gpt-4o-mini")
        for i in range(n)
    )
    return engine


def main(scale: int) -> None:
    lo, hi = 50 * scale, 250 * scale
    per_use_case = (traced(lambda: use_cases(hi)) - traced(lambda: use_cases(lo))) / (hi - lo)
    lo, hi = 1_000 * scale, 11_000 * scale
    per_session = (traced(lambda: sessions(hi)) - traced(lambda: sessions(lo))) / (hi - lo)
    lo, hi = 10_000 * scale, 110_000 * scale
    per_id = (traced(lambda: event_ids(hi)) - traced(lambda: event_ids(lo))) / (hi - lo)
    print(f"memory per active use case   : {per_use_case / 1024:8.1f} KiB "
          "(90 min of history: windows, detectors, incident trackers)")  # fmt: skip
    print(f"memory per live session      : {per_session:8.0f} B")
    print(f"memory per remembered event id: {per_id:7.0f} B (dedupe horizon, 5 min by default)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=1, help="multiply every count by this")
    main(parser.parse_args().scale)
