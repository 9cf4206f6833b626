"""What /metrics explains about the input: formats, skipped elements, unpriced
models, dead letters by reason and use case (late ones too), and the log line
each dead-letter reason gets, without the record's content.

The worker runs as a subprocess on the embedded broker; the input is one
partition's worth of records of every kind a gateway sends (native events, a
LiteLLM payload, an OTLP batch), bad records carrying a secret, and an event an
hour older than the rest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from _worker_harness import (
    Record,
    WorkerProcess,
    metric_sum,
    produce,
    topic_specs,
    write_topics_file,
)

from spendsentry.broker import EmbeddedBroker, ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SECRET = "sk-live-0123456789abcdef"


def native(i: int, ts: float, **changes: Any) -> dict[str, Any]:
    doc = {
        "event_id": f"n{i}", "ts": ts, "use_case": "support_chat", "model": "gpt-4o",
        "input_tokens": 900, "output_tokens": 120, "cost_usd": 0.004,
    }  # fmt: skip
    return {**doc, **changes}


def litellm(call_id: str, at: float, **changes: Any) -> dict[str, Any]:
    doc = {
        "id": call_id, "litellm_call_id": call_id, "call_type": "acompletion",
        "status": "success", "custom_llm_provider": "openai", "startTime": at,
        "endTime": at + 0.2, "model": "gpt-4o-mini", "prompt_tokens": 1200,
        "completion_tokens": 20, "total_tokens": 1220, "response_cost": 1.35e-05,
        "request_tags": ["support_chat"], "metadata": {},
    }  # fmt: skip
    return {**doc, **changes}


def otlp(at: float) -> dict[str, Any]:
    def span(n: int, attributes: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "traceId": "5b8efff798038103d269b633813fc60c", "spanId": f"{n:016x}",
            "startTimeUnixNano": str(int(at * 1e9)), "endTimeUnixNano": str(int(at * 1e9) + 10**8),
            "attributes": attributes,
        }  # fmt: skip

    genai = [
        {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
        {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "40"}},
        {"key": "spendsentry.use_case", "value": {"stringValue": "support_chat"}},
    ]
    http = [{"key": "http.method", "value": {"stringValue": "GET"}}]
    res = {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]}
    spans = [span(1, genai), span(2, http)]
    return {"resourceSpans": [{"resource": res, "scopeSpans": [{"spans": spans}]}]}


def test_metrics_explain_formats_skips_unpriced_and_dead_letters(
    broker: EmbeddedBroker,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    now = time.time()
    start = now - 600
    key = b"support_chat"  # one partition: the late event comes after the rest
    natives = [native(i, start + 10 * i) for i in range(50)]
    sent = [
        Record("usage", key, orjson.dumps(natives)),
        Record(
            "usage",
            key,
            orjson.dumps(native(90, start + 505, model="acme-mystery-1", cost_usd=None)),
        ),
        Record("usage", key, orjson.dumps(litellm("call-1", start + 510))),
        Record(
            "usage",
            key,
            orjson.dumps(
                litellm(
                    "call-2",
                    start + 511,
                    call_type="afile_list",
                    prompt_tokens=0,
                    completion_tokens=0,
                    response_cost=0.0,
                )
            ),
        ),
        Record("usage", key, orjson.dumps(otlp(start + 512))),
        Record("usage", key, orjson.dumps({"use_case": "support_chat", "api_key": SECRET})),
        Record(
            "usage",
            key,
            orjson.dumps(
                {"use_case": "support_chat", "api_key": SECRET, "event_id": "x", "ts": "yesterday"}
            ),
        ),
        Record("usage", key, b"not json " + SECRET.encode()),
    ]
    # Late only once the engine has closed minutes: in the first batch an older
    # minute still moves the engine's start back.
    late = Record("usage", key, orjson.dumps(native(99, start - 3600)))
    names = write_topics_file(tmp_path / "topics.toml", unique_name("explain"))
    asyncio.run(ensure_topics(broker.bootstrap, topic_specs(names)))
    asyncio.run(produce(broker.bootstrap, names, sent))
    worker = WorkerProcess(
        broker.bootstrap, tmp_path / "topics.toml", tmp_path / "state", unique_name("g")
    )
    workers.append(worker)
    worker.wait_for(
        lambda s: s["records"] == len(sent) and (s["closed_until_ts"] or 0) > start + 60,
        120,
        "every record read and a minute closed",
    )
    asyncio.run(produce(broker.bootstrap, names, [late]))
    worker.wait_for(lambda s: s["records"] == len(sent) + 1, 60, "the late record read")
    text = ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = worker.get("/metrics").decode()
        if metric_sum(text, "spendsentry_dead_letters_total", reason="late") >= 1:
            break
        time.sleep(0.3)

    def m(sample: str, **labels: str) -> float:
        return metric_sum(text, sample, **labels)

    assert m("spendsentry_input_events_total", format="native") == len(natives) + 2
    assert m("spendsentry_input_events_total", format="litellm") == 1
    assert m("spendsentry_input_events_total", format="otlp") == 1
    assert m("spendsentry_input_skipped_total") == 2  # the file call and the HTTP span
    assert m("spendsentry_unpriced_events_total", model="acme-mystery-1") == 1
    by_case = {"use_case": "support_chat"}
    assert m("spendsentry_dead_letters_total", reason="late", **by_case) == 1
    assert m("spendsentry_dead_letters_total", reason="not_json", use_case="unknown") == 1
    assert m("spendsentry_dead_letters_total", **by_case) == 3
    assert m("spendsentry_late_events_total", **by_case) == 1

    log = worker.output().decode(errors="replace")
    assert f"dead letter not_json (use case ?, field -) at {names['usage']}" in log
    assert "dead letter late (use case support_chat" in log
    assert SECRET not in log
