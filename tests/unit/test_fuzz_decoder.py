"""Property-based: no input crashes the decoder, and nothing is lost.

Every record (or array element) comes out as exactly one event or one dead
letter with a known reason, whatever the bytes or the JSON.
"""

from __future__ import annotations

import json

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spendsentry.ingest import DeadLetter, Decoder, RejectReason, SourcePosition

NOW = 1_793_610_000.0
SRC = SourcePosition("fuzz", line=1)
DECODER = Decoder()
REASONS = {r.value for r in RejectReason}

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "type",
    "event_id",
    "ts",
    "use_case",
    "kind",
    "model",
    "requested_model",
    "fallback",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "cost_usd",
    "session_id",
    "content_hash",
    "latency_ms",
    "outcome",
    "success",
    "value",
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
    # A message with several bad elements is one summary dead letter: count
    # the elements it stands for, and there is never more than one per record.
    assert len(result.rejected) <= 1
    if expected_records is not None:
        assert len(result.events) + _rejected(result.rejected) == expected_records


def _rejected(letters: list[DeadLetter]) -> int:
    """Rejected records or elements the dead letters stand for."""
    return sum(sum(letter.counts().values()) for letter in letters)


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


# -- foreign shapes: OTLP JSON trace batches and LiteLLM payloads ---------------
#
# For these the unit of account is the span (OTLP) or the payload (LiteLLM):
# each one read is accepted, dead-lettered or skipped (not a GenAI call, or a
# LiteLLM call with no spend to watch). A batch whose structure is broken
# (resourceSpans not an array, a scopeSpans entry not an object...) is one dead
# letter as a whole: none of its spans can be trusted.

GEN_AI_KEYS = [
    "gen_ai.operation.name", "gen_ai.request.model", "gen_ai.response.model",
    "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.usage.prompt_tokens",
    "gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cost", "gen_ai.provider.name",
    "gen_ai.conversation.id", "gen_ai.agent.name", "gen_ai.tool.name", "gen_ai.response.id",
    "spendsentry.use_case", "service.name", "http.route",
]  # fmt: skip
OPERATIONS = ["chat", "embeddings", "execute_tool", "retrieval", "invoke_agent", "bogus"]
otlp_ints = (
    st.sampled_from([2**63, -(2**63) - 1, 10**30, 10**400])  # beyond int64, and beyond a float
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.integers(min_value=1_793_000_000 * 10**9, max_value=1_793_700_000 * 10**9)
    | st.integers(min_value=-5, max_value=20_000_000)
)
any_value = st.one_of(
    st.builds(lambda v: {"stringValue": v}, st.sampled_from(OPERATIONS) | st.text(max_size=12)),
    st.builds(lambda v: {"intValue": v}, otlp_ints.map(str) | otlp_ints | st.text(max_size=30)),
    st.builds(lambda v: {"doubleValue": v}, st.floats() | st.sampled_from(["NaN", "1e400", "x"])),
    st.builds(lambda v: {"boolValue": v}, json_scalars),
    st.builds(lambda v: {"arrayValue": v}, json_values),
    json_values,
)


