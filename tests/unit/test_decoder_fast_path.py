"""The decoder's msgspec fast path changes speed, never results.

Every record is decoded twice, by a default :class:`Decoder` (fast path first)
and by ``Decoder(fast_path=False)`` (the checking path, the reference): the
events, the dead letters (reason, message, field, original) and the skipped
count must be identical, for the bundled sample, for generated valid events and
for every kind of invalid record.
"""

from __future__ import annotations

import gzip
import itertools
import json
import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spendsentry.events import UsageEvent
from spendsentry.ingest import Decoder, IngestLimits, SourcePosition
from spendsentry.ingest.decoder import DecodeResult

NOW = 1_793_610_000.0  # 2026-11-02T09:00:00Z
SRC = SourcePosition("fast-path", partition=3, offset=41)
SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample-6h.jsonl.gz"
LIMITS = IngestLimits()
SMALL_LIMITS = IngestLimits(
    max_tokens=1000, max_cost_usd=1.0, max_future_s=5.0, max_use_case_chars=8
)
DECODERS = {
    limits: (Decoder(limits), Decoder(limits, fast_path=False)) for limits in (LIMITS, SMALL_LIMITS)
}


def _as_tuple(result: DecodeResult) -> tuple[Any, ...]:
    return (result.events, [letter.to_dict() for letter in result.rejected], result.skipped)


def both(raw: bytes, limits: IngestLimits = LIMITS, now: float = NOW) -> DecodeResult:
    """Decode ``raw`` both ways, assert identical results, return the fast one."""
    fast, slow = DECODERS[limits]
    got = fast.decode(raw, SRC, now=now)
    want = slow.decode(raw, SRC, now=now)
    assert _as_tuple(got) == _as_tuple(want), raw
    return got


def taken(raw: bytes, limits: IngestLimits = LIMITS) -> bool:
    """Whether the fast path alone decodes ``raw``."""
    return DECODERS[limits][0].decode_native(raw, now=NOW) is not None


# -- the bundled sample ---------------------------------------------------------


def test_the_bundled_sample_decodes_identically_and_on_the_fast_path():
    with gzip.open(SAMPLE, "rb") as lines:
        records = [line.rstrip(b"\n") for line in itertools.islice(lines, 20_000)]
    assert len(records) == 20_000
    # The sample was made 2026-11-02 06:00..12:00; decode it "then".
    now = 1_793_620_800.0
    usage = fast_taken = 0
    for raw in records:
        result = both(raw, now=now)
        assert len(result.events) == 1 and not result.rejected
        usage += type(result.events[0]) is UsageEvent
        fast_taken += DECODERS[LIMITS][0].decode_native(raw, now=now) is not None
    # Every usage event takes the fast path (or the identity check above would
    # prove nothing about it); outcomes (ai.outcomes traffic) take the other.
    assert usage > 15_000
    assert fast_taken == usage


# -- generated valid events -----------------------------------------------------

STR_FIELDS = [
    "provider", "model", "requested_model", "session_id", "request_id", "agent_id",
    "tool_name", "content_hash", "environment", "team", "status",
]  # fmt: skip
TOKEN_FIELDS = ["input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens"]

texts = st.text(min_size=1, max_size=12)
timestamps = st.one_of(
    # valid means on or after the floor (2000-01-01) and at most 300 s ahead
    st.floats(min_value=LIMITS.min_ts, max_value=NOW + 300),
    st.integers(min_value=int(LIMITS.min_ts), max_value=int(NOW) + 300),
    # epoch milliseconds, as integers and as floats
    st.integers(min_value=int(LIMITS.min_ts * 1000), max_value=int(NOW * 1000)),
    st.floats(min_value=LIMITS.min_ts * 1000, max_value=NOW * 1000),
    st.sampled_from(
        ["2026-11-02T09:00:00Z", "2026-11-02T10:00:00.250+01:00", "2026-11-02 08:59:59.999",
         " 2026-11-01T00:00:00-05:00 "]
    ),
)  # fmt: skip
tokens = (
    st.integers(min_value=0, max_value=10_000_000) | st.sampled_from([0, 10_000_000]) | st.none()
)
costs = st.floats(min_value=0.0, max_value=10_000.0) | st.integers(0, 10_000) | st.none()
optional_fields: dict[str, st.SearchStrategy[Any]] = {
    "type": st.sampled_from(["usage", None]),
    "kind": st.sampled_from(["llm_call", "tool_call", "retrieval", "embedding", None]),
    "fallback": st.booleans() | st.none(),
    "cost_usd": costs,
    "latency_ms": st.floats(min_value=0.0, max_value=1e300) | st.integers(0, 10**12) | st.none(),
    **{name: texts | st.text(max_size=3) | st.none() for name in STR_FIELDS},
    **{name: tokens for name in TOKEN_FIELDS},
}


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": draw(texts),
        "ts": draw(timestamps),
        "use_case": draw(st.text(min_size=1, max_size=200)),
    }
    names = draw(st.lists(st.sampled_from(sorted(optional_fields)), unique=True))
    for name in names:
        doc[name] = draw(optional_fields[name])
    return doc


