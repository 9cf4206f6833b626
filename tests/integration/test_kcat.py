"""Any Kafka client: kcat (librdkafka, C) produces, the worker processes.

The JSON contract is the interface, not the Python SDK: a non-Python client
writes native events, a JSON array, an OTLP JSON trace batch and a LiteLLM
payload (one message per line, keyed by use case) to the embedded broker, and
the worker subprocess accepts them, recognising each message's shape without
configuration, and dead-letters the bad record.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# The worker test's subprocess harness (same directory, no package): start,
# poll /status, SIGTERM/SIGKILL the process group.
from _worker_harness import WorkerProcess, write_topics_file  # type: ignore[import-not-found]
from test_worker import read_docs  # type: ignore[import-not-found]

from spendsentry.broker import EmbeddedBroker

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("kcat") is None,
        reason="kcat is not installed (apt-get install -y kcat; .ci/run installs it)",
    ),
]

#: Debian bookworm's kcat links librdkafka 2.0.2, which cannot parse the embedded
#: broker's (Tansu's) ApiVersions v3 response ("Read underflow" in
#: APIVERSION_QUERY), and Tansu rejects the pre-0.10 protocol librdkafka falls
#: back to without it. Against a real Kafka broker kcat works as documented.
_LIBRDKAFKA_TANSU = "ApiVersionRequest failed"

#: A second non-Python client for that case: KafkaJS on Node.js (pure JavaScript).
_KAFKAJS_PRODUCER = r"""
const { Kafka, logLevel } = require('kafkajs');
const [broker, topic, file] = process.argv.slice(1);
const lines = require('fs').readFileSync(file, 'utf8').split('\n').filter(Boolean);
const kafka = new Kafka({ clientId: 'kafkajs-test', brokers: [broker], logLevel: logLevel.ERROR });
const producer = kafka.producer({ allowAutoTopicCreation: false });
(async () => {
  await producer.connect();
  const messages = lines.map((l) => {
    const tab = l.indexOf('\t');
    return { key: l.slice(0, tab), value: l.slice(tab + 1) };
  });
  await producer.send({ topic, messages });
  await producer.disconnect();
})().catch((e) => { console.error(e); process.exit(1); });
"""


def produce_lines(bootstrap: str, topic: str, path: Path) -> str:
    """Produce ``key<TAB>value`` lines with a non-Python client; return its name.

    kcat first; when it cannot talk to the embedded broker (see
    ``_LIBRDKAFKA_TANSU``), KafkaJS if ``node`` can load it (``NODE_PATH``).
    """
    # -l: one message per line of the file; -K: key and value split at the tab.
    kcat = subprocess.run(
        ["kcat", "-P", "-b", bootstrap, "-t", topic, "-K", "\t", "-l", str(path)],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    if kcat.returncode == 0:
        return "kcat"
    stderr = kcat.stderr.decode(errors="replace")
    assert _LIBRDKAFKA_TANSU in stderr, f"kcat failed: {stderr}"
    node = shutil.which("node")
    has_kafkajs = node is not None and (
        subprocess.run(
            [node, "-e", "require.resolve('kafkajs')"], capture_output=True, timeout=30
        ).returncode
        == 0
    )
    if not has_kafkajs:
        pytest.skip(
            "kcat (librdkafka 2.0.2) cannot parse the embedded broker's ApiVersions v3 "
            "response, and no fallback client: install Node.js and KafkaJS "
            "(npm install kafkajs; NODE_PATH=.../node_modules)"
        )
    assert node is not None
    done = subprocess.run(
        [node, "-e", _KAFKAJS_PRODUCER, bootstrap, topic, str(path)],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return "kafkajs"


def _attr(key: str, value: Any) -> dict[str, Any]:
    typed = {"intValue": str(value)} if isinstance(value, int) else {"stringValue": value}
    return {"key": key, "value": typed}


def messages(t0: float) -> list[tuple[str, dict[str, Any] | list[Any] | str]]:
    """(key, value) pairs: every shape the decoder recognises, and one bad record."""
    ns = int(t0 * 1e9)
    otlp = {
        "resourceSpans": [
            {
                "resource": {"attributes": [_attr("service.name", "claims_triage")]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": f"{n + 1:016x}",
                                "startTimeUnixNano": str(ns + n * 10**9),
                                "endTimeUnixNano": str(ns + n * 10**9 + 4 * 10**8),
                                "kind": 3,
                                "attributes": [
                                    _attr("gen_ai.operation.name", "chat"),
                                    _attr("gen_ai.request.model", "gpt-4o-mini"),
                                    _attr("gen_ai.usage.input_tokens", 700),
                                    _attr("gen_ai.usage.output_tokens", 90),
                                ],
                            }
                            for n in range(3)
                        ]
                        # A plain HTTP span in the same batch: skipped, not dead-lettered.
                        + [
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "00000000000000ff",
                                "startTimeUnixNano": str(ns),
                                "attributes": [_attr("http.request.method", "GET")],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    litellm = {
        "id": "chatcmpl-kcat-1",
        "trace_id": "t-1",
        "call_type": "acompletion",
        "status": "success",
        "model": "gpt-4o-mini",
        "custom_llm_provider": "openai",
        "prompt_tokens": 1000,
        "completion_tokens": 50,
        "response_cost": 0.0005,
        "startTime": t0 + 5,
        "endTime": t0 + 6,
        "request_tags": ["sales_email"],
        "metadata": {},
    }
    native = [
        {"event_id": f"k-{n}", "ts": t0 + n, "use_case": "support_chat", "input_tokens": 100}
        for n in range(4)
    ]
    return [
        ("support_chat", native[0]),
        ("support_chat", native[1]),
        ("support_chat", native[2:]),
        ("claims_triage", otlp),
        ("sales_email", litellm),
        ("ops", "{not json"),
    ]


@pytest.mark.timeout(120)
def test_kcat_produced_messages_are_processed_by_the_worker(
    broker: EmbeddedBroker,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    names = write_topics_file(tmp_path / "topics.toml", unique_name("kc"))
    (tmp_path / "state").mkdir()
    worker = WorkerProcess(
        broker.bootstrap, tmp_path / "topics.toml", tmp_path / "state", unique_name("g")
    )
    workers.append(worker)
    usage_partitions = f"{names['usage']}:"
    worker.wait_for(
        lambda s: sum(a.startswith(usage_partitions) for a in s["assignment"]) == 3,
        60,
        "the group join",
    )

    t0 = float(int(time.time()) - 600)
    batch = messages(t0)
    lines = [
        f"{key}\t{value if isinstance(value, str) else json.dumps(value)}" for key, value in batch
    ]
    payload = tmp_path / "messages.txt"
    payload.write_text("\n".join(lines) + "\n")
    client = produce_lines(broker.bootstrap, names["usage"], payload)

    status = worker.wait_for(lambda s: s["records"] == len(batch), 60, "the kcat records")
    # 4 native + 3 OTLP chat spans + 1 LiteLLM payload; the HTTP span is skipped.
    status = worker.wait_for(lambda s: s["accepted"] == 8, 10, "the accepted events")
    use_cases = status["use_cases"]
    assert set(use_cases) == {"support_chat", "claims_triage", "sales_email"}
    assert use_cases["support_chat"]["input_tokens"] == 400
    assert use_cases["claims_triage"]["input_tokens"] == 3 * 700
    assert use_cases["claims_triage"]["events_by_kind"] == {"llm_call": 3}
    assert use_cases["sales_email"]["cost_usd"] == pytest.approx(0.0005)

    dead = read_docs(broker.bootstrap, names["deadletter"], 2)
    assert [(d["reason"], d["original_text"]) for d in dead] == [("not_json", "{not json")]
    assert worker.stop() == 0, (client, worker.tail())
