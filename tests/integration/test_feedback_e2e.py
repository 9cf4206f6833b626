"""Feedback that teaches, through the worker on the real embedded broker.

A cost spike reaches Slack (the local stand-in, through slack-sdk); on-call
clicks "Expected change" (a signed interaction request to the worker, published
on ai.control); once event time passes the click, the incident resolves saying
it was an expected change, the throttle it caused is released, the spike (still
going) opens no new incident, and /metrics counts the feedback.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_actions_e2e import SIGNING_SECRET, SlackStandIn, _buttons, _click
from test_slack_notifier import TOKEN
from test_throttle_e2e import KEY, POLICY, spike_traffic, wait_until, write_topics

from spendsentry.actions import ThrottleKeys
from spendsentry.broker import EmbeddedBroker, free_port
from spendsentry.client import ThrottleGuard, UsageReporter

pytestmark = pytest.mark.integration


def _send(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    reporter = UsageReporter(bootstrap, topic=topic, batch_size=100)
    reporter.start_background()
    try:
        assert all(reporter.report(e) for e in events)
        wait_until(lambda: reporter.counts["sent"] == len(events), 30, "sending")
    finally:
        reporter.close()


@pytest.mark.timeout(300)
def test_expected_change_click_resolves_the_incident_and_is_counted(
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

        def get(path: str) -> str | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web_port}{path}", timeout=5) as r:
                    return str(r.read().decode())
            except OSError:
                return None

        def joined() -> bool:
            doc = get("/status")
            return doc is not None and len(json.loads(doc).get("assignment", [])) >= 4

        try:
            wait_until(joined, 90, "the worker to join its group")
            # Two hours of traffic ending 8 minutes ago, a 10x spike in its last 12 minutes.
            start = float(int(time.time() // 60 * 60) - 120 * 60)
            _send(broker.bootstrap, names["usage"], spike_traffic(start, 112))

            def posted() -> list[dict[str, Any]]:
                return [m for m in slack.ok("chat.postMessage") if "support_chat" in m["text"]]

            wait_until(lambda: bool(posted()), 90, f"a Slack message\n{tail()}")
            buttons = _buttons(posted()[0])
            assert {"spendsentry_expected_change", "spendsentry_false_alarm"} <= set(buttons)
            guard = ThrottleGuard(broker.bootstrap, ThrottleKeys.of(KEY), topic=names["throttle"])
            with guard:
                assert asyncio.run(guard.wait_synced(20))
                wait_until(lambda: not guard.check("support_chat").allowed, 60, "a throttle")

                # On-call: the spike is a launch, expected.
                value = buttons["spendsentry_expected_change"]
                assert _click(web_port, "spendsentry_expected_change", value) == 200
                clicked = time.time()

                # The spike goes on up to 4 minutes past the click (within the decoder's
                # 300 s of future): event time passes the click and the feedback applies.
                more = [
                    e
                    for e in spike_traffic(start, 126)
                    if start + 112 * 60 <= e["ts"] <= clicked + 240
                ]
                _send(broker.bootstrap, names["usage"], more)

                def said_expected() -> bool:
                    calls = slack.ok("chat.postMessage") + slack.ok("chat.update")
                    return any("expected change" in json.dumps(m) for m in calls)

                wait_until(said_expected, 90, f"the expected change in Slack\n{tail()}")
                wait_until(lambda: guard.check("support_chat").allowed, 60, "the release")
            metrics = get("/metrics") or ""
            counted = (
                'spendsentry_feedback_total{kind="cost_spike",use_case="support_chat",'
                'verdict="expected_change"} 1.0'
            )
            assert counted in metrics, metrics[-2000:]
            # The spike, still going, opened no new incident after the click.
            status = json.loads(get("/status") or "{}")
            assert [a for a in status["firing"] if a["use_case"] == "support_chat"] == []
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(timeout=10)
            log.close()