def encodings(value: Any) -> list[bytes]:
    """orjson's compact UTF-8 and the stdlib's ASCII escapes with spaces."""
    return [orjson.dumps(value), json.dumps(value, indent=1).encode()]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(valid_events())
def test_generated_valid_events_decode_identically_on_the_fast_path(doc):
    for raw in encodings(doc):
        result = both(raw)
        assert len(result.events) == 1 and not result.rejected
        assert taken(raw)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(valid_events(), max_size=8))
def test_generated_batches_decode_identically_on_the_fast_path(docs):
    for raw in encodings(docs):
        result = both(raw)
        assert len(result.events) == len(docs) and not result.rejected
        assert taken(raw)


# -- invalid records keep the checking path's reason ----------------------------

#: Records the fast path must hand over, each paired with the reason it gets.
REJECTED = [
    (b"", "empty"),
    (b"   \n", "empty"),
    (b"\xef\xbb\xbf{}", "not_json"),
    (b'{"event_id":"e","ts":1.7e9,"use_case":"\\ud800"}', "not_json"),
    (b'{"event_id":"e","ts":1.7e9,"use_case":"\xff"}', "not_json"),
    (b'{"event_id":"e","ts":1.7e9,"use_case":"u"} x', "not_json"),
    (b'{"event_id":"e","ts":1.7e9,"use_case":"u","cost_usd":1e400}', "not_json"),
    (b'{"event_id":"e","ts":1.7e9,"use_case":"u","latency_ms":1e400}', "not_json"),
    (b"[1]", "not_object"),
    (b'{"event_id":"","ts":1.7e9,"use_case":"u"}', "missing_field"),
    (b'{"ts":1.7e9,"use_case":"u"}', "missing_field"),
    (b'{"event_id":"e","ts":null,"use_case":"u"}', "missing_field"),
    (b'{"event_id":"e","ts":true,"use_case":"u"}', "bad_timestamp"),
    (b'{"event_id":"e","ts":-1,"use_case":"u"}', "bad_timestamp"),
    (b'{"event_id":"e","ts":"noon","use_case":"u"}', "bad_timestamp"),
    (b'{"event_id":"e","ts":9e20,"use_case":"u"}', "future_timestamp"),
    (b'{"event_id":"e","ts":1793610301,"use_case":"u"}', "future_timestamp"),
    (b'{"event_id":"e","ts":1.7e9,"use_case":"u","type":"bill"}', "unknown_type"),
    (b'{"event_id":"e","ts":1.7e9,"use_case":"u","kind":"chat"}', "invalid_value"),
    (b'{"event_id":"e","ts":1.7e9,"use_case":"u","input_tokens":-1}', "negative_value"),
    (b'{"event_id":"e","ts":1.7e9,"use_case":"u","input_tokens":1.5}', "wrong_type"),
    (b'{"event_id":"e","ts":1.7e9,"use_case":"u","output_tokens":true}', "wrong_type"),
    (b'{"event_id":"e","ts":1.7e9,"use_case":"u","reasoning_tokens":10000001}', "absurd_value"),
    (b'{"event_id":"e","ts":1.7e9,"use_case":"u","cost_usd":10000.5}', "absurd_value"),
    (b'{"event_id":"e","ts":1.7e9,"use_case":"u","cost_usd":-0.1}', "negative_value"),
    (b'{"event_id":"e","ts":1.7e9,"use_case":"u","latency_ms":"fast"}', "wrong_type"),
    (b'{"event_id":"e","ts":1.7e9,"use_case":"u","model":7}', "wrong_type"),
    (b'{"event_id":"e","ts":1.7e9,"use_case":"u","fallback":"yes"}', "wrong_type"),
    (orjson.dumps({"event_id": "e", "ts": 1.7e9, "use_case": "u" * 201}), "oversized"),
    (orjson.dumps({"event_id": "e" * 257, "ts": 1.7e9, "use_case": "u"}), "oversized"),
    (orjson.dumps({"event_id": "e", "ts": 1.7e9, "use_case": "u", "session_id": "s" * 257}),
     "oversized"),
    # One bad element: the fast path cannot take the record, the good one is kept.
    (b'[{"event_id":"a","ts":1.7e9,"use_case":"u"},{"event_id":"b","ts":1.7e9,"use_case":""}]',
     "missing_field"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "reason"), REJECTED)
