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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_actions_e2e import _buttons, _click, send_usage, slack_worker
from test_throttle_e2e import KEY, spike_traffic, wait_until

from spendsentry.actions import ThrottleKeys
from spendsentry.broker import EmbeddedBroker
from spendsentry.client import ThrottleGuard

pytestmark = pytest.mark.integration


@pytest.mark.timeout(300)
def test_expected_change_click_resolves_the_incident_and_is_counted(
    broker: EmbeddedBroker, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    with slack_worker(broker, unique_name, tmp_path) as running:
        slack, names, tail = running.slack, running.names, running.tail
        # Two hours of traffic ending 8 minutes ago, a 10x spike in its last 12 minutes.
        start = float(int(time.time() // 60 * 60) - 120 * 60)
        send_usage(broker.bootstrap, names["usage"], spike_traffic(start, 112))

        def posted() -> list[dict[str, Any]]:
            # The spike's own page: the use case's budget warnings (budget_threshold,
            # which feedback does not rebase) reach Slack too, in either order.
            return [
                m
                for m in slack.ok("chat.postMessage")
                if "support_chat" in m["text"] and "cost_spike" in m["text"]
            ]

        wait_until(lambda: bool(posted()), 90, f"a Slack message\n{tail()}")
        buttons = _buttons(posted()[0])
        assert {"spendsentry_expected_change", "spendsentry_false_alarm"} <= set(buttons)
        guard = ThrottleGuard(broker.bootstrap, ThrottleKeys.of(KEY), topic=names["throttle"])
        with guard:
            assert asyncio.run(guard.wait_synced(20))
            wait_until(lambda: not guard.check("support_chat").allowed, 60, "a throttle")

            # On-call: the spike is a launch, expected.
            value = buttons["spendsentry_expected_change"]
            assert _click(running.web_port, "spendsentry_expected_change", value) == 200
            clicked = time.time()
            # The worker queues the feedback when it reads ai.control, and applies it
            # when a minute after the click closes: the traffic that closes one must
            # come after the read (nothing else closes a minute in this test).
            counted = (
                'spendsentry_feedback_total{kind="cost_spike",use_case="support_chat",'
                'verdict="expected_change"} 1.0'
            )
            wait_until(lambda: counted in (running.get("/metrics") or ""), 60, "the click read")

            # The spike goes on up to 4 minutes past the click (within the decoder's
            # 300 s of future): event time passes the click and the feedback applies.
            more = [
                e for e in spike_traffic(start, 126) if start + 112 * 60 <= e["ts"] <= clicked + 240
            ]
            send_usage(broker.bootstrap, names["usage"], more)

            def said_expected() -> bool:
                calls = slack.ok("chat.postMessage") + slack.ok("chat.update")
                return any("expected change" in json.dumps(m) for m in calls)

            wait_until(said_expected, 90, f"the expected change in Slack\n{tail()}")
            wait_until(lambda: guard.check("support_chat").allowed, 60, "the release")
        metrics = running.get("/metrics") or ""
        assert counted in metrics, metrics[-2000:]  # counted once, not again when applied
        # The spike, still going, opened no new incident after the click.
        status = running.status() or {}
        assert [a for a in status["firing"] if a["use_case"] == "support_chat"] == []
