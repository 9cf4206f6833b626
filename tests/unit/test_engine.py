"""The engine: event time, deduplication, lateness, bounded state, determinism."""

from __future__ import annotations

import random

from _snapshots import restart

from spendsentry.engine import Engine, EngineConfig
from spendsentry.events import OutcomeEvent, UsageEvent
from spendsentry.policy import PolicySet

T0 = 1_793_577_600.0  # 2026-11-02T00:00:00Z


def usage(i: int, ts: float, use_case: str = "support_chat", **kw) -> UsageEvent:
    kw.setdefault("model", "gpt-4o-mini")
    kw.setdefault("input_tokens", 1000)
    kw.setdefault("output_tokens", 100)
    return UsageEvent(event_id=f"e{i}", ts=ts, use_case=use_case, **kw)


def run(events, config=None):
    engine = Engine(PolicySet.empty(), config=config)
    out = engine.process(events)
    out.extend(engine.advance())
    out.extend(engine.flush())
    return engine, out


def test_prices_events_without_cost_and_keeps_reported_cost():
    engine, _ = run([usage(1, T0), usage(2, T0 + 1, cost_usd=0.5)])
    totals = engine.stats.use_cases["support_chat"]
    # gpt-4o-mini: $0.15/Mtok in, $0.60/Mtok out
    assert abs(totals.cost_usd - (0.5 + 1000 * 0.15e-6 + 100 * 0.6e-6)) < 1e-12


def test_unknown_model_is_kept_and_counted_unpriced():
    engine, out = run([usage(1, T0, model="in-house-llm-7b")])
    assert engine.stats.accepted == 1 and engine.stats.unpriced == 1
    assert engine.stats.unpriced_models == {"in-house-llm-7b": 1}
    assert out.closed[0].unpriced == 1


def test_duplicate_event_ids_are_counted_and_skipped():
    engine, out = run([usage(1, T0), usage(1, T0), usage(2, T0 + 5), usage(1, T0 + 9)])
    assert engine.stats.accepted == 2 and engine.stats.duplicates == 2
    assert sum(s.llm_calls for s in out.closed) == 2


def test_minutes_close_by_watermark_and_late_events_are_dead_lettered():
    engine = Engine(PolicySet.empty(), config=EngineConfig(allowed_lateness_s=60))
    engine.process([usage(1, T0 + 10), usage(2, T0 + 200)])
    closed = engine.advance()  # watermark T0+140: minutes 0 and 1 close
    assert [s.minute - int(T0 // 60) for s in closed.closed] == [0, 1]
    late = engine.process([usage(3, T0 + 30)])
    assert [d.reason.value for d in late.rejected] == ["late"]
    assert late.rejected[0].event_id == "e3"
    assert engine.stats.late == 1
    on_time = engine.process([usage(4, T0 + 150)])  # minute 2 is still open
    assert on_time.rejected == []


def test_arrival_order_within_lateness_does_not_change_results():
    rng = random.Random(7)
    events = []
    for i in range(3000):
        ts = T0 + i * 2.0
        kind = rng.choice(["llm_call", "llm_call", "tool_call", "retrieval", "embedding"])
        events.append(
            usage(
                i,
                ts,
                use_case=rng.choice(["a", "b", "c"]),
                kind=kind,
                session_id=f"s{i % 37}",
                request_id=f"r{i // 3}",
                content_hash=f"h{rng.randrange(500)}",
                input_tokens=rng.randrange(1, 4000),
            )
        )
    events += [OutcomeEvent(f"o{i}", T0 + i * 20.0, "a", "ticket_resolved") for i in range(200)]
    events.sort(key=lambda e: e.ts)

    def closed_minutes(evs):
        engine = Engine(PolicySet.empty(), config=EngineConfig(allowed_lateness_s=120))
        out = []
        for start in range(0, len(evs), 250):
            o = engine.process(evs[start : start + 250])
            assert o.rejected == []
            out += engine.advance().closed
        out += engine.flush().closed
        return out

    # Shuffle within 60 s of event time: well inside the allowed lateness.
    jittered = sorted(events, key=lambda e: e.ts + rng.uniform(0, 60))
    assert closed_minutes(events) == closed_minutes(jittered)


def test_session_state_is_bounded_and_counts_evictions():
    config = EngineConfig(max_sessions_per_use_case=100)
    events = [usage(i, T0 + i * 0.01, session_id=f"s{i}") for i in range(5000)]
    engine, _ = run(events, config)
    state = engine.use_cases["support_chat"]
    assert len(state.sessions) <= 100
    assert state.sessions.evicted == 4900


def test_use_case_cardinality_is_capped():
    config = EngineConfig(max_use_cases=50)
    engine, _ = run([usage(i, T0 + i * 0.01, use_case=f"uc{i}") for i in range(500)], config)
    assert len(engine.use_cases) <= 50
    assert engine.stats.evicted_use_cases == 450


def test_engine_state_snapshots_and_resumes_identically():
    events = [usage(i, T0 + i * 3.0, session_id=f"s{i % 9}") for i in range(2000)]
    whole = Engine(PolicySet.empty())
    whole.process(events)
    expected = whole.advance().closed + whole.flush().closed

    first = Engine(PolicySet.empty())
    first.process(events[:1000])
    got = first.advance().closed
    resumed = restart(first)
    resumed.process(events[1000:])
    got += resumed.advance().closed + resumed.flush().closed
    assert got == expected


def test_per_use_case_totals_are_capped_and_nothing_is_lost():
    config = EngineConfig(max_use_cases=5)  # named totals: at most 10 x 5
    engine, _ = run([usage(i, T0 + i * 0.01, use_case=f"uc{i}") for i in range(200)], config)
    totals = engine.stats.use_cases
    assert len(totals) == 51 and "(other)" in totals
    assert sum(t.events for t in totals.values()) == engine.stats.accepted == 200


def test_only_the_outcome_the_policy_names_is_counted():
    policies = PolicySet.from_toml_text(
        '[use_cases.desk]\nowner = "#desk"\n'
        '[use_cases.desk.cost_per_outcome]\noutcome = "ticket_resolved"\ntarget_usd = 0.01\n'
    )
    events = [usage(0, T0, use_case="desk"), usage(1, T0, use_case="other")]
    for i, name in enumerate(["ticket_resolved", "ticket_escalated", "ticket_resolved"]):
        events.append(OutcomeEvent(f"o{i}", T0 + i, "desk", name))
        events.append(OutcomeEvent(f"p{i}", T0 + i, "other", name))
    engine = Engine(policies)
    engine.process(events)
    closed = {s.use_case: s for s in engine.flush().closed}
    assert closed["desk"].outcomes == 2  # the escalation is not what the spend buys
    assert closed["other"].outcomes == 3  # no policy names one: every outcome counts
