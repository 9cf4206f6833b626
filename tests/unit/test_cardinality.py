"""Cardinality attacks: producer-controlled names cannot grow memory without bound.

Session ids, use-case names and event ids come from gateways, so a buggy or
hostile producer controls how many distinct ones there are. The engine bounds
each (docs/architecture.md, Memory bounds; figures in docs/reliability.md),
evicts the least recently active and counts what it evicted; the Prometheus
``use_case`` label is capped. These tests feed the engine and the metrics
directly (UsageEvent objects, no decoding) so a million events take seconds.
"""

from __future__ import annotations

import itertools
import pickle
import tracemalloc
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from spendsentry.engine import Engine, EngineConfig
from spendsentry.events import UsageEvent
from spendsentry.policy import PolicySet
from spendsentry.worker.metrics import OTHER, WorkerMetrics, label_share
from spendsentry.worker.partitions import PartitionSet
from spendsentry.worker.service import IngestService, WorkerConfig

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


@dataclass
class _Rec:
    topic: str
    partition: int
    offset: int
    value: bytes


def _records(partition: int, first: int, docs: list[dict[str, object]]) -> list[_Rec]:
    return [_Rec("u", partition, first + i, orjson.dumps(doc)) for i, doc in enumerate(docs)]


def _use_case_labels(registry: CollectorRegistry, family: str) -> set[str]:
    return {
        s.labels["use_case"]
        for metric in registry.collect()
        if metric.name == family
        for s in metric.samples
    }


@pytest.mark.timeout(120)
def test_the_prometheus_use_case_label_is_capped_per_worker() -> None:
    # One worker owning all 3 partitions: the cap (50) holds for the worker, not
    # per engine (3 x 50 before).
    registry = CollectorRegistry()
    metrics = WorkerMetrics.create(registry, use_case_limit=50)
    parts = PartitionSet(Engine, metrics, inputs=("u", "o"), use_case_labels=label_share(50, 3))
    for p in range(3):
        parts.fresh(p)
    offsets = [0, 0, 0]

    def feed(p: int, docs: list[dict[str, object]]) -> None:
        parts.handle({("u", p): _records(p, offsets[p], docs)}, now=T0 + 3600)
        offsets[p] += len(docs)

    def commit_all() -> None:
        for pl in parts.values():
            pl.commit_counters(pl.capture_counters())

    def doc(n: int, k: int) -> dict[str, object]:
        return {
            "event_id": f"e{n}-{k}",
            "ts": T0 + n * 0.01,
            "use_case": f"uc-{n}",
            "input_tokens": 10,
            "cost_usd": 0.01,
        }

    for first in range(0, 5_000, 500):
        for p in range(3):
            feed(
                p,
                [
                    doc(n, k)
                    for n in range(first, first + 500)
                    if n % 3 == p
                    for k in range(1 + n % 7)
                ],
            )
        commit_all()
    commit_all()
    # A late, much busier use case takes over a label at the next snapshot.
    feed(0, [{"event_id": f"b{k}", "ts": T0 + 50, "use_case": "big"} for k in range(10_000)])
    commit_all()
    feed(0, [{"event_id": "b-last", "ts": T0 + 51, "use_case": "big", "cost_usd": 1.0}])
    commit_all()
    for family in ("spendsentry_events", "spendsentry_tokens", "spendsentry_cost_usd"):
        labels = _use_case_labels(registry, family)
        assert OTHER in labels, family
        assert len(labels) <= 50 + 1, (family, len(labels))
    assert "big" in _use_case_labels(registry, "spendsentry_events")
    accepted = sum(pl.engine.stats.accepted for pl in parts.values())
    shown = sum(
        s.value
        for metric in registry.collect()
        if metric.name == "spendsentry_events"
        for s in metric.samples
    )
    # Evicted labels take their past series with them; what is shown never exceeds the truth.
    assert 0 < shown <= accepted
    # Ranking memory per partition is bounded, not one entry per name ever seen.
    for pl in parts.values():
        labels = pl.accounting.counters.labels
        assert len(labels.volume) <= 2 * labels.max_tracked


