"""No secret leaks: a full worker run at debug level, grepped for every secret.

``spendsentry worker --log-level debug --notify`` runs as a subprocess on the
embedded broker with a Slack bot token, a Slack signing secret, a throttle
signing key and a Kafka SASL password set to fresh random values (the security
protocol stays PLAINTEXT so it can connect to the embedded broker). A labelled
scenario makes it alert, sign and publish throttle commands, and post to a
local Slack stand-in; a signed and a forged Slack click reach its interaction
endpoint. Then every place a secret could surface is searched: stdout and
stderr, every record on the alerts, throttle, dead-letter and control topics,
``/status``, ``/metrics``, the status page and the bodies Slack received.

The test also checks that each secret was really in use (the token authorised
the Slack calls, the key verifies the commands, the signing secret accepted the
signed click), so "not found" cannot mean "never read".
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from _worker_harness import (
    PARTITIONS,
    Record,
    WorkerProcess,
    as_records,
    caught_up,
    produce,
    read_all,
    scenario_events,
    write_topics_file,
)
from aiohttp import web

from spendsentry.actions import ThrottleKeys
from spendsentry.broker import EmbeddedBroker, free_port
from spendsentry.slack.blocks import button_value
from spendsentry.slack.interactions import sign
from spendsentry.timeutil import parse_ts

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@dataclass
class SlackStandIn:
    """Slack's Web API on 127.0.0.1 (chat.postMessage / chat.update), in a thread."""

    token: str
    port: int = field(default_factory=free_port)
    bodies: list[bytes] = field(default_factory=list)
    authorised: int = 0
    _ts: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    async def _api(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.bodies.append(body)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        self.authorised += 1
        doc = json.loads(body)
        self._ts += 1
        ts = doc.get("ts") or f"1700.{self._ts:04d}"
        return web.json_response({"ok": True, "channel": "C0PS", "ts": ts})

    def start(self) -> None:
        ready = threading.Event()

        async def serve() -> None:
            app = web.Application()
            app.router.add_post("/api/{method}", self._api)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
            ready.set()

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            loop.run_until_complete(serve())
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup() if self._runner else asyncio.sleep(0))
            loop.close()

        self._thread = threading.Thread(target=run, name="slack-stand-in", daemon=True)
        self._thread.start()
        assert ready.wait(10), "the Slack stand-in did not start"

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    stand_in = SlackStandIn(token="xoxb-" + secrets.token_hex(16))
    stand_in.start()
    yield stand_in
    stand_in.stop()


def _post_click(port: int, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/slack/interactions", data=body, headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_no_secret_in_logs_records_status_or_metrics(
    broker: EmbeddedBroker,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    slack: SlackStandIn,
) -> None:
    found = {
        "SLACK_BOT_TOKEN": slack.token,
        "SLACK_SIGNING_SECRET": secrets.token_hex(16),
        "SPENDSENTRY_THROTTLE_KEY": "tk-" + secrets.token_urlsafe(24),
        "SPENDSENTRY_KAFKA_SASL_PASSWORD": "pw-" + secrets.token_urlsafe(18),
    }
    env = {
        **found,
        "SPENDSENTRY_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
        "SLACK_API_URL": slack.api_url,
        "SLACK_DEFAULT_CHANNEL": "#ai-ops",
        "SPENDSENTRY_AUTO_THROTTLE": "on",  # use cases without a policy get throttled
    }
    names = write_topics_file(tmp_path / "topics.toml", unique_name("sec"))
    worker = WorkerProcess(
        broker.bootstrap,
        tmp_path / "topics.toml",
        tmp_path / "state",
        unique_name("g"),
        env=env,
        extra_args=["--log-level", "debug", "--notify"],
    )
    try:
        worker.wait_for(lambda s: len(s["assignment"]) == 7, 90, "the group join")
        incidents = ("cost_spike", "agent_chatter", "fallback_drift")
        docs = scenario_events(seed=7, hours=4, incidents=incidents)
        records = as_records(docs)
        # A bad record too, so a dead letter is written (and searched).
        records.insert(10, Record("usage", b"ops_agent", b'{"event_id": "b1", "ts": "soon"}'))
        asyncio.run(produce(broker.bootstrap, names, records))
        # Closed up to the data's end (the watermark alone may be held by a
        # partition whose last event is early: see caught_up).
        last_event = max(parse_ts(d["ts"]) for d in docs)
        status = worker.wait_for(
            lambda s: caught_up(s, len(records), until=last_event), 120, "all records"
        )
        assert status["throttle"]["published"] > 0, status["throttle"]
        deadline = time.monotonic() + 60
        while slack.authorised < len(status["alerts"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert slack.authorised > 0, "the notifier never reached the Slack stand-in"

        # One signed click (accepted) and one forged (rejected and logged).
        alert = {"alert_id": "ab" * 12, "use_case": "ops_agent", "kind": "cost_spike"}
        payload = {
            "type": "block_actions",
            "user": {"id": "U1"},
            "actions": [{"action_id": "spendsentry_ack", "value": button_value(alert)}],
        }
        body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
        stamp = str(int(time.time()))
        signed = sign(found["SLACK_SIGNING_SECRET"], stamp, body)
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        headers = {**form, "X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signed}
        assert _post_click(worker.port, body, headers) == 200
        forged = {**headers, "X-Slack-Signature": "v0=" + "0" * 64}
        assert _post_click(worker.port, body, forged) == 401

        views = {path: worker.get(path) for path in ("/status", "/metrics", "/")}
    finally:
        code = worker.stop()
    assert code == 0, worker.tail()

    topics = {
        logical: asyncio.run(read_all(broker.bootstrap, names[logical], PARTITIONS[logical]))
        for logical in ("alerts", "throttle", "deadletter", "control")
    }
    # The secrets were in use.
    keys = ThrottleKeys.of(found["SPENDSENTRY_THROTTLE_KEY"])
    commands = [orjson.loads(v) for v in topics["throttle"]]
    assert commands and all(keys.verify(doc) for doc in commands)
    assert topics["control"], "the signed click published no control action"

    places: dict[str, bytes] = {
        "worker stdout+stderr": worker.output(),
        **{f"GET {path}": body for path, body in views.items()},
        **{f"topic {logical}": b"\n".join(values) for logical, values in topics.items()},
        "bodies sent to Slack": b"\n".join(slack.bodies),
    }
    assert b"DEBUG" in places["worker stdout+stderr"], "the worker did not log at debug level"
    leaks = [
        f"{name} in {place}"
        for name, value in found.items()
        for place, text in places.items()
        if value.encode() in text
    ]
    assert not leaks, leaks
    assert topics["deadletter"], "the bad record should have been dead-lettered"
    print(
        "\nFIGURES secrets: "
        + ", ".join(f"{place}={len(text)} bytes" for place, text in places.items())
        + f", slack_calls={slack.authorised}, commands={len(commands)}"
    )