def test_invalid_records_get_the_checking_paths_reason(raw, reason):
    result = both(raw)
    assert [letter.reason.value for letter in result.rejected] == [reason]
    assert not taken(raw)


def test_what_the_fast_path_cannot_represent_is_decoded_the_checking_way():
    # Each of these is valid, and its event differs from a plain native one:
    # an unknown field (kept in extra, even one named like an internal
    # attribute), an outcome, integral floats for tokens, a duplicate key.
    cases = [
        {"event_id": "e", "ts": 1.7e9, "use_case": "u", "x_region": "eu"},
        {"event_id": "e", "ts": 1.7e9, "use_case": "u", "extra": {"a": 1}},
        {"event_id": "e", "ts": 1.7e9, "use_case": "u", "source_format": "otlp"},
        {"event_id": "e", "ts": 1.7e9, "use_case": "u", "cost_estimated": True},
        {"event_id": "e", "ts": 1.7e9, "use_case": "u", "type": "outcome", "outcome": "ok"},
        {"event_id": "e", "ts": 1.7e9, "use_case": "u", "input_tokens": 12.0},
    ]
    for doc in cases:
        raw = orjson.dumps(doc)
        result = both(raw)
        assert len(result.events) == 1 and not result.rejected
        assert not taken(raw), doc
    assert both(orjson.dumps(cases[1])).events[0].extra == {"extra": {"a": 1}}
    # Duplicate keys: both paths keep the last value.
    (event,) = both(b'{"event_id":"a","event_id":"b","ts":1.7e9,"use_case":"u"}').events
    assert event.event_id == "b"


def test_configured_limits_bind_the_fast_path_too():
    ok = {"event_id": "e", "ts": NOW, "use_case": "u", "input_tokens": 1000, "cost_usd": 1.0}
    assert taken(orjson.dumps(ok), SMALL_LIMITS)
    for change in (
        {"input_tokens": 1001},
        {"cost_usd": 1.01},
        {"use_case": "u" * 9},
        {"ts": NOW + 6},
    ):
        raw = orjson.dumps({**ok, **change})
        result = both(raw, SMALL_LIMITS)
        assert [letter.reason.value for letter in result.rejected] in (
            ["absurd_value"],
            ["future_timestamp"],
            ["oversized"],
        ), change
        assert not taken(raw, SMALL_LIMITS)
        # The default limits accept it (except the future timestamp, 6 s ahead: fine).
        assert both(raw).events


json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
FIELDS = [
    "type", "event_id", "ts", "use_case", "kind", "model", "requested_model", "fallback",
    "input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens", "cost_usd",
    "session_id", "content_hash", "latency_ms", "outcome", "status", "extra",
]  # fmt: skip
field_values = (
    json_scalars
    | st.sampled_from(["usage", "outcome", "llm_call", "embedding", "2026-11-02T09:00:00Z", ""])
    | st.integers(min_value=-5, max_value=20_000_000)
    | st.floats(min_value=1.7e9, max_value=1.8e12)
    | st.sampled_from([math.inf, -math.inf, 2**63, 2**64, -(2**63) - 1, 10**30, -0.0])
)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(valid_events(), st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=3))
def test_one_broken_field_decodes_identically(doc, changes):
    doc.update(changes)
    try:
        raws = encodings(doc) + encodings([doc, {"event_id": "ok", "ts": 1.7e9, "use_case": "u"}])
    except (TypeError, ValueError, OverflowError):
        # orjson refuses to encode some values (ints over 64 bits, inf): the
        # stdlib's encoding of them is still a record.
        raws = [json.dumps(doc).encode(), json.dumps([doc]).encode()]
    for raw in raws:
        both(raw)
        both(raw, SMALL_LIMITS)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_identically(raw):
    both(raw)
