"""OTLP into the real worker: protobuf on ai.usage, and the OTLP/HTTP receiver on its web port.

Spans are built with the OpenTelemetry SDK; on Kafka they are the bytes its OTLP
encoder writes (what the Collector's ``otlp_proto`` Kafka encoding carries), over
HTTP the real ``OTLPSpanExporter`` posts them. Both must show up in
``spendsentry_events_total`` for their use case; spans with no use case go to
``unattributed`` and are counted per source.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="dev extra")

from _worker_harness import (
    Record,
    WorkerProcess,
    metric_sum,
    produce,
    wait_for_metric,
    write_topics_file,
)
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spendsentry.kafka.embedded import EmbeddedBroker

TOKEN = "otlp-test-token"


def genai_spans(service: str, n: int, at: float) -> list[ReadableSpan]:
    """``n`` chat spans of ``service`` (``unknown_service`` names no use case)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("spendsentry.tests")
    for i in range(n):
        start = int((at + i) * 1e9)
        span = tracer.start_span(
            "chat gpt-4o-mini",
            start_time=start,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.usage.input_tokens": 1000 + i,
                "gen_ai.usage.output_tokens": 100,
            },
        )
        span.end(end_time=start + 500_000_000)
    spans = list(exporter.get_finished_spans())
    provider.shutdown()
    return spans


def post(port: int, body: bytes, content_type: str, **headers: str) -> tuple[int, bytes, str]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/traces",
        data=body,
        method="POST",
        headers={"Content-Type": content_type, **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


def test_otlp_protobuf_on_kafka_and_over_http_is_counted(
    broker: EmbeddedBroker, tmp_path: Path, unique_name: Callable[[str], str]
) -> None:
    names = write_topics_file(tmp_path / "topics.toml", unique_name("otlp"))
    worker = WorkerProcess(
        broker.bootstrap,
        tmp_path / "topics.toml",
        tmp_path / "state",
        unique_name("g"),
        env={"SPENDSENTRY_OTLP_TOKEN": TOKEN},
    )
    at = time.time() - 60
    try:
        worker.wait_for(lambda s: len(s["assignment"]) > 0, 90, "the group join")
        # 1. The Collector's otlp_proto on ai.usage: detected from the bytes.
        kafka = encode_spans(genai_spans("kafka-bot", 5, at)).SerializeToString()
        nameless = encode_spans(genai_spans("unknown_service", 2, at)).SerializeToString()
        asyncio_run(
            produce(
                broker.bootstrap,
                names,
                [Record("usage", b"kafka-bot", kafka), Record("usage", b"x", nameless)],
            )
        )
        # 2. The real OTLP/HTTP exporter against POST /v1/traces.
        endpoint = f"http://127.0.0.1:{worker.port}/v1/traces"
        exporter = OTLPSpanExporter(endpoint=endpoint, headers={"Authorization": f"Bearer {TOKEN}"})
        assert exporter.export(genai_spans("http-bot", 4, at)) == SpanExportResult.SUCCESS
        assert exporter.export(genai_spans("unknown_service", 3, at)) == SpanExportResult.SUCCESS
        wrong = OTLPSpanExporter(endpoint=endpoint, headers={"Authorization": "Bearer nope"})
        assert wrong.export(genai_spans("intruder", 1, at)) == SpanExportResult.FAILURE
        text = wait_for_metric(worker, "spendsentry_events_total", 5, use_case="kafka-bot")
        wait_for_metric(worker, "spendsentry_events_total", 4, use_case="http-bot")
        text = wait_for_metric(worker, "spendsentry_events_total", 5, use_case="unattributed")
        assert "intruder" not in text
        wait_for_metric(worker, "spendsentry_unattributed_events_total", 2, source="otlp")
        wait_for_metric(worker, "spendsentry_unattributed_events_total", 3, source="otlp_http")
    finally:
        worker.stop()


def asyncio_run(coro: Any) -> Any:
    import asyncio

    return asyncio.run(coro)


def test_receiver_answers_as_the_otlp_http_spec_says(
    broker: EmbeddedBroker, tmp_path: Path, unique_name: Callable[[str], str]
) -> None:
    write_topics_file(tmp_path / "topics.toml", unique_name("otlph"))
    worker = WorkerProcess(
        broker.bootstrap, tmp_path / "topics.toml", tmp_path / "state", unique_name("g")
    )
    at = time.time() - 60
    try:
        worker.wait_for(lambda s: len(s["assignment"]) > 0, 90, "the group join")
        request = encode_spans(genai_spans("json-bot", 3, at))
        # One span cannot be mapped (no span id): a partial success, the rest accepted.
        request.resource_spans[0].scope_spans[0].spans[1].span_id = b""
        raw = request.SerializeToString()
        status, body, ctype = post(worker.port, gzip.compress(raw), "application/x-protobuf",
                                   **{"Content-Encoding": "gzip"})  # fmt: skip
        assert (status, ctype) == (200, "application/x-protobuf")
        answer = ExportTraceServiceResponse.FromString(body)
        assert answer.partial_success.rejected_spans == 1
        assert "span 1: missing_field" in answer.partial_success.error_message
        # The same as OTLP JSON (protobuf JSON mapping) is accepted too.
        from google.protobuf.json_format import MessageToJson

        as_json = MessageToJson(ExportTraceServiceRequest.FromString(raw)).encode()
        status, body, ctype = post(worker.port, as_json, "application/json")
        assert (status, ctype) == (200, "application/json")
        assert json.loads(body)["partialSuccess"]["rejectedSpans"] == "1"
        # Undecodable bodies: 400; other content types: 415.
        assert post(worker.port, b"\x0a\xff\xff", "application/x-protobuf")[0] == 400
        assert post(worker.port, b"{not json", "application/json")[0] == 400
        assert post(worker.port, b'{"event_id": "e"}', "application/json")[0] == 400
        assert post(worker.port, b"{}", "text/plain")[0] == 415
        # Over aiohttp's own 1 MiB: instrumentations that capture prompts make big spans.
        [big] = genai_spans("big-bot", 1, at)
        big_request = encode_spans([big])
        big_request.resource_spans[0].scope_spans[0].spans[0].attributes.add(
            key="gen_ai.input.messages"
        ).value.string_value = "x" * (3 << 20)
        assert (
            post(worker.port, big_request.SerializeToString(), "application/x-protobuf")[0] == 200
        )
        # 2 spans from the protobuf post, and the same 2 again from JSON: the
        # engine drops the repeats by event id, so 2 count.
        wait_for_metric(worker, "spendsentry_events_total", 2, use_case="json-bot")
        wait_for_metric(worker, "spendsentry_events_total", 1, use_case="big-bot")
        text = wait_for_metric(worker, "spendsentry_duplicates_total", 2)
        assert metric_sum(text, "spendsentry_otlp_http_requests_total", status="200") == 3
        assert metric_sum(text, "spendsentry_otlp_http_requests_total", status="400") == 3
        assert metric_sum(text, "spendsentry_otlp_http_requests_total", status="415") == 1
        assert metric_sum(text, "spendsentry_otlp_http_spans_total", outcome="rejected") == 2
        assert metric_sum(text, "spendsentry_otlp_http_spans_total", outcome="published") == 5
    finally:
        worker.stop()


def test_worker_refuses_a_public_receiver_without_a_token(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "spendsentry", "worker", "--broker", "127.0.0.1:1",
         "--web-host", "0.0.0.0", "--web-port", "0", "--state-dir", str(tmp_path / "s")],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "SPENDSENTRY_OTLP_TOKEN" in run.stderr
    assert "SPENDSENTRY_OTLP_HTTP=off" in run.stderr
