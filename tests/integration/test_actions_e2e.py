"""The actions issue's "done when", in one run on the real embedded broker.

Traffic with an incident goes in; the worker (a subprocess, notifier inside)
posts the alert to a local Slack stand-in reached by slack-sdk itself; a signed
throttle command reaches a ThrottleGuard, which then denies calls for that use
case; an on-call engineer clicks "Release throttle" in the Slack message (a
signed interaction request to the worker) and the guard allows again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_slack_notifier import TOKEN, FakeSlack
from test_throttle_e2e import KEY, POLICY, spike_traffic, wait_until, write_topics

from spendsentry.actions import ThrottleKeys
from spendsentry.broker import EmbeddedBroker, free_port
from spendsentry.client import ThrottleGuard, UsageReporter
from spendsentry.slack.interactions import sign

pytestmark = pytest.mark.integration

SIGNING_SECRET = "e2e-s1gning-s3cret"


class SlackStandIn:
    """FakeSlack served from its own event loop thread, for a synchronous test."""

    def __init__(self) -> None:
        self.fake = FakeSlack(free_port())
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> FakeSlack:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.fake.start(), self.loop).result(10)
        return self.fake

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _click(port: int, action_id: str, value: str) -> int:
    payload = {"type": "block_actions", "user": {"id": "U0NCALL"},
               "actions": [{"action_id": action_id, "value": value}]}  # fmt: skip
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    stamp = str(int(time.time()))
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/slack/interactions",
        data=body,
        headers={
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": sign(SIGNING_SECRET, stamp, body),
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def _buttons(message: dict[str, Any]) -> dict[str, str]:
    found = {}
    for block in message.get("blocks", []):
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            found[element["action_id"]] = element["value"]
    return found


@dataclass
class SlackWorker:
    """A worker with Slack on (the stand-in) and its web port, for click-through tests."""

    slack: SlackStandIn
    names: dict[str, str]
    web_port: int
    log_path: Path

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def get(self, path: str) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}{path}", timeout=5) as r:
                return str(r.read().decode())
        except OSError:
            return None

    def status(self) -> dict[str, Any] | None:
        doc = self.get("/status")
        return None if doc is None else dict(json.loads(doc))


@contextlib.contextmanager
def slack_worker(
    broker: EmbeddedBroker, unique_name: Callable[[str], str], tmp_path: Path
) -> Iterator[SlackWorker]:
    """Start ``spendsentry worker --notify`` on fresh topics with :data:`POLICY`, Slack
    pointed at a stand-in; wait until it holds its partitions; stop it (by pid) after."""
    names = write_topics(tmp_path / "topics.toml", unique_name("t"))
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.toml").write_text(POLICY)
    with SlackStandIn() as slack:
        env = {
            **os.environ,
            "SPENDSENTRY_THROTTLE_KEY": KEY,
            "SLACK_BOT_TOKEN": TOKEN,
            "SLACK_API_URL": slack.api_url,
            "SLACK_DEFAULT_CHANNEL": "#oncall",
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        }
        running = SlackWorker(slack, names, free_port(), tmp_path / "worker.log")
        log = open(running.log_path, "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [sys.executable, "-m", "spendsentry", "worker", "--broker", broker.bootstrap,
             "--web-port", str(running.web_port), "--topics", str(tmp_path / "topics.toml"),
             "--group", unique_name("g"), "--state-dir", str(tmp_path / "state"),
             "--policies", str(tmp_path / "policies"), "--idle-partition", "2",
             "--snapshot-interval", "1", "--session-timeout-ms", "6000", "--notify"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            wait_until(
                lambda: (s := running.status()) is not None and len(s.get("assignment", [])) >= 4,
                90,
                "the worker to join its group",
            )
            yield running
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(timeout=10)
            log.close()


def send_usage(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    reporter = UsageReporter(bootstrap, topic=topic, batch_size=100)
    reporter.start_background()
    try:
        assert all(reporter.report(e) for e in events)
        wait_until(lambda: reporter.counts["sent"] == len(events), 30, "sending")
    finally:
        reporter.close()


@pytest.mark.timeout(240)
def test_incident_to_slack_to_throttle_to_release_click(
    broker: EmbeddedBroker, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    with slack_worker(broker, unique_name, tmp_path) as running:
        slack, names, web_port, tail = (
            running.slack, running.names, running.web_port, running.tail
        )  # fmt: skip
        start = float(int(time.time() // 60 * 60) - 120 * 60)
        send_usage(broker.bootstrap, names["usage"], spike_traffic(start, 112))

        # 1. Slack: the alert reaches on-call, with the evidence and the buttons.
        def posted() -> list[dict[str, Any]]:
            return [m for m in slack.ok("chat.postMessage") if "support_chat" in m["text"]]

        wait_until(lambda: bool(posted()), 90, f"a Slack message\n{tail()}")
        message = posted()[0]
        assert message["channel"] == "#support"  # the policy's owner
        rendered = json.dumps(message["blocks"])
        assert "support_chat" in rendered and "/h" in rendered
        buttons = _buttons(message)
        assert {"spendsentry_ack", "spendsentry_snooze"} <= set(buttons)

        # 2. Throttle: a signed command makes the guard deny.
        guard = ThrottleGuard(broker.bootstrap, ThrottleKeys.of(KEY), topic=names["throttle"])
        with guard:
            assert asyncio.run(guard.wait_synced(20))
            wait_until(lambda: not guard.check("support_chat").allowed, 60, "the guard to deny")
            decision = guard.check("support_chat", model="gpt-4o")
            assert decision.action in ("deny", "route")
            assert guard.counts["bad_signature"] == 0

            # 3. Release: the on-call engineer clicks the button in Slack.
            release_messages = [m for m in posted() if "spendsentry_release" in _buttons(m)]
            assert release_messages, "a throttled alert offers Release throttle"
            value = _buttons(release_messages[-1])["spendsentry_release"]
            assert _click(web_port, "spendsentry_release", value) == 200
            wait_until(lambda: guard.check("support_chat").allowed, 60, "the guard to allow again")
        assert KEY not in tail() and TOKEN not in tail() and SIGNING_SECRET not in tail()
