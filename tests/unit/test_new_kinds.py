"""cache_regression and shared_embedding_duplication, through the engine and on their own."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from _monitors import context, feed

from spendsentry.detectors.kinds.cache_regression import CacheRegression
from spendsentry.engine import Engine
from spendsentry.events import UsageEvent
from spendsentry.ingest import Decoder, SourcePosition
from spendsentry.policy import Policy, PolicySet
from spendsentry.pricing import ModelRates, PriceBook
from spendsentry.shared_content import SharedContentIndex
from spendsentry.simulate.incidents import Incident
from spendsentry.simulate.scenario import Scenario
from spendsentry.timeutil import parse_ts
from spendsentry.windows import MinuteSignals, ModelMinute

POLICIES = Path(__file__).resolve().parents[2] / "streams" / "policies"
NEW = ("cache_regression", "shared_embedding_duplication")


def _alerts(scenario: Scenario) -> list[tuple[str, str, float, dict]]:
    engine = Engine(PolicySet.load(POLICIES))
    decoder = Decoder()
    events = []
    for doc in scenario.iter_events():
        events.extend(decoder.decode(orjson.dumps(doc), SourcePosition("sim"), now=4e9).events)
    alerts = []
    for start in range(0, len(events), 5_000):
        out = engine.process(events[start : start + 5_000])
        out.extend(engine.advance())
        alerts += out.alerts
    alerts += engine.flush().alerts
    return [
        (a.kind, a.use_case, parse_ts(a.detected_at), a.to_dict())
        for a in alerts
        if a.status == "firing"
    ]


@pytest.fixture(scope="module")
def incident_run() -> tuple[Scenario, list[tuple[str, str, float, dict]]]:
    base = Scenario(seed=21, hours=5, no_incidents=True).start
    at = base + timedelta(hours=3)
    incidents = [
        Incident("c", "cache_regression", "support_chat", "step", at, at + timedelta(minutes=50)),
        Incident(
            "s",
            "shared_embedding_duplication",
            "underwriting_rag",
            "step",
            at + timedelta(minutes=20),
            at + timedelta(minutes=60),
            params={"chunks_per_minute": 10},
        ),
    ]
    scenario = Scenario(seed=21, hours=5, incidents=incidents)
    return scenario, _alerts(scenario)


def test_both_incidents_are_caught_within_five_minutes(incident_run) -> None:
    scenario, alerts = incident_run
    for incident in scenario.incidents:
        start = incident.start.timestamp()
        caught = [
            t
            for kind, use_case, t, _ in alerts
            if kind == incident.kind and use_case == incident.use_case and t >= start
        ]
        assert caught, incident.kind
        assert caught[0] - start <= 300, (incident.kind, caught[0] - start)


def test_no_alert_of_the_new_kinds_outside_their_incidents(incident_run) -> None:
    scenario, alerts = incident_run
    windows = {
        (i.kind, i.use_case): (i.start.timestamp(), i.end.timestamp()) for i in scenario.incidents
    }
    for kind, use_case, t, _ in alerts:
        if kind in NEW:
            start, end = windows.get((kind, use_case), (0.0, -1.0))
            assert start <= t <= end + 120, (kind, use_case, t)


def test_the_alerts_carry_their_evidence(incident_run) -> None:
    _, alerts = incident_run
    cache = next(a for k, _, _, a in alerts if k == "cache_regression")
    assert cache["severity"] in ("warning", "critical")
    details = cache["evidence"]["details"]
    assert details["cached_share_before"] > 0.3 > details["cached_share_now"]
    assert cache["impact"]["excess_cost_per_hour_usd"] > 0
    shared = next(a for k, _, _, a in alerts if k == "shared_embedding_duplication")
    assert shared["severity"] == "info"
    details = shared["evidence"]["details"]
    assert details["shared_with"] == ["doc_embeddings"]
    assert details["monthly_saving_usd"] > 0


def test_a_quiet_day_raises_neither_kind() -> None:
    alerts = _alerts(Scenario(seed=102, hours=10, no_incidents=True))
    assert [a for a in alerts if a[0] in NEW] == []


# -- the cross-use-case index ---------------------------------------------------------


def test_the_later_embedder_is_charged_and_the_owner_named() -> None:
    index = SharedContentIndex()
    assert index.close_minute("pipeline", 0, {"a": 1, "b": 1}) == (0, ())
    assert index.close_minute("search", 1, {"a": 1, "b": 2, "c": 1}) == (3, ("pipeline",))
    # The owner repeating its own content is embedding_duplication's business.
    assert index.close_minute("pipeline", 2, {"a": 1}) == (0, ())
    assert index.close_minute("third", 3, {"c": 1, "a": 1}) == (2, ("pipeline", "search"))


def test_content_older_than_a_day_has_no_owner_any_more() -> None:
    index = SharedContentIndex(ttl_minutes=1440)
    index.close_minute("pipeline", 0, {"a": 1})
    assert index.close_minute("search", 1441, {"a": 1}) == (0, ())
    assert index.close_minute("pipeline", 1442, {"a": 1}) == (1, ("search",))


def test_memory_is_bounded_oldest_first() -> None:
    index = SharedContentIndex(max_hashes=100)
    for minute in range(10):
        index.close_minute("p", minute, {f"{minute}-{i}": 1 for i in range(30)})
    assert len(index) == 100 and index.evicted == 200
    assert index.close_minute("q", 10, {"9-0": 1, "0-0": 1}) == (1, ("p",))


def test_same_minute_resolves_by_the_engines_close_order() -> None:
    """Two use cases embedding one new document in one minute: the engine closes
    use cases in name order, so the first name owns it on every run."""
    events = [
        UsageEvent(f"{uc}-{i}", 60.0 + i, uc, kind="embedding", content_hash=f"doc-{i}")
        for uc in ("zeta", "alpha")
        for i in range(3)
    ]
    engine = Engine()
    engine.process(events)
    closed = {s.use_case: s for s in engine.flush().closed}
    assert (closed["alpha"].shared_embeddings, closed["zeta"].shared_embeddings) == (0, 3)
    assert closed["zeta"].shared_with == ("alpha",)


# -- the excess cost of a cache regression ---------------------------------------------


def _minute(m: int, cached_share: float) -> MinuteSignals:
    tokens = 100_000
    return MinuteSignals(
        "chat",
        m,
        llm_calls=50,
        llm_input_tokens=tokens,
        input_tokens=tokens,
        cached_input_tokens=int(tokens * cached_share),
        models={"m": ModelMinute(50, 1.0, tokens, 5_000, 0)},
    )


def test_excess_cost_is_the_lost_cache_share_priced_by_the_price_book() -> None:
    prices = PriceBook(overrides={"m": ModelRates(3e-6, 0.3e-6, 15e-6)})
    monitor = CacheRegression.build(Policy("chat"), prices)
    assert monitor is not None
    minutes = [_minute(m, 0.8 + 0.02 * ((m * 7) % 3 - 1)) for m in range(120)]
    minutes += [_minute(m, 0.0) for m in range(120, 135)]
    found = feed(monitor, minutes, context("chat"))
    assert found and 120 <= found[0][0] <= 123
    last = found[-1][1]
    # All 5 window minutes are past the step: 0.8 of 100k tokens a minute now
    # billed at 3 $/Mtok instead of 0.3 $/Mtok, for 60 minutes.
    assert last.excess_cost_per_hour_usd == pytest.approx(0.8 * 100_000 * 2.7e-6 * 60, rel=0.05)
    assert last.severity == "critical"  # uncached share 0.2 -> 1.0: 5x


def test_a_use_case_that_does_not_cache_never_alerts() -> None:
    monitor = CacheRegression.build(Policy("chat"), PriceBook())
    assert monitor is not None
    # Caching 10 % and losing it: the uncached share goes 0.9 -> 1.0 (1.1x).
    minutes = [_minute(m, 0.1) for m in range(300)]
    minutes += [_minute(m, 0.0) for m in range(300, 360)]
    assert feed(monitor, minutes, context("chat")) == []
