"""OTLP protobuf trace requests: the wire reader against the protobuf runtime.

    python benchmarks/bench_otlp_proto.py [--spans 200] [--rounds 200]

Builds one ``ExportTraceServiceRequest`` of GenAI chat spans with the
OpenTelemetry SDK and its OTLP encoder (dev dependencies), then times, on the
same bytes: (1) ``spendsentry.ingest.otlp_proto.decode_traces`` (bytes to the
OTLP JSON dict the mapping reads), (2) ``opentelemetry-proto``'s generated
class (``FromString``, C) followed by ``MessageToDict``, the way the mapping
would need it, (3) ``FromString`` alone (the floor: parsing, no dict), and
(4) the whole decoder (bytes to validated usage events). Prints spans/s for
each; machines here are shared and noisy, compare the ratios.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spendsentry.ingest import Decoder, SourcePosition
from spendsentry.ingest.otlp_proto import decode_traces


def request_bytes(spans: int, t0: float) -> bytes:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("bench")
    for i in range(spans):
        start = int((t0 + i) * 1e9)
        span = tracer.start_span(
            "chat gpt-4o-mini",
            start_time=start,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                "gen_ai.usage.input_tokens": 1200 + i,
                "gen_ai.usage.output_tokens": 180,
                "gen_ai.usage.cache_read.input_tokens": 1000,
                "gen_ai.conversation.id": f"conv-{i % 17}",
                "gen_ai.response.id": f"chatcmpl-{i}",
                "http.status_code": 200,
            },
        )
        span.end(end_time=start + 800_000_000)
    raw: bytes = encode_spans(list(exporter.get_finished_spans())).SerializeToString()
    provider.shutdown()
    return raw


def rate(name: str, fn: Callable[[], Any], rounds: int, spans: int) -> float:
    fn()
    began = time.perf_counter()
    for _ in range(rounds):
        fn()
    per_s = rounds * spans / (time.perf_counter() - began)
    print(f"{name:<44} {per_s:>12,.0f} spans/s")
    return per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    t0 = time.time() - 3600
    raw = request_bytes(args.spans, t0)
    print(f"request: {args.spans} spans, {len(raw):,} bytes")
    decoder = Decoder()
    source = SourcePosition("bench", line=1)
    ours = rate("wire reader (decode_traces)", lambda: decode_traces(raw), args.rounds, args.spans)
    theirs = rate(
        "opentelemetry-proto FromString + MessageToDict",
        lambda: MessageToDict(ExportTraceServiceRequest.FromString(raw)),
        args.rounds,
        args.spans,
    )
    rate("opentelemetry-proto FromString alone", lambda: ExportTraceServiceRequest.FromString(raw),
         args.rounds, args.spans)  # fmt: skip
    rate("Decoder.decode (bytes -> usage events)", lambda: decoder.decode(raw, source),
         args.rounds, args.spans)  # fmt: skip
    print(f"wire reader / (FromString + MessageToDict): {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
