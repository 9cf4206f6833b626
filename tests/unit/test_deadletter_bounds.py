"""Dead letters are bounded: one always fits a Kafka message, one message makes one.

Issue 12, item 2: the dead letter of an ~800 KB invalid record (base64 plus a
preview) was bigger than the producer's ``max_request_size`` and killed the
worker; a 200 KB message of 100k junk array elements wrote 21 MB of dead
letters. Item 6: over-long identifiers are dead-lettered as ``oversized``
before they reach engine state. docs/reliability.md quotes the figures these
tests print (``pytest -s``: one ``FIGURES`` line per test).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from spendsentry import cli
from spendsentry.engine import Engine
from spendsentry.ingest import Decoder, IngestLimits, SourcePosition
from spendsentry.ingest.deadletter import (
    MAX_DEAD_LETTER_BYTES,
    DeadLetter,
    dead_letter_limit,
    one_per_source,
)
from spendsentry.policy import PolicySet

NOW = 1_793_610_000.0
SRC = SourcePosition("ai.usage", partition=1, offset=7)
SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "schemas" / "dead-letter.json").read_text()
)


def _valid(letter: dict[str, Any]) -> None:
    errors = sorted(e.message for e in Draft202012Validator(SCHEMA).iter_errors(letter))
    assert errors == []


def _event(i: int, **extra: Any) -> dict[str, Any]:
    return {"event_id": f"e{i}", "ts": NOW - 60, "use_case": "support", **extra}


def _big_invalid(size: int) -> bytes:
    """A JSON object of ``size`` bytes that is no event (no event_id, no use case)."""
    head = b'{"note":"'
    return head + b"x" * (size - len(head) - 2) + b'"}'


# -- one dead letter always fits a Kafka message ------------------------------------


@pytest.mark.parametrize("size", [800_000, 1_000_000, 3_000_000])
def test_the_dead_letter_of_a_big_record_fits_and_is_flagged(size: int) -> None:
    raw = _big_invalid(size)
    # The worker decodes with the default limits (1 MiB records); 3 MB is
    # rejected unparsed as oversized, the others parse and lack fields.
    [letter] = Decoder().decode(raw, SRC, now=NOW).rejected
    doc = letter.to_dict()
    encoded = orjson.dumps(doc)
    assert len(encoded) <= MAX_DEAD_LETTER_BYTES
    assert doc["original_truncated"] is True
    assert doc["original_size"] == size
    assert doc["original_sha256"] == hashlib.sha256(raw).hexdigest()
    head = base64.b64decode(doc["original_b64"])
    assert raw.startswith(head) and len(head) > MAX_DEAD_LETTER_BYTES // 2
    _valid(doc)


def test_a_small_dead_letter_keeps_the_whole_original_unflagged() -> None:
    raw = orjson.dumps(_event(1, input_tokens=-1))
    [letter] = Decoder().decode(raw, SRC, now=NOW).rejected
    doc = letter.to_dict()
    assert base64.b64decode(doc["original_b64"]) == raw
    assert not {"original_truncated", "original_size", "original_sha256"} & set(doc)
    _valid(doc)


def test_the_bound_follows_the_producer_max_request_size() -> None:
    raw = _big_invalid(300_000)
    [letter] = Decoder().decode(raw, SRC, now=NOW).rejected
    limit = dead_letter_limit(256 << 10)
    doc = letter.to_dict(limit)
    assert len(orjson.dumps(doc)) <= limit < 256 << 10
    assert doc["original_truncated"] is True
    with pytest.raises(ValueError, match="max_request_size"):
        dead_letter_limit(100_000)


def test_echoed_fields_are_cut() -> None:
    letter = DeadLetter(
        Decoder().decode(b"[]x", SRC).rejected[0].reason,
        "m" * 500_000,
        SRC,
        b"x",
        event_id="e" * 500_000,
        use_case="u" * 500_000,
    )
    doc = letter.to_dict()
    assert max(len(doc["message"]), len(doc["event_id"]), len(doc["use_case"])) == 1024
    _valid(doc)


# -- one message, one dead letter ----------------------------------------------------


def _junk_array(elements: int, valid: int) -> bytes:
    """``elements`` junk array elements with ``valid`` events spread among them."""
    step = elements // max(valid, 1)
    items: list[Any] = [1] * elements
    for k in range(valid):
        items[k * step] = _event(k)
    return orjson.dumps(items)


def test_an_array_of_100k_junk_elements_gives_one_dead_letter_and_keeps_the_valid() -> None:
    raw = _junk_array(100_000, valid=10)
    assert 190_000 < len(raw) < 220_000
    result = Decoder().decode(raw, SRC, now=NOW)
    assert [e.event_id for e in result.events] == [f"e{k}" for k in range(10)]
    [letter] = result.rejected
    assert letter.counts() == {"not_object": 99_990}
    doc = letter.to_dict()
    _valid(doc)
    assert base64.b64decode(doc["original_b64"]) == raw
    assert doc["rejected_elements"] == {"not_object": 99_990}
    assert [d["index"] for d in doc["listed_elements"]][:2] == [1, 2]
    written = len(orjson.dumps(doc)) + 1
    amplification = written / len(raw)
    assert amplification < 1.5
    print(
        f"\nFIGURES junk_array: input_bytes={len(raw)}, dead_letters=1, "
        f"dead_letter_bytes={written}, amplification={amplification:.2f}"
    )


def test_one_bad_element_still_gets_its_own_dead_letter() -> None:
    raw = orjson.dumps([_event(1), _event(2, kind="chat")])
    result = Decoder().decode(raw, SRC, now=NOW)
    [letter] = result.rejected
    assert (letter.reason.value, letter.index, letter.elements) == ("invalid_value", 1, None)
    assert orjson.loads(letter.original) == _event(2, kind="chat")


def test_mixed_reasons_are_counted_per_reason() -> None:
    raw = orjson.dumps([_event(1, kind="chat"), "x", _event(3, input_tokens=-5), 7, _event(5)])
    result = Decoder().decode(raw, SRC, now=NOW)
    assert [e.event_id for e in result.events] == ["e5"]
    [letter] = result.rejected
    assert letter.counts() == {"invalid_value": 1, "not_object": 2, "negative_value": 1}
    assert letter.reason.value == "not_object"
    _valid(letter.to_dict())


def test_late_events_of_one_message_are_written_as_one_dead_letter() -> None:
    engine = Engine(PolicySet.empty())
    decoder = Decoder()
    engine.process(decoder.decode(orjson.dumps(_event(0, ts=NOW)), SRC, now=NOW).events)
    engine.advance(NOW + 240)  # the watermark passed a minute: the engine's start is fixed
    raw = orjson.dumps([_event(i, ts=NOW - 3600) for i in range(1, 2001)])
    events = decoder.decode(raw, SRC, now=NOW).events
    late = engine.process(events, [SRC] * len(events)).rejected
    assert len(late) == 2000
    [letter] = one_per_source(late)
    assert letter.counts() == {"late": 2000}
    assert [e["event_id"] for e in orjson.loads(letter.original)] == [
        f"e{i}" for i in range(1, 2001)
    ]
    written = len(orjson.dumps(letter.to_dict())) + 1
    _valid(letter.to_dict())
    # Normalized events (every field) in base64: ~5x a compact input, once.
    assert written / len(raw) < 6
    # Letters of other records stay apart.
    other = SourcePosition("ai.usage", partition=1, offset=8)
    mixed = [*late[:2], DeadLetter(late[0].reason, "m", other, b"{}")]
    assert [d.source.offset for d in one_per_source(mixed)] == [7, 8]


# -- replay --deadletter-out applies the same bounds ---------------------------------


def test_replay_deadletter_out_is_bounded(tmp_path: Path) -> None:
    now = time.time()  # replay judges future timestamps by the clock
    big = _big_invalid(800_000)
    junk = _junk_array(20_000, valid=5).replace(str(NOW - 60).encode(), str(now - 600).encode())
    good = [orjson.dumps(_event(100 + i, ts=now - 600)) for i in range(20)]
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(b"\n".join([big, junk, *good]) + b"\n")
    dead = tmp_path / "dead.jsonl"
    summary = tmp_path / "summary.json"
    argv = ["replay", str(inp), "--deadletter-out", str(dead), "--summary-json", str(summary),
            "--quiet", "--policies", str(tmp_path)]  # fmt: skip
    assert cli.main(argv) == 0
    lines = dead.read_bytes().splitlines()
    assert len(lines) == 2
    assert all(len(line) <= MAX_DEAD_LETTER_BYTES for line in lines)
    first, second = (orjson.loads(line) for line in lines)
    assert first["original_truncated"] is True and first["original_size"] == len(big)
    assert second["rejected_elements"] == {"not_object": 19_995}
    report = orjson.loads(summary.read_bytes())
    # Summaries count rejected elements, not dead-letter records.
    assert report["rejected"] == {"missing_field": 1, "not_object": 19_995}
    assert report["accepted"] == 25


# -- item 6: identifiers are bounded ---------------------------------------------------

IDENTIFIERS = [
    "event_id", "use_case", "session_id", "request_id", "agent_id", "tool_name", "provider",
    "model", "requested_model", "content_hash", "environment", "team", "status",
]  # fmt: skip


@pytest.mark.parametrize("name", IDENTIFIERS)
def test_an_over_long_identifier_is_dead_lettered_as_oversized(name: str) -> None:
    limits = IngestLimits()
    limit = limits.max_use_case_chars if name == "use_case" else limits.max_identifier_chars
    for fast in (True, False):
        decoder = Decoder(fast_path=fast)
        ok = decoder.decode(orjson.dumps(_event(1, **{name: "é" * limit})), SRC, now=NOW)
        assert len(ok.events) == 1 and not ok.rejected
        raw = orjson.dumps(_event(1, **{name: "é" * (limit + 1)}))
        result = decoder.decode(raw, SRC, now=NOW)
        assert not result.events
        [letter] = result.rejected
        assert (letter.reason.value, letter.field) == ("oversized", name)
        _valid(letter.to_dict())


def test_an_over_long_outcome_name_is_oversized() -> None:
    doc = _event(1, type="outcome", outcome="o" * 257, session_id="s")
    [letter] = Decoder().decode(orjson.dumps(doc), SRC, now=NOW).rejected
    assert (letter.reason.value, letter.field) == ("oversized", "outcome")


def test_1000_sessions_of_300_kb_never_reach_engine_state() -> None:
    decoder = Decoder()
    rejected = 0
    for i in range(1000):
        raw = orjson.dumps(_event(i, session_id=f"{i}" + "s" * 300_000))
        result = decoder.decode(raw, SRC, now=NOW)
        assert not result.events
        rejected += len(result.rejected)
    assert rejected == 1000
