"""Cardinality attacks: producer-controlled names cannot grow memory without bound.

Session ids, use-case names and event ids come from gateways, so a buggy or
hostile producer controls how many distinct ones there are. The engine bounds
each (docs/architecture.md, Memory bounds; figures in docs/reliability.md),
evicts the least recently active and counts what it evicted; the Prometheus
``use_case`` label is capped. These tests feed the engine and the metrics
directly (UsageEvent objects, no decoding) so a million events take seconds.
"""

from __future__ import annotations

import tracemalloc

import pytest
from prometheus_client import CollectorRegistry

from spendsentry.engine import Engine, EngineConfig
from spendsentry.events import UsageEvent
from spendsentry.policy import PolicySet
from spendsentry.worker.metrics import OTHER, WorkerMetrics

T0 = 1_793_610_000.0  # a minute boundary
#: Traced memory per live session at the cap, the event-id index of the same
#: minutes included (docs/reliability.md).
BYTES_PER_SESSION_LIMIT = 4096
#: Traced memory kept per use-case name the engine still tracks (state + totals).
BYTES_PER_TRACKED_USE_CASE_LIMIT = 64 * 1024


def _call(n: int, ts: float, use_case: str, session: str | None) -> UsageEvent:
    return UsageEvent(
        event_id=f"e{n}",
        ts=ts,
        use_case=use_case,
        model="gpt-4o-mini",
        input_tokens=100,
        output_tokens=20,
        cost_usd=0.0001,
        session_id=session,
    )


@pytest.mark.timeout(120)
def test_a_million_distinct_session_ids_stay_under_the_session_cap() -> None:
    config = EngineConfig()  # the defaults: 50,000 live sessions per use case
    engine = Engine(PolicySet.empty(), config=config)
    total, minutes = 1_000_000, 10
    per_minute = total // minutes
    for minute in range(minutes + 4):
        start = minute * per_minute
        batch = (
            [
                _call(n, T0 + minute * 60 + (n - start) * 60 / per_minute, "chat", f"s-{n}")
                for n in range(start, start + per_minute)
            ]
            if minute < minutes
            else [_call(total + minute, T0 + minute * 60, "chat", None)]
        )
        engine.process(batch)
        engine.advance()
        assert len(engine.use_cases["chat"].sessions) <= config.max_sessions_per_use_case
    state = engine.use_cases["chat"]
    assert engine.stats.accepted == total + 4
    assert len(state.sessions) == config.max_sessions_per_use_case
    # Every session beyond the cap was evicted (while still live) and counted.
    assert state.sessions.evicted == engine.stats.evicted_sessions > 0
    assert (
        engine.stats.evicted_sessions >= total - 2 * config.max_sessions_per_use_case - per_minute
    )
    assert len(engine._seen_ids) <= config.max_dedupe_ids
    print(f"\nFIGURES sessions: offered={total}, evicted={engine.stats.evicted_sessions}")


def test_session_memory_at_the_cap_is_bounded() -> None:
    # Traced (slow), so on a smaller cap: 5,000 live sessions, 50,000 offered.
    config = EngineConfig(max_sessions_per_use_case=5_000)
    engine = Engine(PolicySet.empty(), config=config)
    engine.process([_call(0, T0, "chat", "s-0")])
    engine.advance(
        T0 + 60 + engine.config.allowed_lateness_s
    )  # the use case exists and observes: only sessions grow
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for minute in range(1, 11):
            base = minute * 5_000
            engine.process(
                [
                    _call(base + i, T0 + minute * 60 + i / 100, "chat", f"s-{base + i}")
                    for i in range(5_000)
                ]
            )
            engine.advance(T0 + (minute + 1) * 60 + engine.config.allowed_lateness_s)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(engine.use_cases["chat"].sessions) == 5_000
    per_session = (after - before) / 5_000
    assert per_session < BYTES_PER_SESSION_LIMIT, per_session
    print(f"\nFIGURES session_memory: bytes_per_live_session={per_session:.0f}")


def _flood_use_cases(engine: Engine, names: int, per_minute: int = 500) -> None:
    n = 0
    for minute in range(names // per_minute + 3):
        batch = [
            _call(n := n + 1, T0 + minute * 60 + i * 0.1, f"uc-{minute * per_minute + i}", None)
            for i in range(per_minute if minute * per_minute < names else 0)
        ]
        batch.append(_call(n := n + 1, T0 + minute * 60 + 59, "steady", None))
        engine.process(batch)
        engine.advance()


def test_thousands_of_new_use_case_names_evict_the_least_recently_active() -> None:
    config = EngineConfig(max_use_cases=1_000)
    engine = Engine(PolicySet.empty(), config=config)
    _flood_use_cases(engine, 5_000)
    assert len(engine.use_cases) <= config.max_use_cases
    assert engine.stats.evicted_use_cases >= 5_000 + 1 - config.max_use_cases
    # The steady use case is active every minute: it is never the one evicted.
    assert "steady" in engine.use_cases
    assert "uc-0" not in engine.use_cases and "uc-4999" in engine.use_cases


def test_memory_per_tracked_use_case_is_bounded_at_the_default_cap() -> None:
    # 2,000 names within four minutes stay under the default cap (10,000): all
    # are tracked, and this is what each costs (docs/reliability.md).
    engine = Engine(PolicySet.empty())
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        _flood_use_cases(engine, 2_000)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(engine.use_cases) == 2_001 <= engine.config.max_use_cases
    assert engine.stats.evicted_use_cases == 0
    per_use_case = (after - before) / len(engine.use_cases)
    assert per_use_case < BYTES_PER_TRACKED_USE_CASE_LIMIT, per_use_case
    print(f"\nFIGURES use_case_memory: bytes_per_tracked_use_case={per_use_case:.0f}")


def test_the_prometheus_use_case_label_is_capped() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics.create(registry, use_case_limit=50)
    for i in range(5_000):
        metrics.count_use_case(f"uc-{i}", {"llm_call": 1 + i % 7}, 100, 20, 0.01)
        metrics.set_score(f"uc-{i}", "cost_spike", 3.0)
        if i % 500 == 0:
            metrics.rerank_use_cases()
    # A late, much busier use case takes over a label at the next rerank.
    metrics.count_use_case("big", {"llm_call": 10_000}, 10**6, 10**5, 50.0)
    evicted = metrics.rerank_use_cases()
    assert evicted, "the busy newcomer should have taken a label"
    metrics.count_use_case("big", {"llm_call": 1}, 1, 1, 0.01)
    for family in ("spendsentry_events", "spendsentry_tokens", "spendsentry_cost_usd"):
        labels = {
            s.labels["use_case"]
            for metric in registry.collect()
            if metric.name == family
            for s in metric.samples
        }
        assert OTHER in labels and "big" in labels, family
        assert len(labels) <= 50 + 1, (family, len(labels))
    scores = {
        s.labels["use_case"]
        for metric in registry.collect()
        if metric.name == "spendsentry_detector_score"
        for s in metric.samples
    }
    assert len(scores) <= 50 + 1
