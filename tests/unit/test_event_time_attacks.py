"""Absurd event time cannot freeze or drag the engine (issue: nothing a producer
sends can stop the pipeline).

The cost of event time is measured in closed use-case minutes (``out.closed``),
never in seconds: a jump over idle minutes must cost O(use cases), a fresh
engine's first record must not pin its clock, and one outlier must not drag
event time anywhere.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from spendsentry.engine import Engine, EngineConfig
from spendsentry.events import UsageEvent
from spendsentry.ingest import Decoder, SourcePosition
from spendsentry.policy import PolicySet
from spendsentry.replay import Sinks, replay

T0 = 1_793_577_600.0  # 2026-11-02T00:00:00Z
NOW = T0 + 86_400.0  # the wall clock the decoder is told
YEAR = 365 * 86_400.0
DAY_MINUTES = 24 * 60


def usage(i: int, ts: float, use_case: str = "support_chat", **kw) -> UsageEvent:
    kw.setdefault("model", "gpt-4o-mini")
    kw.setdefault("input_tokens", 1000)
    kw.setdefault("output_tokens", 100)
    return UsageEvent(event_id=f"e{i}", ts=ts, use_case=use_case, **kw)


def traffic_hour(start: float, use_cases=("support_chat", "claims"), per_minute: int = 6):
    events = []
    for m in range(60):
        for uc in use_cases:
            for k in range(per_minute):
                ts = start + m * 60 + k * 7
                events.append(UsageEvent(f"{uc}-{ts}", ts, uc, model="gpt-4o-mini"))
    return events


def run(engine: Engine, events, batch: int = 5_000):
    """Replay-shaped: process and advance per batch, flush at the end."""
    closed = []
    rejected = []
    for i in range(0, len(events), batch):
        out = engine.process(events[i : i + batch])
        out.extend(engine.advance())
        closed += out.closed
        rejected += out.rejected
    out = engine.flush()
    return closed + out.closed, rejected + out.rejected


# -- the decoder's floor --------------------------------------------------------


@pytest.mark.parametrize(
    "ts", [1, 0.5, "0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "1999-12-31T23:59:59Z"]
)
def test_timestamps_before_the_floor_are_dead_lettered_bad_timestamp(ts):
    raw = orjson.dumps({"event_id": "x", "ts": ts, "use_case": "uc", "model": "gpt-4o-mini"})
    decoder = Decoder()
    assert decoder.decode_native(raw, now=NOW) is None  # the fast path never takes it
    decoded = decoder.decode(raw, SourcePosition("t"), now=NOW)
    assert decoded.events == []
    assert [d.reason.value for d in decoded.rejected] == ["bad_timestamp"]
    assert "before" in decoded.rejected[0].message


def test_the_floor_is_a_decoder_limit():
    from spendsentry.ingest.decoder import IngestLimits

    raw = orjson.dumps({"event_id": "x", "ts": 5, "use_case": "uc"})
    decoded = Decoder(IngestLimits(min_ts=0.0)).decode(raw, SourcePosition("t"), now=10.0)
    assert [e.ts for e in decoded.events] == [5.0]


# -- a fresh engine's first record does not pin its clock ------------------------


def test_a_year_old_first_record_is_late_not_the_start_of_time():
    engine = Engine(PolicySet.empty())
    events = [usage(1, T0 - YEAR), *traffic_hour(T0)]
    closed, rejected = run(engine, events)
    assert [d.reason.value for d in rejected] == ["late"]
    assert rejected[0].event_id == "e1"
    assert len(closed) == 2 * 60  # two use cases, one hour: nothing else was closed


def test_a_gap_of_a_week_before_the_rest_of_the_first_batch_starts_nothing():
    # The first batch of a stream decides where its clock starts; records
    # separated from the bulk of it by more than a week are outliers.
    engine = Engine(PolicySet.empty())
    events = [usage(1, T0 - 8 * 86400), usage(2, T0 - 8 * 86400 + 30), *traffic_hour(T0)]
    closed, rejected = run(engine, events)
    assert sorted(d.event_id for d in rejected) == ["e1", "e2"]
    assert all(d.reason.value == "late" for d in rejected)
    assert len(closed) == 120


def test_a_sparse_first_batch_keeps_everything_within_a_day():
    # A quiet use case's first batch can span hours; none of it is an outlier.
    engine = Engine(PolicySet.empty())
    events = [usage(i, T0 + i * 3_600) for i in range(10)]
    closed, rejected = run(engine, events)
    assert rejected == []
    assert sum(s.llm_calls for s in closed) == 10


# -- jumps over idle minutes cost O(use cases) ---------------------------------


def test_a_month_of_silence_costs_at_most_a_day_of_closes_per_use_case():
    engine = Engine(PolicySet.empty())
    first = traffic_hour(T0)
    later = [usage(10_000 + i, T0 + 30 * 86_400 + i * 10) for i in range(60)]
    closed, rejected = run(engine, first + later)
    assert rejected == []
    per_use_case: dict[str, int] = {}
    for s in closed:
        per_use_case[s.use_case] = per_use_case.get(s.use_case, 0) + 1
    # an hour of data, then at most a day of empty minutes, then the new data
    assert per_use_case["support_chat"] <= 60 + DAY_MINUTES + 11
    assert per_use_case["claims"] <= 60 + DAY_MINUTES
    assert sum(s.llm_calls for s in closed) == len(first) + len(later)


def test_a_jump_with_every_use_case_dormant_moves_the_clock_at_once():
    engine = Engine(PolicySet.empty(), config=EngineConfig(dormant_after_minutes=30))
    closed, _ = run(engine, traffic_hour(T0) + traffic_hour(T0 + 10 * YEAR))
    assert len(closed) <= 2 * (60 + 30 + 60)
    assert engine.closed_until is not None and engine.closed_until * 60 >= T0 + 10 * YEAR


def test_a_dormant_use_case_is_still_evicted_after_its_idle_limit():
    config = EngineConfig(dormant_after_minutes=30, use_case_idle_minutes=120)
    engine = Engine(PolicySet.empty(), config=config)
    run(engine, traffic_hour(T0, use_cases=("gone",)) + traffic_hour(T0 + 86_400, ("new",)))
    assert sorted(engine.use_cases) == ["new"]


def test_dormancy_does_not_touch_a_day_with_office_hours():
    # A use case quiet for 14 hours overnight sees every empty minute, as before.
    engine = Engine(PolicySet.empty())
    events = traffic_hour(T0, ("office",)) + traffic_hour(T0 + 15 * 3_600, ("office",))
    closed, _ = run(engine, events)
    minutes = sorted(s.minute for s in closed)
    assert minutes == list(range(minutes[0], minutes[0] + 16 * 60))


# -- one outlier cannot drag event time forward --------------------------------


def test_a_single_record_from_the_future_of_the_stream_does_not_make_the_rest_late():
    engine = Engine(PolicySet.empty())
    events = traffic_hour(T0)
    events.insert(100, usage(1, T0 + YEAR))  # a producer with a broken clock
    closed, rejected = run(engine, events, batch=50)
    assert rejected == []
    assert sum(s.llm_calls for s in closed) == len(events)
    # the outlier's minute closes at flush, after at most a day of empty minutes each
    assert len(closed) <= 2 * (60 + DAY_MINUTES) + 1


def test_two_records_agree_on_a_jump():
    # A genuine jump (a weekend in a log file) is confirmed by the second record.
    engine = Engine(PolicySet.empty())
    run(engine, traffic_hour(T0))
    engine.process([usage(1, T0 + 3 * 86_400), usage(2, T0 + 3 * 86_400 + 5)])
    assert engine.max_ts >= T0 + 3 * 86_400


# -- the engine survives a snapshot with the outlier in it ----------------------


def test_an_outlier_alone_in_the_first_batch_costs_a_bounded_number_of_closes():
    # A worker's first fetch may hold nothing but the outlier: it starts the
    # clock, and the jump to real traffic costs at most a day of empty minutes
    # of its use case, also after a snapshot and restore.
    from _snapshots import restart

    engine = Engine(PolicySet.empty())
    engine.process([usage(1, T0 - YEAR)])
    engine.advance()
    restored = restart(engine)
    closed, rejected = run(restored, traffic_hour(T0))
    assert rejected == []
    assert len(closed) <= 1 + DAY_MINUTES + 2 * 60
    assert restored.closed_until is not None and restored.closed_until * 60 > T0


# -- replay end to end ----------------------------------------------------------


def test_replay_of_absurd_timestamps_then_an_hour_finishes_with_reasons(tmp_path: Path):
    path = tmp_path / "poison.jsonl.gz"
    lines = [
        {"event_id": "p1", "ts": 1, "use_case": "support_chat", "model": "gpt-4o-mini"},
        {"event_id": "p2", "ts": "0001-01-01T00:00:00Z", "use_case": "support_chat"},
        {"event_id": "p3", "ts": T0 - YEAR, "use_case": "support_chat", "model": "gpt-4o-mini"},
    ]
    lines += [e.to_dict() for e in traffic_hour(T0)]
    with gzip.open(path, "wb") as f:
        f.write(b"\n".join(orjson.dumps(x) for x in lines) + b"\n")
    engine = Engine(PolicySet.empty())
    out_path = tmp_path / "dl.jsonl"
    result = replay([str(path)], engine, Sinks(deadletter=str(out_path)))
    assert result.rejected == {"bad_timestamp": 2, "late": 1}
    assert engine.stats.accepted == len(lines) - 3
    minutes = {orjson.loads(x)["reason"] for x in out_path.read_bytes().splitlines()}
    assert minutes == {"bad_timestamp", "late"}