def test_detector_score_label_is_capped() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics.create(registry, use_case_limit=50)
    for i in range(5_000):
        metrics.set_score(f"uc-{i}", "cost_spike", 3.0)
    assert len(_use_case_labels(registry, "spendsentry_detector_score")) <= 50 + 1


# -- issue 12, item 6: bounds per worker, in bytes ------------------------------


def _unpriced(n: int, ts: float, model: str) -> UsageEvent:
    return UsageEvent(event_id=f"u{n}", ts=ts, use_case="chat", model=model, input_tokens=10)


def test_unpriced_model_names_are_capped_and_the_snapshot_stays_small() -> None:
    engine = Engine(PolicySet.empty())
    engine.process([_unpriced(n, T0 + n * 0.001, f"custom-model-{n}") for n in range(100_000)])
    stats = engine.stats
    assert stats.unpriced == 100_000 == sum(stats.unpriced_models.values())
    assert len(stats.unpriced_models) <= engine.config.max_unpriced_models + 1
    assert stats.unpriced_models["(other)"] == 100_000 - engine.config.max_unpriced_models
    # The stats are snapshotted with the engine (the event ids of the last
    # minutes too, but those expire): 100k names made them megabytes.
    size = len(pickle.dumps(stats, protocol=5))
    assert size < 100_000, size


def _service(**engine_config: Any) -> IngestService:
    config = WorkerConfig(
        bootstrap="127.0.0.1:9",
        engine_config=EngineConfig(**engine_config),
        use_case_label_limit=50,
    )
    engine = Engine(PolicySet.empty(), config=config.engine_config)
    return IngestService(config, engine, WorkerMetrics.create(CollectorRegistry()))


def _flood(service: IngestService, names: int) -> None:
    partitions = service.config.topics.usage.partitions
    for p in range(partitions):
        service.parts.fresh(p)
    usage = service.config.topics.usage.name

    def doc(n: int) -> bytes:
        cost = 0.001 * (1 + n % 997)
        return orjson.dumps(
            {"event_id": f"e{n}", "ts": T0 + n * 0.001, "use_case": f"uc-{n}", "cost_usd": cost}
        )

    for first in range(0, names, 1_000):
        batch = {
            (usage, p): [
                _Rec(usage, p, n, doc(n))
                for n in range(first, min(names, first + 1_000))
                if n % partitions == p
            ]
            for p in range(partitions)
        }
        service.parts.handle(batch, now=T0 + 3600)


@pytest.mark.timeout(120)
def test_use_case_state_is_bounded_per_worker_not_per_engine() -> None:
    service = _service(max_use_cases=300)
    _flood(service, 3_000)
    engines = [pl.engine for pl in service.parts.values()]
    assert len(engines) == service.config.topics.usage.partitions > 1
    assert sum(len(e.use_cases) for e in engines) <= 300
    assert sum(len(e.stats.use_cases) for e in engines) <= 300 * 10 + len(engines)
    assert sum(e.stats.accepted for e in engines) == 3_000


@pytest.mark.timeout(120)
def test_status_and_status_page_stay_bounded_under_a_flood_of_names() -> None:
    service = _service(max_use_cases=20_000)
    _flood(service, 20_000)
    status = orjson.dumps(service.status())
    # ~100 top use cases and counts, not one entry per name (megabytes before).
    assert len(status) < 200_000, len(status)
    doc = orjson.loads(status)
    assert doc["use_case_count"] == 20_000 and len(doc["use_cases"]) <= 100
    top = list(doc["use_cases"].values())
    assert all(a["cost_usd"] >= b["cost_usd"] for a, b in itertools.pairwise(top))
    assert top[0]["cost_usd"] > top[-1]["cost_usd"]
    for p in doc["partitions"].values():
        assert len(p["use_cases"]) <= 100 < p["use_case_count"]
    page = service.page_snapshot()
    tracked = sum(len(pl.engine.use_cases) for pl in service.parts.values())
    assert len(page["use_cases"]) <= 40 and page["use_case_count"] == tracked > 10_000
