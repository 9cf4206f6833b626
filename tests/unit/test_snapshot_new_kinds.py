"""The new kinds and the engine's shared content index, through version-3 snapshots.

A restart in the middle of either incident must carry on with exactly the
alerts of a run that never stopped: the kinds' learned state and the
engine-level :class:`~spendsentry.shared_content.SharedContentIndex` (who
embedded which content first) go through the version-3 document. A document
written before the index existed restores with an empty one; bad index data
is a :class:`SnapshotError` naming the field.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from _snapshots import plain

from spendsentry.engine import Engine, EngineConfig
from spendsentry.ingest import Decoder, SourcePosition
from spendsentry.policy import PolicySet
from spendsentry.simulate.incidents import Incident
from spendsentry.simulate.scenario import Scenario
from spendsentry.snapshot import SnapshotError, encode_state
from spendsentry.snapshot.engine import dump_engine, load_engine
from spendsentry.worker.pipeline import Pipeline
from spendsentry.worker.state import pack_state, unpack_state

POLICIES = Path(__file__).resolve().parents[2] / "streams" / "policies"
BASE = Scenario(seed=21, hours=5, no_incidents=True).start
CACHE_AT = BASE + timedelta(hours=3)
SHARED_AT = CACHE_AT + timedelta(minutes=20)


@pytest.fixture(scope="module")
def events() -> list[Any]:
    incidents = [
        Incident(
            "c", "cache_regression", "support_chat", "step", CACHE_AT, CACHE_AT + timedelta(hours=1)
        ),
        Incident(
            "s",
            "shared_embedding_duplication",
            "underwriting_rag",
            "step",
            SHARED_AT,
            SHARED_AT + timedelta(minutes=40),
            params={"chunks_per_minute": 10},
        ),
    ]
    decoder = Decoder()
    out: list[Any] = []
    for doc in Scenario(seed=21, hours=5, incidents=incidents).iter_events():
        out.extend(decoder.decode(orjson.dumps(doc), SourcePosition("sim"), now=4e9).events)
    return out


def _run(engine: Engine, events: list[Any], *, flush: bool = True) -> list[dict[str, Any]]:
    alerts = []
    for start in range(0, len(events), 2_000):
        out = engine.process(events[start : start + 2_000])
        out.extend(engine.advance())
        alerts += [a.to_dict() for a in out.alerts]
    if flush:
        alerts += [a.to_dict() for a in engine.flush().alerts]
    return alerts


# Four minutes into each incident, a minute before it is caught. Minutes close
# two minutes late, so the snapshot holds closed incident minutes in the kinds'
# windows (the excess cost of the alert adds them up) and, for the shared kind,
# the source's chunks the copy embeds right after the restart: whether they
# count as shared rests on the restored index.
@pytest.mark.parametrize(
    ("kind", "cut"),
    [
        ("cache_regression", CACHE_AT + timedelta(minutes=4)),
        ("shared_embedding_duplication", SHARED_AT + timedelta(minutes=4)),
    ],
)
def test_a_restart_mid_incident_continues_with_identical_alerts(
    events: list[Any], kind: str, cut: Any
) -> None:
    before = [e for e in events if e.ts < cut.timestamp()]
    after = events[len(before) :]
    policies = PolicySet.load(POLICIES)
    live = Engine(policies)
    _run(live, before, flush=False)
    payload = pack_state(Pipeline(live, partition=0).snapshot_state())
    restored = Pipeline(Engine(policies), partition=0)
    restored.restore_state(unpack_state(payload), now=0.0)
    assert len(restored.engine.shared_content) == len(live.shared_content) > 0
    expected = _run(live, after)
    firing = [a for a in expected if a["kind"] == kind and a["status"] == "firing"]
    assert firing and firing[0]["started_at"] < firing[0]["detected_at"] <= _iso(cut, 1), kind
    assert _run(restored.engine, after) == expected


def _iso(when: Any, minutes: int) -> str:
    return (when + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_the_index_round_trips_in_recency_order_with_its_evictions() -> None:
    config = EngineConfig(max_shared_content_hashes=3)
    engine = Engine(config=config)
    index = engine.shared_content
    index.close_minute("kb", 10, {"a": 1, "b": 1})
    index.close_minute("search", 11, {"a": 2, "c": 1, "d": 1})  # evicts "b"
    assert index.evicted == 1
    fresh = load_engine(Engine(config=config), plain(dump_engine(engine)))
    again = fresh.shared_content
    assert list(again._owners.items()) == list(index._owners.items())
    assert again.evicted == 1
    # And it goes on the same: "d" owned by search, "a" still kb's.
    for i in (index, again):
        assert i.close_minute("ops", 12, {"a": 1, "d": 3, "e": 1}) == (4, ("search", "kb"))
    assert list(again._owners.items()) == list(index._owners.items())


def _document() -> dict[str, Any]:
    engine = Engine(PolicySet.load(POLICIES))
    engine.shared_content.close_minute("kb", 10, {"a": 1, "b": 1})
    return msgspec.msgpack.decode(encode_state(Pipeline(engine, partition=0).snapshot_state()))


def _restore(doc: dict[str, Any]) -> Engine:
    pipeline = Pipeline(Engine(PolicySet.load(POLICIES)), partition=0)
    pipeline.restore_state(unpack_state(msgspec.msgpack.encode(doc)), now=0.0)
    return pipeline.engine


def test_a_document_from_before_the_index_restores_with_an_empty_one() -> None:
    doc = _document()
    assert len(_restore(doc).shared_content) == 2
    del doc["engine"]["shared_content"]
    assert len(_restore(doc).shared_content) == 0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("hashes", b"1234567", "hashes: not a whole number of uint64 hashes"),
        ("owners", [0, 2], "owners[1]: 2 names no use case (of 1)"),
        ("owners", [0], "owners: hashes, owners and minutes differ in length"),
        ("minutes", [10, 10.5], "minutes[1]: expected int, got float"),
        ("names", [7], "names[0]: expected str, got int"),
    ],
)
def test_bad_index_data_is_named(field: str, value: Any, message: str) -> None:
    doc = _document()
    doc["engine"]["shared_content"][field] = value
    with pytest.raises(SnapshotError) as info:
        _restore(doc)
    assert str(info.value) == f"$.engine.shared_content.{message}"


def test_bad_recent_tokens_of_the_cache_kind_are_named(events: list[Any]) -> None:
    engine = Engine(PolicySet.load(POLICIES))
    _run(engine, events[:3_000], flush=False)
    doc = msgspec.msgpack.decode(encode_state(Pipeline(engine, partition=0).snapshot_state()))
    monitors = doc["engine"]["use_cases"]["support_chat"]["monitors"]
    at = next(i for i, m in enumerate(monitors) if m["kind"] == "cache_regression")
    recent = monitors[at]["lenses"]["CacheRegression"]["_recent"]
    assert recent, "the kind kept its recent minutes"
    recent[0] = {"gpt-4o": "many"}
    with pytest.raises(SnapshotError) as info:
        _restore(doc)
    assert str(info.value) == (
        f"$.engine.use_cases.support_chat.monitors[{at}].lenses.CacheRegression._recent[0]: "
        "expected a map of str to int, has 'gpt-4o'"
    )
