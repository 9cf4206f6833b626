"""The actions issue's "done when", in one run on the real embedded broker.

Traffic with an incident goes in; the worker (a subprocess, notifier inside)
posts the alert to a local Slack stand-in reached by slack-sdk itself; a signed
throttle command reaches a ThrottleGuard, which then denies calls for that use
case; an on-call engineer clicks "Release throttle" in the Slack message (a
signed interaction request to the worker) and the guard allows again.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
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


@pytest.mark.timeout(240)
def test_incident_to_slack_to_throttle_to_release_click(
    broker: EmbeddedBroker, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    names = write_topics(tmp_path / "topics.toml", unique_name("t"))
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.toml").write_text(POLICY)
    web_port = free_port()
    with SlackStandIn() as slack:
        env = {
            **os.environ,
            "SPENDSENTRY_THROTTLE_KEY": KEY,
            "SLACK_BOT_TOKEN": TOKEN,
            "SLACK_API_URL": slack.api_url,
            "SLACK_DEFAULT_CHANNEL": "#oncall",
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        }
        log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [sys.executable, "-m", "spendsentry", "worker", "--broker", broker.bootstrap,
             "--web-port", str(web_port), "--topics", str(tmp_path / "topics.toml"),
             "--group", unique_name("g"), "--state-dir", str(tmp_path / "state"),
             "--policies", str(tmp_path / "policies"), "--idle-partition", "2",
             "--snapshot-interval", "1", "--session-timeout-ms", "6000", "--notify"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

        def tail() -> str:
            return (tmp_path / "worker.log").read_text(errors="replace")[-3000:]

        def status() -> dict[str, Any] | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/status", timeout=5) as r:
                    doc: dict[str, Any] = json.loads(r.read())
                    return doc
            except OSError:
                return None

        try:
            wait_until(
                lambda: (s := status()) is not None and len(s.get("assignment", [])) >= 4,
                90,
                "the worker to join its group",
            )
            start = float(int(time.time() // 60 * 60) - 120 * 60)
            events = spike_traffic(start, 112)
            reporter = UsageReporter(broker.bootstrap, topic=names["usage"], batch_size=100)
            reporter.start_background()
            try:
                assert all(reporter.report(e) for e in events)
                wait_until(lambda: reporter.counts["sent"] == len(events), 30, "sending")
            finally:
                reporter.close()

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
                wait_until(
                    lambda: guard.check("support_chat").allowed, 60, "the guard to allow again"
                )
            assert KEY not in tail() and TOKEN not in tail() and SIGNING_SECRET not in tail()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(timeout=10)
            log.close()
