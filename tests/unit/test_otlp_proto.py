"""OTLP protobuf trace requests, as the SDK's own encoder writes them, read by the wire reader.

The reference is ``opentelemetry-proto``'s generated classes (a dev dependency
through the exporter): whatever the SDK encodes, ``decode_traces`` must read as
the protobuf runtime does, and the decoder must give the same events as for the
Collector's ``otlp_json`` of the same spans.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("opentelemetry.sdk", reason="opentelemetry-sdk is in the dev extra")

from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_otlp import NOW, SOURCE, agent_run, collector_json, tracer  # noqa: F401

from spendsentry.ingest import Decoder
from spendsentry.ingest.otlp_proto import ProtoError, decode_traces


def decode(raw: bytes) -> Any:
    return Decoder().decode(raw, SOURCE, now=NOW)


def as_dicts(events: list[Any]) -> list[dict[str, Any]]:
    return sorted((e.to_dict() for e in events), key=lambda d: d["event_id"])


def test_sdk_protobuf_gives_the_events_of_its_json(tracer: Any) -> None:  # noqa: F811
    tr, exporter = tracer
    agent_run(tr)
    spans = list(exporter.get_finished_spans())
    from_proto = decode(encode_spans(spans).SerializeToString())
    from_json = decode(collector_json(spans))
    assert from_proto.rejected == []
    assert len(from_proto.events) == 4
    assert as_dicts(from_proto.events) == as_dicts(from_json.events)
    assert from_proto.skipped == from_json.skipped == 2
    assert {e.source_format for e in from_proto.events} == {"otlp"}


def _reference(raw: bytes) -> dict[str, Any]:
    """What the protobuf runtime reads, in the shape ``decode_traces`` promises."""
    doc = MessageToDict(ExportTraceServiceRequest.FromString(raw))

    def fix(node: Any, key: str = "") -> Any:
        if isinstance(node, list):
            return [fix(x, key) for x in node]
        if not isinstance(node, dict):
            if key in ("traceId", "spanId", "parentSpanId"):
                return base64.b64decode(node).hex()
            if key in ("intValue", "startTimeUnixNano", "endTimeUnixNano"):
                return int(node)
            if key == "doubleValue":
                return float(node)
            return node
        out = {k: fix(v, k) for k, v in node.items()}
        if key == "spans" or "spanId" in out:
            out.setdefault("attributes", [])
            out.pop("kind", None)  # an enum name in MessageToDict, an int here
            out.pop("droppedAttributesCount", None)
            out.pop("events", None)
            out.pop("links", None)
            out.pop("traceState", None)
            out.pop("flags", None)
            out.get("status", {}).pop("code", None)
        if key == "arrayValue" or key == "kvlistValue":
            out.setdefault("values", [])
        # MessageToDict leaves out empty keys and unset values; the reader keeps them.
        pairs = out.get("values", []) if key == "kvlistValue" else out.get("attributes", [])
        for pair in pairs:
            pair.setdefault("key", "")
            pair.setdefault("value", {})
        return out

    return fix(doc)


any_scalar = st.one_of(
    st.builds(lambda s: AnyValue(string_value=s), st.text(max_size=20)),
    st.builds(lambda b: AnyValue(bool_value=b), st.booleans()),
    st.builds(lambda i: AnyValue(int_value=i), st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda d: AnyValue(double_value=d), st.floats(allow_nan=False, allow_infinity=True)),
    st.builds(lambda b: AnyValue(bytes_value=b), st.binary(max_size=12)),
)


def _array(values: list[AnyValue]) -> AnyValue:
    v = AnyValue()
    v.array_value.values.extend(values)
    return v


def _kvlist(pairs: list[tuple[str, AnyValue]]) -> AnyValue:
    v = AnyValue()
    v.kvlist_value.values.extend(KeyValue(key=k, value=x) for k, x in pairs)
    return v


any_value = st.one_of(
    any_scalar,
    st.lists(any_scalar, max_size=3).map(_array),
    st.lists(st.tuples(st.text(max_size=5), any_scalar), max_size=3).map(_kvlist),
)


@settings(max_examples=150, deadline=None)
@given(
    attrs=st.lists(st.tuples(st.text(min_size=1, max_size=12), any_value), max_size=6),
    start=st.integers(0, 2**64 - 1),
    kind=st.integers(0, 5),
    code=st.integers(0, 2),
    name=st.text(max_size=10),
)
def test_wire_reader_reads_what_the_protobuf_runtime_reads(
    attrs: list[tuple[str, AnyValue]], start: int, kind: int, code: int, name: str
) -> None:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name", value=AnyValue(string_value="svc"))
    span = rs.scope_spans.add().spans.add()
    span.trace_id = bytes(range(1, 17))
    span.span_id = bytes(range(1, 9))
    span.parent_span_id = bytes(range(9, 17))
    span.name = name
    span.kind = kind  # type: ignore[assignment]
    span.start_time_unix_nano = start
    span.end_time_unix_nano = start // 2
    span.status.code = code  # type: ignore[assignment]
    span.status.message = "m"
    span.events.add(name="ignored", time_unix_nano=5)
    for key, value in attrs:
        span.attributes.add(key=key, value=value)
    raw = request.SerializeToString()
    got = decode_traces(raw)
    s = got["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert s.get("kind", 0) == kind
    assert s["status"].get("code", 0) == code
    assert s.get("startTimeUnixNano", 0) == start
    reference = _reference(raw)
    for each in (got, reference):
        sp = each["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
        for k in ("kind", "name"):
            sp.pop(k, None)
        sp["status"].pop("code", None)
        sp.pop("endTimeUnixNano", None)
    assert got == reference


def test_otlp_metrics_and_logs_are_named_in_the_dead_letter() -> None:
    metrics = ExportMetricsServiceRequest()
    metric = metrics.resource_metrics.add().scope_metrics.add().metrics.add()
    metric.name = "gen_ai.client.token.usage"
    metric.sum.data_points.add(as_int=5, time_unix_nano=1)
    logs = ExportLogsServiceRequest()
    logs.resource_logs.add().scope_logs.add().log_records.add(time_unix_nano=7, body=AnyValue())
    for raw, what in ((metrics.SerializeToString(), "metrics"), (logs.SerializeToString(), "logs")):
        result = decode(raw)
        assert result.events == []
        [letter] = result.rejected
        assert letter.reason.value == "unsupported_protobuf"
        assert f"OTLP {what} export request" in letter.message
        assert letter.original == raw


def test_other_protobuf_says_it_is_protobuf_and_binary_garbage_stays_not_json() -> None:
    other = Span(name="x", kind=3).SerializeToString()  # a bare Span: fields 5, 6
    [letter] = decode(other).rejected
    assert letter.reason.value == "unsupported_protobuf"
    assert "protobuf message (fields 5:bytes, 6:varint)" in letter.message
    assert "surrogates" not in letter.message
    [letter] = decode(b"\xff\xfe\x00garbage").rejected
    assert letter.reason.value == "not_json"


def test_truncated_trace_request_is_one_dead_letter(tracer: Any) -> None:  # noqa: F811
    tr, exporter = tracer
    agent_run(tr)
    raw = encode_spans(list(exporter.get_finished_spans())).SerializeToString()
    with pytest.raises(ProtoError):
        decode_traces(raw[:-3])
    result = decode(raw[:-3])
    assert result.events == []
    assert len(result.rejected) == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    record = b"\x0a" + raw
    result = decode(record)
    # One dead letter at most, holding the record as it came.
    assert [d.original for d in result.rejected] in ([], [record])


def test_openinference_and_current_genai_attributes(tracer: Any) -> None:  # noqa: F811
    tr, exporter = tracer
    at = NOW - 600
    spans = {
        "oi-llm": {"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o-mini",
                   "llm.provider": "openai", "llm.token_count.prompt": 900,
                   "llm.token_count.completion": 40,
                   "llm.token_count.prompt_details.cache_read": 600,
                   "llm.token_count.completion_details.reasoning": 12,
                   "session.id": "sess-9", "llm.cost.total": 0.002},
        "oi-agent": {"openinference.span.kind": "AGENT", "llm.token_count.prompt": 5000},
        "oi-tool": {"openinference.span.kind": "TOOL", "tool.name": "search_kb"},
        "semconv-cost": {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                         "gen_ai.usage.input_tokens": 100, "gen_ai.usage.cost.amount": 0.5,
                         "gen_ai.usage.cost.currency": "USD",
                         "gen_ai.usage.cost.source": "provider"},
        "eur-cost": {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                     "gen_ai.usage.input_tokens": 100, "gen_ai.usage.cost.amount": 0.5,
                     "gen_ai.usage.cost.currency": "EUR"},
    }  # fmt: skip
    for i, (name, attrs) in enumerate(spans.items()):
        start = int((at + i) * 1e9)
        span = tr.start_span(
            name, start_time=start, attributes={"spendsentry.use_case": name, **attrs}
        )
        span.end(end_time=start + 10**9)
    finished = list(exporter.get_finished_spans())
    result = decode(encode_spans(finished).SerializeToString())
    assert result.rejected == []
    assert result.skipped == 1  # the AGENT span wraps its children
    events = {e.use_case: e for e in result.events}
    assert set(events) == {"oi-llm", "oi-tool", "semconv-cost", "eur-cost"}
    llm = events["oi-llm"]
    assert (llm.kind, llm.model, llm.provider, llm.session_id) == (
        "llm_call", "gpt-4o-mini", "openai", "sess-9",
    )  # fmt: skip
    assert (llm.input_tokens, llm.output_tokens, llm.cached_input_tokens, llm.reasoning_tokens) == (
        900, 40, 600, 12,
    )  # fmt: skip
    assert llm.cost_usd == 0.002
    assert (events["oi-tool"].kind, events["oi-tool"].tool_name) == ("tool_call", "search_kb")
    assert events["semconv-cost"].cost_usd == 0.5  # the provider's cost wins over the book
    assert events["eur-cost"].cost_usd is None  # not USD: priced from the book instead


def test_calls_under_an_agent_span_inherit_its_agent_and_conversation() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "unknown_service:python"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tr = provider.get_tracer("t")
    start = int((NOW - 600) * 1e9)
    agent = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "refund_agent",
             "gen_ai.agent.id": "agent-42", "gen_ai.conversation.id": "conv-7"}  # fmt: skip
    with tr.start_as_current_span("invoke_agent refund_agent", start_time=start, attributes=agent):
        chat = tr.start_span("chat", start_time=start + 1, attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 10})  # fmt: skip
        chat.end(end_time=start + 2)
    provider.shutdown()
    finished = list(exporter.get_finished_spans())
    for raw in (encode_spans(finished).SerializeToString(), collector_json(finished)):
        result = decode(raw)
        [event] = result.events
        assert (event.use_case, event.agent_id, event.session_id) == (
            "refund_agent", "agent-42", "conv-7",
        )  # fmt: skip
        assert result.skipped == 1
