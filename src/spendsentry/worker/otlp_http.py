"""``POST /v1/traces`` on the worker's web port: OTLP/HTTP spans as usage events on ``ai.usage``.

Teams without Kafka in front of their telemetry point an OTLP exporter
(``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://worker:6066/v1/traces``) at the
worker. A request body is one ``ExportTraceServiceRequest``, as
``application/x-protobuf`` or ``application/json`` (gzip ``Content-Encoding``
is undone by aiohttp). Its GenAI spans are mapped as on ``ai.usage``
(:mod:`spendsentry.ingest.otlp`) and published there as native usage events,
one message per use case keyed by it, so they reach the partition that owns
the use case like any gateway's events.

The answer follows the OTLP/HTTP specification: 200 with an
``ExportTraceServiceResponse`` in the request's encoding, its
``partial_success`` counting the spans that could not be mapped (with the
first reasons); 400 for a body that does not decode; 415 for another content
type; 413 over 16 MiB (after gzip); 401 without the bearer token; 503 (with
``Retry-After``) before the producer is up or when publishing fails, which
exporters retry.

Authentication: ``Authorization: Bearer $SPENDSENTRY_OTLP_TOKEN``. Without a
token the receiver only listens on loopback; on any other address the worker
refuses to start (:func:`check_config`), unless ``SPENDSENTRY_OTLP_HTTP=off``
switches the receiver off.

The consume loop shares the producer and the event loop: decoding runs in a
worker thread, and only the request's own handler waits for the broker.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from spendsentry.errors import ConfigError
from spendsentry.ingest import Decoder, DecodeResult, SourcePosition
from spendsentry.ingest.attribution import SOURCE_FIELD
from spendsentry.ingest.otlp import is_otlp_traces
from spendsentry.ingest.otlp_proto import ProtoError, decode_traces, encode_status, encode_success
from spendsentry.worker.metrics import WorkerMetrics

__all__ = ["PATH", "OtlpReceiver", "check_config", "register_from_env"]

log = logging.getLogger(__name__)

PATH = "/v1/traces"
TOKEN_ENV = "SPENDSENTRY_OTLP_TOKEN"
SWITCH_ENV = "SPENDSENTRY_OTLP_HTTP"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
#: Events per published message (a message stays far below the producer's limit).
EVENTS_PER_MESSAGE = 500
#: The largest body taken, after gzip is undone (413 beyond). Instrumentations that
#: capture prompts as span attributes make big batches; aiohttp's own 1 MiB would
#: refuse the SDK's default 512-span batch of them.
MAX_BODY_BYTES = 16 << 20
#: Reasons quoted in a partial-success error message.
_QUOTED = 3
#: google.rpc.Code values of the Status bodies.
_INVALID_ARGUMENT, _UNAUTHENTICATED, _UNAVAILABLE = 3, 16, 14


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches.

    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("localhost")
    (True, True, True)
    >>> is_loopback("0.0.0.0"), is_loopback("10.1.2.3")
    (False, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to, assume it is reachable


def check_config(host: str, env: Mapping[str, str] | None = None) -> str | None:
    """The bearer token the receiver requires (None: none), or raise :class:`ConfigError`.

    >>> check_config("127.0.0.1", {}) is None
    True
    >>> check_config("0.0.0.0", {"SPENDSENTRY_OTLP_TOKEN": "s"})
    's'
    >>> check_config("0.0.0.0", {"SPENDSENTRY_OTLP_HTTP": "off"}) is None
    True
    """
    env = os.environ if env is None else env
    switch = env.get(SWITCH_ENV, "").strip().lower()
    if switch not in ("", "on", "off"):
        raise ConfigError(f"{SWITCH_ENV} must be on or off, got {switch!r}")
    if switch == "off":
        return None
    token = env.get(TOKEN_ENV, "").strip() or None
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"the web port listens on {host}, not loopback, and serves POST {PATH} (OTLP spans "
            f"to ai.usage): set {TOKEN_ENV} to the bearer token exporters must send, "
            f"or {SWITCH_ENV}=off to serve no receiver"
        )
    return token


def enabled(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return env.get(SWITCH_ENV, "").strip().lower() != "off"


class OtlpReceiver:
    """The ``/v1/traces`` handler.

    Parameters
    ----------
    producer : callable
        Returns the started producer (None before the worker has one).
    topic : str
        The usage topic.
    token : str or None
        Required bearer token (None: none required).
    decoder : Decoder, optional
        Maps spans (default: the environment's mapping).
    metrics : WorkerMetrics, optional
        Where spans and requests are counted (``spendsentry_otlp_http_*``).
    """

    def __init__(
        self,
        producer: Callable[[], Any],
        topic: str,
        token: str | None,
        decoder: Decoder | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.token = token
        self.decoder = decoder or Decoder()
        self.metrics = metrics

    def _count_spans(self, result: DecodeResult) -> None:
        if self.metrics is not None:
            spans = self.metrics.otlp_http_spans
            spans.labels("published").inc(len(result.events))
            spans.labels("rejected").inc(len(result.rejected))
            spans.labels("skipped").inc(result.skipped)

    async def handle(self, request: web.Request) -> web.Response:
        """Answer one export request (see the module docstring for the statuses)."""
        protobuf = request.content_type == PROTOBUF
        if not self._authorized(request):
            return self._status(401, _UNAUTHENTICATED, "missing or wrong bearer token", protobuf)
        if request.content_type not in (PROTOBUF, JSON):
            return self._status(
                415, _INVALID_ARGUMENT, f"content type must be {PROTOBUF} or {JSON}", protobuf
            )
        body = await _read_body(request)
        if body is None:
            return self._status(
                413, _INVALID_ARGUMENT, f"body over {MAX_BODY_BYTES} bytes", protobuf
            )
        # Decoding is CPU work: off the event loop the consume loop shares.
        outcome = await asyncio.to_thread(self._decode, body, protobuf)
        if isinstance(outcome, str):
            return self._status(400, _INVALID_ARGUMENT, outcome, protobuf)
        if outcome.events:
            producer = self.producer()
            if producer is None:
                return self._status(
                    503, _UNAVAILABLE, "the worker is starting", protobuf, retry=True
                )
            try:
                await self._publish(producer, outcome)
            except Exception as exc:  # any broker failure: the exporter retries
                log.warning("OTLP spans not published: %s", exc)
                return self._status(503, _UNAVAILABLE, "publishing failed", protobuf, retry=True)
        self._count_spans(outcome)
        if self.metrics is not None:
            self.metrics.otlp_http_requests.labels("200").inc()
        return self._success(outcome, protobuf)

    def _authorized(self, request: web.Request) -> bool:
        if self.token is None:
            return True
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            presented.strip().encode(), self.token.encode()
        )

    def _decode(self, body: bytes, protobuf: bool) -> DecodeResult | str:
        """The request's events and rejected spans, or why the body is not a request."""
        source = SourcePosition(PATH)
        if protobuf:
            try:
                doc = decode_traces(body) if body else {"resourceSpans": []}
            except ProtoError as exc:
                return f"not an OTLP ExportTraceServiceRequest: {exc}"
        else:
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                return f"not JSON: {exc}"
            if not isinstance(doc, dict) or not is_otlp_traces(doc):
                return "not an OTLP ExportTraceServiceRequest (no resourceSpans)"
        result = self.decoder.decode_otlp(doc, source)
        if result.rejected and any(letter.index is None for letter in result.rejected):
            # The request itself is malformed (not one span): nothing is trusted.
            return result.rejected[0].message
        return result

    async def _publish(self, producer: Any, result: DecodeResult) -> None:
        """Send the events, one message per use case (keyed by it); wait for the broker."""
        default = self.decoder.otlp.default_use_case
        by_use_case: dict[str, list[dict[str, Any]]] = {}
        for event in result.events:
            doc = event.to_dict()
            if event.use_case == default:
                doc[SOURCE_FIELD] = "otlp_http"  # counted per source by the worker
            by_use_case.setdefault(event.use_case, []).append(doc)
        sends = []
        for use_case, docs in by_use_case.items():
            for i in range(0, len(docs), EVENTS_PER_MESSAGE):
                value = orjson.dumps(docs[i : i + EVENTS_PER_MESSAGE])
                sends.append(await producer.send(self.topic, value=value, key=use_case.encode()))
        await asyncio.gather(*sends)

    @staticmethod
    def _success(result: DecodeResult, protobuf: bool) -> web.Response:
        rejected = len(result.rejected)
        message = ""
        if rejected:
            quoted = "; ".join(
                f"span {d.index}: {d.reason.value}: {d.message}" for d in result.rejected[:_QUOTED]
            )
            more = f" (and {rejected - _QUOTED} more)" if rejected > _QUOTED else ""
            message = f"{rejected} span(s) could not be mapped: {quoted}{more}"
        if protobuf:
            return web.Response(body=encode_success(rejected, message), content_type=PROTOBUF)
        doc: dict[str, Any] = {}
        if rejected:
            # proto3 JSON writes int64 as a string.
            doc["partialSuccess"] = {"rejectedSpans": str(rejected), "errorMessage": message}
        return web.Response(body=orjson.dumps(doc), content_type=JSON)

    def _status(
        self, status: int, code: int, message: str, protobuf: bool, *, retry: bool = False
    ) -> web.Response:
        """An error answer: a ``google.rpc.Status`` in the request's encoding."""
        if self.metrics is not None:
            self.metrics.otlp_http_requests.labels(str(status)).inc()
        headers = {"Retry-After": "5"} if retry else None
        if protobuf:
            return web.Response(
                status=status,
                body=encode_status(code, message),
                content_type=PROTOBUF,
                headers=headers,
            )
        return web.Response(
            status=status,
            body=orjson.dumps({"code": code, "message": message}),
            content_type=JSON,
            headers=headers,
        )


async def _read_body(request: web.Request) -> bytes | None:
    """The body (decompressed by aiohttp), or None when it is over ``MAX_BODY_BYTES``."""
    # request.read() would stop at aiohttp's client_max_size (1 MiB): read the
    # stream with this receiver's own bound instead, counted after gzip.
    chunks = []
    size = 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def register_from_env(
    web_app: Any,
    producer: Callable[[], Any],
    topic: str,
    host: str,
    env: Mapping[str, str] | None = None,
    *,
    metrics: WorkerMetrics | None = None,
) -> OtlpReceiver | None:
    """Add ``POST /v1/traces`` unless ``SPENDSENTRY_OTLP_HTTP=off``; raises
    :class:`ConfigError` on a non-loopback host without a token.

    ``web_app`` is an aiohttp ``Application`` or Faust's web driver (``app.web``).
    """
    token = check_config(host, env)
    if not enabled(env):
        return None
    web_app = getattr(web_app, "web_app", web_app)
    receiver = OtlpReceiver(producer, topic, token, metrics=metrics)
    web_app.router.add_post(PATH, receiver.handle)
    log.info("OTLP/HTTP traces on POST %s -> %s (token %s)", PATH, topic,
             "required" if token else "not required, loopback")  # fmt: skip
    return receiver
