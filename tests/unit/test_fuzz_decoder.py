"""Property-based: no input crashes the decoder, and nothing is lost.

Every record (or array element) comes out as exactly one event or one dead
letter with a known reason, whatever the bytes or the JSON.
"""

from __future__ import annotations

import json

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spendsentry.ingest import Decoder, RejectReason, SourcePosition

NOW = 1_793_610_000.0
SRC = SourcePosition("fuzz", line=1)
DECODER = Decoder()
REASONS = {r.value for r in RejectReason}

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
FIELDS = [
    "type", "event_id", "ts", "use_case", "kind", "model", "requested_model", "fallback",
    "input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens", "cost_usd",
    "session_id", "content_hash", "latency_ms", "outcome", "success", "value",
]
field_values = (
    json_scalars
    | st.sampled_from(["usage", "outcome", "llm_call", "embedding", "2026-11-02T09:00:00Z"])
    | st.integers(min_value=-5, max_value=20_000_000)
    | st.floats(min_value=1.7e9, max_value=1.8e12)
)
event_like = st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=len(FIELDS))


def _encode(value: object) -> bytes:
    # The stdlib encoder: it writes integers of any size, which orjson (and
    # hence the decoder) rejects; such a record must become one dead letter.
    return json.dumps(value).encode()


def _parses(raw: bytes) -> bool:
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return True


def _check(raw: bytes, expected_records: int | None = None) -> None:
    result = DECODER.decode(raw, SRC, now=NOW)
    if expected_records is not None and not _parses(raw):
        expected_records = 1
    for letter in result.rejected:
        assert letter.reason.value in REASONS
        assert letter.message
        assert letter.to_dict()["original_b64"] is not None
    if expected_records is not None:
        assert len(result.events) + len(result.rejected) == expected_records


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(raw):
    _check(raw)


@settings(max_examples=400)
@given(json_values)
def test_arbitrary_json_never_crashes(value):
    raw = _encode(value)
    if isinstance(value, list):
        _check(raw, expected_records=len(value))
    elif isinstance(value, dict) and "resourceSpans" not in value:
        _check(raw)
    else:
        _check(raw, expected_records=1)


@settings(max_examples=600)
@given(event_like)
def test_event_like_objects_are_accepted_or_rejected_with_a_reason(doc):
    _check(_encode(doc), expected_records=1)


@settings(max_examples=200)
@given(st.lists(event_like, max_size=20))
def test_batches_account_for_every_element(docs):
    _check(_encode(docs), expected_records=len(docs))
