"""OTLP JSON trace batches from the real OpenTelemetry SDK, encoded as the Collector does.

Spans are built with ``opentelemetry-sdk`` and turned into an
``ExportTraceServiceRequest`` by the OTLP exporter's own encoder; ``collector_json``
then writes it the way the Collector's Kafka exporter does with
``encoding: otlp_json`` (lowerCamelCase fields, int64 as strings, trace and span ids
as hex, enums as integers). The plain protobuf JSON mapping (``MessageToJson``:
base64 ids, enum names) must give the same events.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("opentelemetry.sdk", reason="opentelemetry-sdk is in the dev extra")

from google.protobuf.json_format import MessageToDict, MessageToJson
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, Status, StatusCode

from spendsentry.engine import Engine
from spendsentry.events import UsageEvent
from spendsentry.ingest import Decoder, SourcePosition
from spendsentry.ingest.otlp import OtlpMapping
from spendsentry.policy import PolicySet
from spendsentry.replay import Sinks, replay, summary

T0 = 1793610000  # 2026-11-02T09:00:00Z
NOW = T0 + 3600.0
SOURCE = SourcePosition("ai.usage", partition=0, offset=7)

_ENUMS = {"kind": "SPAN_KIND_", "code": "STATUS_CODE_"}
_SPAN_KINDS = {"UNSPECIFIED": 0, "INTERNAL": 1, "SERVER": 2, "CLIENT": 3}
_STATUS_CODES = {"UNSET": 0, "OK": 1, "ERROR": 2}


def collector_json(spans: list[ReadableSpan]) -> bytes:
    """``spans`` as the Collector's Kafka exporter writes them (``otlp_json``)."""
    doc = MessageToDict(encode_spans(spans))

    def fix(node: Any) -> Any:
        if isinstance(node, list):
            return [fix(x) for x in node]
        if not isinstance(node, dict):
            return node
        out = {}
        for key, value in node.items():
            if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                value = base64.b64decode(value).hex()  # OTLP JSON: ids are hex
            elif key == "kind" and isinstance(value, str):
                value = _SPAN_KINDS[value.removeprefix("SPAN_KIND_")]
            elif key == "code" and isinstance(value, str):
                value = _STATUS_CODES[value.removeprefix("STATUS_CODE_")]
            out[key] = fix(value)
        return out

    return json.dumps(fix(doc)).encode()


@pytest.fixture
def tracer() -> Iterator[tuple[Any, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("spendsentry.tests"), exporter
    provider.shutdown()


def _span(tracer: Any, name: str, at: float, attributes: dict[str, Any]) -> None:
    start = int(at * 1e9)
    span = tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes, start_time=start)
    span.end(end_time=start + 1_250_000_000)


def agent_run(tracer: Any) -> None:
    """One agent run: a wrapper span, a chat call, an embedding, a tool, a retrieval, HTTP."""
    common = {"gen_ai.conversation.id": "conv-1", "gen_ai.agent.name": "triage_agent"}
    _span(tracer, "invoke_agent triage_agent", T0, {"gen_ai.operation.name": "invoke_agent",
          "gen_ai.usage.input_tokens": 9999, **common})  # fmt: skip
    _span(
        tracer,
        "chat gpt-4o",
        T0 + 1,
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.usage.input_tokens": 1200,
            "gen_ai.usage.output_tokens": 180,
            "gen_ai.usage.cache_read.input_tokens": 1000,
            "gen_ai.usage.reasoning.output_tokens": 64,
            "gen_ai.response.id": "chatcmpl-9",
            "gen_ai.agent.id": "agent-7",
            **common,
        },
    )
    _span(tracer, "embeddings", T0 + 2, {"gen_ai.operation.name": "embeddings",
          "gen_ai.system": "openai", "gen_ai.request.model": "text-embedding-3-small",
          "gen_ai.usage.input_tokens": 300, "spendsentry.use_case": "kb_indexing"})  # fmt: skip
    _span(tracer, "execute_tool lookup_order", T0 + 3, {"gen_ai.operation.name": "execute_tool",
          "gen_ai.tool.name": "lookup_order", **common})  # fmt: skip
    _span(tracer, "retrieval", T0 + 4, {"gen_ai.operation.name": "retrieval", **common})
    _span(tracer, "GET /orders", T0 + 5, {"http.request.method": "GET"})


