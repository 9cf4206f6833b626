"""The OTLP/HTTP receiver's answers that need no broker, on a real aiohttp server.

Everything that publishes is tested against the real worker and broker in
tests/integration/test_otlp_worker.py; here the producer is absent (the
worker still starting) or the request is refused before it is needed.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from typing import Any

import orjson
import pytest
from aiohttp import web

from spendsentry.broker import free_port
from spendsentry.errors import ConfigError
from spendsentry.worker.otlp_http import PATH, register_from_env


async def _serve(env: dict[str, str], requests: list[tuple[bytes, dict[str, str]]]) -> list[Any]:
    app = web.Application()
    receiver = register_from_env(app, lambda: None, "ai.usage", "127.0.0.1", env)
    assert receiver is not None
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        return [await asyncio.to_thread(_post, port, body, headers) for body, headers in requests]
    finally:
        await runner.cleanup()


def _post(port: int, body: bytes, headers: dict[str, str]) -> tuple[int, str | None, bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{PATH}", data=body, method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.headers.get("Retry-After"), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Retry-After"), exc.read()


SPAN = orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{
    "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
    "startTimeUnixNano": str(int(time.time() - 60) * 10**9),
    "attributes": [{"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}}],
}]}]}]})  # fmt: skip
PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}


def test_token_required_and_starting_worker_asks_to_retry() -> None:
    env = {"SPENDSENTRY_OTLP_TOKEN": "s3cret"}
    good = {"Authorization": "Bearer s3cret"}
    answers = asyncio.run(
        _serve(
            env,
            [
                (b"", PROTOBUF),  # no token
                (b"", {**PROTOBUF, "Authorization": "Bearer wrong"}),
                (b"", {**PROTOBUF, "Authorization": "Basic s3cret"}),
                (b"", {**PROTOBUF, **good}),  # a valid empty request: nothing to publish
                (b'{"resourceSpans": []}', {**JSON, **good}),
                (SPAN, {**JSON, **good}),  # a span to publish, and no producer yet
            ],
        )
    )
    assert [a[0] for a in answers] == [401, 401, 401, 200, 200, 503]
    assert answers[3][2] == b""  # an empty ExportTraceServiceResponse: all taken
    assert answers[4][2] == b"{}"
    assert answers[5][1] == "5"  # Retry-After
    assert b"starting" in answers[5][2]


def test_over_the_body_bound_is_413(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("spendsentry.worker.otlp_http.MAX_BODY_BYTES", 1000)
    [(status, _, _)] = asyncio.run(_serve({}, [(b"\x0a" * 1001, PROTOBUF)]))
    assert status == 413


def test_public_host_without_token_is_refused_unless_switched_off() -> None:
    app = web.Application()
    with pytest.raises(ConfigError, match="SPENDSENTRY_OTLP_TOKEN"):
        register_from_env(app, lambda: None, "ai.usage", "0.0.0.0", {})
    assert (
        register_from_env(
            app, lambda: None, "ai.usage", "0.0.0.0", {"SPENDSENTRY_OTLP_HTTP": "off"}
        )
        is None
    )
    with pytest.raises(ConfigError, match="on or off"):
        register_from_env(
            app, lambda: None, "ai.usage", "127.0.0.1", {"SPENDSENTRY_OTLP_HTTP": "yes"}
        )