def _mostly(valid: object, wild: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """``valid`` (a value or a strategy) three times in four, else ``wild``.

    Deep paths (a span that reaches the timestamp check) need every other field
    right, so the fields are mostly right and each is sometimes wrong.
    """
    good = valid if isinstance(valid, st.SearchStrategy) else st.just(valid)
    return st.integers(0, 3).flatmap(lambda i: wild if i == 0 else good)


def _typed_value(key: str) -> st.SearchStrategy[object]:
    """Mostly the AnyValue type ``key`` has in the GenAI conventions, sometimes anything."""
    if "tokens" in key:
        typed = st.builds(
            lambda v: {"intValue": v}, otlp_ints.map(str) | st.integers(-5, 20_000_000)
        )
    elif key == "gen_ai.usage.cost":
        typed = st.builds(lambda v: {"doubleValue": v}, st.floats(allow_nan=False))
    elif key == "gen_ai.operation.name":
        typed = st.builds(lambda v: {"stringValue": v}, st.sampled_from(OPERATIONS))
    else:
        typed = st.builds(lambda v: {"stringValue": v}, st.text(max_size=12))
    return _mostly(typed, any_value)


otlp_attributes = st.lists(
    st.sampled_from(GEN_AI_KEYS).flatmap(
        lambda key: st.fixed_dictionaries({"key": st.just(key), "value": _typed_value(key)})
    ),
    max_size=4,
)
span_ids = _mostly(
    "eee19b7ec3c1b174",
    st.sampled_from(["7uGbfsPBsXQ=", "0000000000000000", "", "zz"])
    | st.binary(min_size=8, max_size=8).map(bytes.hex)
    | json_scalars,
)
trace_ids = _mostly(
    "5b8efff798038103d269b633813fc60c",
    st.sampled_from(["00000000000000000000000000000000", "W47/95gDgQPSabYzgT/GDA=="])
    | st.binary(min_size=16, max_size=16).map(bytes.hex)
    | json_scalars,
)
span_times = _mostly("1793600000000000000", otlp_ints.map(str) | otlp_ints | json_scalars)
CHAT_SPAN_HEAD = [
    {"key": "spendsentry.use_case", "value": {"stringValue": "support-bot"}},
    {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
]
span_attributes = _mostly(CHAT_SPAN_HEAD, otlp_attributes).flatmap(
    lambda head: otlp_attributes.map(lambda tail: [*head, *tail])
)
spans = _mostly(
    st.fixed_dictionaries(
        {
            "traceId": trace_ids,
            "spanId": span_ids,
            "startTimeUnixNano": span_times,
            "attributes": span_attributes,
        },
        optional={
            "endTimeUnixNano": otlp_ints.map(str) | json_scalars,
            "status": st.fixed_dictionaries(
                {"code": st.sampled_from([0, 1, 2, "STATUS_CODE_ERROR"])}
            ),
        },
    ),
    json_values,  # a span that is not an object fails alone
)
resource = st.fixed_dictionaries({}, optional={"attributes": otlp_attributes})
scope_spans = st.fixed_dictionaries({}, optional={"spans": st.lists(spans, max_size=5)})
resource_spans = st.fixed_dictionaries(
    {}, optional={"resource": resource, "scopeSpans": st.lists(scope_spans, max_size=3)}
)
#: Batches whose structure is sound: every span must be accounted for.
otlp_batches = st.fixed_dictionaries({"resourceSpans": st.lists(resource_spans, max_size=3)})
#: Anything under resourceSpans, at any level.
otlp_wild = st.fixed_dictionaries(
    {"resourceSpans": json_values | st.lists(resource_spans | json_values, max_size=3)}
)


def _items(owner: object, name: str) -> list[object]:
    """``owner[name]`` as OTLP reads it: absent or null is empty; TypeError if unsound."""
    if not isinstance(owner, dict):
        raise TypeError(f"not an object: {owner!r}")
    value = owner.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise TypeError(f"{name} is not an array")
    return value


def _span_count(batch: dict[str, object]) -> int:
    """Spans in a structurally sound batch (what the decoder must account for)."""
    return sum(
        len(_items(ss, "spans"))
        for rs in _items(batch, "resourceSpans")
        for ss in _items(rs, "scopeSpans")
    )


def _accounted(raw: bytes) -> tuple[int, int, int]:
    """(accepted, rejected, skipped) for one record; checks every dead letter's reason."""
    result = DECODER.decode(raw, SRC, now=NOW)
    for letter in result.rejected:
        assert letter.reason.value in REASONS
        assert letter.message
        assert letter.to_dict()["original_b64"]
    assert result.skipped >= 0
    assert len(result.rejected) <= 1
    return len(result.events), _rejected(result.rejected), result.skipped


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(otlp_batches)
def test_otlp_batches_account_for_every_span(batch):
    raw = _encode(batch)
    accepted, rejected, skipped = _accounted(raw)
    # Infinity is not JSON: such a record is one not_json dead letter.
    assert accepted + rejected + skipped == (_span_count(batch) if _parses(raw) else 1)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(otlp_wild)
def test_otlp_wild_structures_are_a_span_count_or_one_dead_letter(batch):
    raw = _encode(batch)
    accepted, rejected, skipped = _accounted(raw)
    try:
        spans_read = _span_count(batch) if _parses(raw) else None
    except TypeError:
        spans_read = None  # not a sound structure: the batch is one dead letter
    if (accepted, rejected, skipped) != (0, 1, 0):
        assert spans_read is not None
        assert accepted + rejected + skipped == spans_read


LITELLM_CALL_TYPES = [
    "acompletion", "completion", "aembedding", "call_mcp_tool", "asearch", "arerank",
    "acreate_batch", "afile_list", "responses",
]  # fmt: skip
litellm_metadata = st.fixed_dictionaries(
    {},
    optional={
        "spendsentry.use_case": json_scalars,
        "user_api_key_team_alias": json_scalars,
        "usage_object": json_values,
        "mcp_tool_call_metadata": json_values,
        "requester_metadata": json_values,
        "spend_logs_metadata": json_values,
    },
)
litellm_payloads = st.fixed_dictionaries(
    {
        "call_type": st.sampled_from(LITELLM_CALL_TYPES) | json_scalars,
        "startTime": _mostly(1793600000.5, json_scalars),
    },
    optional={
        "id": _mostly("chatcmpl-1", st.text(max_size=10) | json_scalars),
        "litellm_call_id": json_scalars,
        "status": st.sampled_from(["success", "failure"]) | json_scalars,
        "model": st.sampled_from(["gpt-4o", "openai/gpt-4o-mini"]) | json_scalars,
        "model_group": st.sampled_from(["gpt-4o", "gpt-4o-2024-08-06"]) | json_scalars,
        "custom_llm_provider": json_scalars,
        "prompt_tokens": st.integers(min_value=-3, max_value=20_000_000) | json_scalars,
        "completion_tokens": st.integers(min_value=-3, max_value=20_000_000) | json_scalars,
        "response_cost": st.floats(min_value=-1, max_value=20_000) | json_scalars,
        "response_cost_failure_debug_info": json_values,
        "endTime": st.floats(min_value=1.79e9, max_value=1.7937e9) | json_scalars,
        "request_tags": st.lists(st.sampled_from(["support", "User-Agent: x"]) | json_scalars),
        "metadata": _mostly({}, litellm_metadata | json_values),
        "hidden_params": json_values,
        "session_id": json_scalars,
        "trace_id": json_scalars,
        "end_user": json_scalars,
    },
)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(litellm_payloads)
def test_litellm_payloads_are_accepted_rejected_or_skipped(payload):
    assert sum(_accounted(_encode(payload))) == 1


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(litellm_payloads | otlp_batches | event_like, max_size=8))
def test_mixed_arrays_account_for_every_element(docs):
    # An array element is judged alone: a native event or a payload counts one,
    # an OTLP batch counts its spans.
    raw = _encode(docs)
    expected = sum(_span_count(d) if "resourceSpans" in d else 1 for d in docs)
    assert sum(_accounted(raw)) == (expected if _parses(raw) else 1)