def decode(raw: bytes, decoder: Decoder | None = None) -> Any:
    return (decoder or Decoder()).decode(raw, SOURCE, now=NOW)


def by_kind(events: list[Any]) -> dict[str, UsageEvent]:
    return {e.kind: e for e in events}


def test_sdk_spans_map_to_usage_events(tracer: Any) -> None:
    tr, exporter = tracer
    agent_run(tr)
    spans = list(exporter.get_finished_spans())
    result = decode(collector_json(spans))
    assert result.rejected == []
    # The wrapper span and the HTTP span are skipped and counted, not dead-lettered.
    assert result.skipped == 2
    events = by_kind(result.events)
    assert set(events) == {"llm_call", "embedding", "tool_call", "retrieval"}
    assert {e.source_format for e in result.events} == {"otlp"}
    chat = events["llm_call"]
    chat_span = next(s for s in spans if s.name == "chat gpt-4o")
    ctx = chat_span.get_span_context()
    assert chat.event_id == f"{ctx.trace_id:032x}:{ctx.span_id:016x}"
    assert chat.ts == T0 + 1
    assert chat.latency_ms == pytest.approx(1250.0)
    assert (chat.use_case, chat.provider, chat.model) == (
        "triage_agent",  # gen_ai.agent.name: no spendsentry.use_case attribute on it
        "openai",
        "gpt-4o-mini-2024-07-18",
    )
    assert chat.requested_model == "gpt-4o" and chat.rerouted
    assert (chat.input_tokens, chat.output_tokens) == (1200, 180)
    assert (chat.cached_input_tokens, chat.reasoning_tokens) == (1000, 64)
    assert (chat.session_id, chat.agent_id, chat.request_id) == ("conv-1", "agent-7", "chatcmpl-9")
    embedding = events["embedding"]
    assert (embedding.use_case, embedding.provider, embedding.input_tokens) == (
        "kb_indexing",
        "openai",  # the older gen_ai.system
        300,
    )
    assert events["tool_call"].tool_name == "lookup_order"
    assert events["tool_call"].agent_id == "triage_agent"


def test_protobuf_json_mapping_gives_the_same_events(tracer: Any) -> None:
    """MessageToJson writes base64 ids and enum names; ids normalise to the same hex."""
    tr, exporter = tracer
    agent_run(tr)
    spans = list(exporter.get_finished_spans())
    plain = decode(MessageToJson(encode_spans(spans)).encode())
    collector = decode(collector_json(spans))
    assert [e.to_dict() for e in plain.events] == [e.to_dict() for e in collector.events]
    assert plain.skipped == collector.skipped == 2


def test_same_model_snapshot_is_not_a_reroute_and_errors_keep_status(tracer: Any) -> None:
    tr, exporter = tracer
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "claude-3-5-haiku",
        "gen_ai.response.model": "claude-3-5-haiku-20241022",
        "gen_ai.usage.input_tokens": 10,
    }
    start = int(T0 * 1e9)
    span = tr.start_span("chat", attributes=attrs, start_time=start)
    span.set_status(Status(StatusCode.ERROR))
    span.end(end_time=start + 1000)
    (event,) = decode(collector_json(list(exporter.get_finished_spans()))).events
    assert event.requested_model is None and not event.rerouted
    assert event.status == "error"


def test_use_case_attribute_precedence_and_configuration(tracer: Any) -> None:
    tr, exporter = tracer
    _span(tr, "chat a", T0, {"gen_ai.operation.name": "chat", "app.feature": "claims"})
    _span(tr, "chat b", T0, {"gen_ai.operation.name": "chat"})
    raw = collector_json(list(exporter.get_finished_spans()))
    default = [e.use_case for e in decode(raw).events]
    assert default == ["support-bot", "support-bot"]  # the resource's service.name
    custom = Decoder(otlp=OtlpMapping("app.feature"))
    assert [e.use_case for e in decode(raw, custom).events] == ["claims", "support-bot"]
    env = OtlpMapping.from_env({"SPENDSENTRY_OTLP_USE_CASE_ATTRIBUTE": "app.feature"})
    assert env == OtlpMapping("app.feature")


def _batch(*spans: dict[str, Any], resource: dict[str, Any] | None = None) -> bytes:
    res = resource or {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]}
    doc = {"resourceSpans": [{"resource": res, "scopeSpans": [{"spans": list(spans)}]}]}
    return orjson.dumps(doc)


def _raw_span(n: int, **changes: Any) -> dict[str, Any]:
    span: dict[str, Any] = {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": f"{n + 1:016x}",
        "startTimeUnixNano": str(T0 * 10**9),
        "endTimeUnixNano": str(T0 * 10**9 + 5 * 10**8),
        "attributes": [
            {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "40"}},
        ],
    }
    span.update(changes)
    return {k: v for k, v in span.items() if v is not None}


def _tokens(value: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
        {"key": "gen_ai.usage.input_tokens", "value": value},
    ]


@pytest.mark.parametrize(
    ("changes", "reason", "field"),
    [
        ({"spanId": None}, "missing_field", "spanId"),
        ({"traceId": None}, "missing_field", "traceId"),
        ({"traceId": "xyz"}, "invalid_value", "traceId"),
        ({"traceId": "0" * 32}, "invalid_value", "traceId"),
        ({"spanId": 12}, "wrong_type", "spanId"),
        ({"startTimeUnixNano": None}, "missing_field", "startTimeUnixNano"),
        ({"startTimeUnixNano": "soon"}, "wrong_type", "startTimeUnixNano"),
        ({"attributes": _tokens({"intValue": "12x"})}, "wrong_type", "gen_ai.usage.input_tokens"),
        ({"attributes": _tokens({"stringValue": "12"})}, "wrong_type", "gen_ai.usage.input_tokens"),
        ({"attributes": _tokens({"intValue": "-3"})}, "negative_value", "input_tokens"),
        ({"attributes": _tokens({"intValue": "99999999999"})}, "absurd_value", "input_tokens"),
        ({"attributes": {"gen_ai.operation.name": "chat"}}, "wrong_type", "attributes"),
        ({"attributes": [{"value": {}}]}, "wrong_type", "attributes"),
        ({"startTimeUnixNano": str((T0 + 86400) * 10**9)}, "future_timestamp", "ts"),
    ],
)
def test_malformed_span_is_dead_lettered_alone(
    changes: dict[str, Any], reason: str, field: str
) -> None:
    raw = _batch(_raw_span(0), _raw_span(1, **changes), _raw_span(2))
    result = decode(raw)
    assert [e.event_id.split(":")[1] for e in result.events] == [f"{1:016x}", f"{3:016x}"]
    (letter,) = result.rejected
    assert (letter.reason.value, letter.field, letter.index) == (reason, field, 1)
    assert letter.source == SOURCE
    # The dead letter keeps the offending span, not the whole batch.
    original = orjson.loads(letter.original)
    assert original == _raw_span(1, **changes)


@pytest.mark.parametrize(
    "doc",
    [
        {"resourceSpans": {"not": "a list"}},
        {"resourceSpans": [1]},
        {"resourceSpans": [{"scopeSpans": "x"}]},
        {"resourceSpans": [{"resource": [], "scopeSpans": []}]},
        {"resourceSpans": [{"resource": {"attributes": 5}, "scopeSpans": []}]},
    ],
)
def test_malformed_batch_is_one_dead_letter(doc: dict[str, Any]) -> None:
    raw = orjson.dumps(doc)
    result = decode(raw)
    assert result.events == []
    (letter,) = result.rejected
    assert letter.reason.value == "wrong_type"
    assert letter.original == raw


def test_span_without_any_use_case_goes_to_the_default_use_case() -> None:
    # No spend is dropped: no use case attribute, no agent, no service name (or
    # the SDK's unknown_service placeholder) -> the configured default.
    unknown = {"attributes": [{"key": "service.name",
                               "value": {"stringValue": "unknown_service:python"}}]}  # fmt: skip
    for resource in ({"attributes": []}, unknown):
        result = decode(_batch(_raw_span(0), resource=resource))
        assert result.rejected == []
        assert [e.use_case for e in result.events] == ["unattributed"]
    mapping = OtlpMapping.from_env({"SPENDSENTRY_DEFAULT_USE_CASE": "shared_pool"})
    result = decode(_batch(_raw_span(0), resource={"attributes": []}), Decoder(otlp=mapping))
    assert [e.use_case for e in result.events] == ["shared_pool"]


def test_native_events_still_take_the_native_path() -> None:
    raw = b'{"event_id":"e1","ts":1793610000,"use_case":"support","resourceSpans":[]}'
    (event,) = decode(raw).events
    assert event.source_format == "native"
    assert event.extra == {"resourceSpans": []}


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_keys = st.sampled_from(
    ["traceId", "spanId", "startTimeUnixNano", "attributes", "status", "endTimeUnixNano"]
)


@settings(max_examples=200, deadline=None)
@given(changes=st.dictionaries(_keys, _json, max_size=4), resource=_json)
def test_arbitrary_garbage_never_raises(changes: dict[str, Any], resource: Any) -> None:
    for doc in (
        {
            "resourceSpans": [
                {"resource": resource, "scopeSpans": [{"spans": [_raw_span(0, **changes)]}]}
            ]
        },
        {"resourceSpans": [{"scopeSpans": [{"spans": [changes]}]}]},
    ):
        result = decode(orjson.dumps(doc))
        assert len(result.events) + len(result.rejected) + result.skipped >= 1


def test_replay_counts_events_by_format(tmp_path: Path, tracer: Any) -> None:
    tr, exporter = tracer
    agent_run(tr)
    litellm_payload = {
        "id": "chatcmpl-1",
        "call_type": "acompletion",
        "startTime": T0 + 10.0,
        "model": "gpt-4o-mini",
        "prompt_tokens": 5,
        "completion_tokens": 2,
        "response_cost": 0.0001,
        "request_tags": ["support_chat"],
        "status": "success",
    }
    native = {"event_id": "n1", "ts": T0 + 11, "use_case": "support_chat", "input_tokens": 3}
    lines = [
        orjson.dumps(native),
        collector_json(list(exporter.get_finished_spans())),
        orjson.dumps(litellm_payload),
        orjson.dumps([native | {"event_id": "n2"}, litellm_payload | {"id": "chatcmpl-2"}]),
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    engine = Engine(PolicySet.empty())
    sinks = Sinks(None, None, str(tmp_path / "dead.jsonl"))
    try:
        result = replay([str(path)], engine, sinks)
    finally:
        sinks.close()
    doc = summary(result, engine)
    assert doc["formats"] == {"litellm": 2, "native": 2, "otlp": 4}
    assert doc["skipped"] == 2
    assert doc["accepted"] == 8 and doc["rejected"] == {}
    assert set(doc["use_cases"]) == {"support_chat", "triage_agent", "kb_indexing"}


def _span_with(*attributes: tuple[str, int]) -> bytes:
    attrs = [
        {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
        {"key": "gen_ai.request.model", "value": {"stringValue": "claude-sonnet-4-0"}},
    ] + [{"key": k, "value": {"intValue": str(v)}} for k, v in attributes]
    span = {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "startTimeUnixNano": str(int(T0 * 1e9)),
        "attributes": attrs,
    }
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "support-bot"}}]}
    return orjson.dumps(
        {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [span]}]}]}
    )


def test_cache_reads_are_cached_input_and_cache_writes_stay_input() -> None:
    result = decode(
        _span_with(
            ("gen_ai.usage.input_tokens", 3000),
            ("gen_ai.usage.cache_read.input_tokens", 2048),
            ("gen_ai.usage.cache_creation.input_tokens", 512),
        )
    )
    (event,) = result.events
    # The convention counts cache writes within input_tokens: priced as input.
    assert (event.input_tokens, event.cached_input_tokens) == (3000, 2048)


def test_the_older_cache_read_attribute_name_is_read_too() -> None:
    result = decode(
        _span_with(
            ("gen_ai.usage.input_tokens", 3000),
            ("gen_ai.usage.cache_read_input_tokens", 1024),
        )
    )
    (event,) = result.events
    assert event.cached_input_tokens == 1024
