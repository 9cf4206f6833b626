"""The Slack notifier on the real embedded broker, against a local Slack stand-in.

The stand-in is a small aiohttp app on a free loopback port that speaks just
enough of Slack: ``POST /api/chat.postMessage`` and ``/api/chat.update`` (bot
token, JSON) and ``POST /hooks/...`` (incoming webhook). It records every
request body, can answer 429 with ``Retry-After``, and can be down (not
listening) to play an outage. slack-sdk is pointed at it with ``base_url`` /
the webhook URL, so the real client code and retry handlers run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from spendsentry.alerts import Alert, make_alert_id
from spendsentry.broker import EmbeddedBroker, TopicSpec, ensure_topics, free_port
from spendsentry.slack.interactions import sign
from spendsentry.slack.notifier import NotifierConfig, SlackNotifier, SlackSettings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

TOKEN = "xoxb-1111-2222-s3cr3tT0k3nV4lu3"
HOOK_PATH = "/hooks/services/T000/B000/wEbHoOkS3cr3t"
T0 = 1793610000.0


@dataclass
class Call:
    method: str  # chat.postMessage, chat.update or webhook
    body: dict[str, Any]
    at: float
    status: int


@dataclass
class FakeSlack:
    """Slack's Web API and an incoming webhook, on 127.0.0.1:port."""

    port: int
    calls: list[Call] = field(default_factory=list)
    rate_limit_next: int = 0
    #: fallback text of each posted message -> its ts
    ts_of: dict[str, str] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    _ts: int = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{HOOK_PATH}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_post(HOOK_PATH, self._hook)
        # No access log: it would print the webhook path (a credential) into the
        # captured logs the secrets check reads.
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def ok(self, method: str) -> list[dict[str, Any]]:
        return [c.body for c in self.calls if c.method == method and c.status == 200]

    def _limited(self, method: str, body: dict[str, Any]) -> web.Response | None:
        if not self.rate_limit_next:
            return None
        self.rate_limit_next -= 1
        self.calls.append(Call(method, body, time.monotonic(), 429))
        return web.json_response(
            {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "1"}
        )

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        body = await request.json()
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        limited = self._limited(method, body)
        if limited is not None:
            return limited
        self.calls.append(Call(method, body, time.monotonic(), 200))
        channel = body["channel"]
        if channel.startswith("#"):  # Slack answers with the channel's id
            channel = "C" + channel[1:].upper().replace("-", "")
        if method == "chat.postMessage":
            self._ts += 1
            self.ts_of[body["text"]] = ts = f"1700.{self._ts:04d}"
            return web.json_response({"ok": True, "channel": channel, "ts": ts})
        return web.json_response({"ok": True, "channel": channel, "ts": body["ts"]})

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.json()
        limited = self._limited("webhook", body)
        if limited is not None:
            return limited
        self.calls.append(Call("webhook", body, time.monotonic(), 200))
        return web.Response(text="ok")


def _alert(
    use_case: str,
    status: str,
    severity: str,
    seq: int,
    *,
    kind: str = "cost_spike",
    owner: str | None = "#support-ai-oncall",
) -> dict[str, Any]:
    return Alert(
        alert_id=make_alert_id(use_case, kind, T0),
        kind=kind,
        use_case=use_case,
        severity=severity,
        status=status,
        detected_at=T0 + 240 * seq,
        started_at=T0,
        resolved_at=T0 + 240 * seq if status == "resolved" else None,
        summary=f"cost per minute {3 + seq}.0x the usual level",
        evidence={
            "metric": "cost_per_min",
            "baseline": 0.05,
            "observed": 0.2,
            "window_s": 300,
            "score": 6.0 + seq,
            "unit": "usd",
        },
        excess_cost_per_hour_usd=0.0 if status == "resolved" else 9.0 * seq,
        owner=owner,
        incident_seq=seq,
    ).to_dict()


async def _produce(bootstrap: str, topic: str, messages: list[bytes | dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for m in messages:
            key = m.get("use_case", "x").encode() if isinstance(m, dict) else b"junk"
            value = json.dumps(m).encode() if isinstance(m, dict) else m
            await producer.send_and_wait(topic, value=value, key=key)
    finally:
        await producer.stop()


def _config(broker: EmbeddedBroker, topic: str, group: str, state_dir: Path) -> NotifierConfig:
    return NotifierConfig(
        bootstrap=broker.bootstrap,
        alerts=TopicSpec(topic, 3),
        group_id=group,
        state_dir=state_dir,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        retry_initial_s=0.2,
        retry_max_s=0.5,
    )


async def _run_until(
    notifier: SlackNotifier, done: Callable[[], bool], *, timeout: float = 30.0, linger: float = 0.0
) -> None:
    """Run the notifier until ``done()`` (then ``linger`` more seconds), then stop it."""
    stop = asyncio.Event()
    task = asyncio.create_task(notifier.run(stop))
    deadline = time.monotonic() + timeout
    try:
        while not done():
            if task.done():
                task.result()  # raises what killed it
                raise AssertionError("the notifier stopped on its own")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; stats {notifier.stats}")
            await asyncio.sleep(0.05)
        await asyncio.sleep(linger)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def _committed(broker: EmbeddedBroker, topic: str, group: str) -> int:
    """Sum of the group's committed offsets on ``topic``."""
    from aiokafka import TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group)
    await consumer.start()
    try:
        total = 0
        for p in range(3):
            total += await consumer.committed(TopicPartition(topic, p)) or 0
        return total
    finally:
        await consumer.stop()


def test_bot_mode_threads_updates_and_survives_a_restart_without_duplicates(
    broker: EmbeddedBroker,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    topic, group = unique_name("alerts"), unique_name("notifier")
    slack = FakeSlack(free_port())
    settings = SlackSettings(
        bot_token=TOKEN, default_channel="#ai-platform-alerts", api_url=slack.api_url
    )
    incident = [
        _alert("support_chat", "firing", "warning", 1),
        _alert("support_chat", "escalated", "critical", 2),
        _alert("support_chat", "resolved", "critical", 3),
    ]
    orphan = _alert("batch_jobs", "firing", "warning", 1, owner=None)

    async def scenario() -> tuple[SlackNotifier, SlackNotifier]:
        await slack.start()
        try:
            await ensure_topics(broker.bootstrap, [TopicSpec(topic, 3)])
            await _produce(broker.bootstrap, topic, [*incident, b"not json", orphan, incident[1]])
            first = SlackNotifier(_config(broker, topic, group, tmp_path), settings)
            await _run_until(first, lambda: first.stats.delivered == 4 and first.stats.skipped == 1)
            assert await _committed(broker, topic, group) == 6  # everything, junk included
            # A restart that lost its commits (a new group reads from the start):
            # the state file knows all of it.
            second = SlackNotifier(_config(broker, topic, unique_name("again"), tmp_path), settings)
            await _run_until(second, lambda: second.stats.duplicates == 5)
            return first, second
        finally:
            await slack.stop()

    first, second = asyncio.run(asyncio.wait_for(scenario(), 80))
    assert second.stats.delivered == 0
    assert first.stats.duplicates == 1  # the repeated escalation on the topic

    updates = slack.ok("chat.update")
    # Two use cases on two partitions: their relative order is not defined.
    posts = [p for p in slack.ok("chat.postMessage") if "support_chat" in p["text"]]
    orphans = [p for p in slack.ok("chat.postMessage") if "batch_jobs" in p["text"]]
    assert [p["channel"] for p in orphans] == ["#ai-platform-alerts"]  # no owner: the default
    assert [p["channel"] for p in posts] == [
        "#support-ai-oncall",  # the policy's owner
        "CSUPPORTAIONCALL",  # escalation reply, in the thread (channel id from the answer)
        "CSUPPORTAIONCALL",  # resolution reply
    ]
    parent = posts[0]
    assert "thread_ts" not in parent
    assert parent["blocks"][0]["text"]["text"].startswith(":large_orange_circle: WARNING")
    assert parent["text"].startswith("[WARNING] cost_spike on support_chat")
    assert {e["action_id"] for e in parent["blocks"][-1]["elements"]} == {
        "spendsentry_ack",
        "spendsentry_snooze",
        "spendsentry_expected_change",
        "spendsentry_false_alarm",
    }
    escalation, resolution = posts[1], posts[2]
    thread_ts = slack.ts_of[parent["text"]]
    assert escalation["thread_ts"] == resolution["thread_ts"] == thread_ts
    assert escalation["reply_broadcast"] is True  # critical: the channel sees it
    assert "Escalated to *critical*" in escalation["blocks"][0]["text"]["text"]
    assert resolution["reply_broadcast"] is False
    assert "Resolved at" in resolution["blocks"][0]["text"]["text"]
    # The parent follows the incident: critical, then resolved without buttons.
    assert [(u["channel"], u["ts"]) for u in updates] == [("CSUPPORTAIONCALL", thread_ts)] * 2
    assert updates[0]["blocks"][0]["text"]["text"].startswith(":red_circle: CRITICAL")
    assert updates[1]["blocks"][0]["text"]["text"].startswith(":white_check_mark: RESOLVED")
    assert not [b for b in updates[1]["blocks"] if b["type"] == "actions"]

    state = json.loads((tmp_path / "slack-notifier.json").read_text())
    assert len(state["delivered"]) == 4
    assert state["threads"][incident[0]["alert_id"]]["ts"] == thread_ts
    # Secrets: slack-sdk logged its requests (at DEBUG) and none shows the token.
    assert any(r.name == "spendsentry.slack.sdk" for r in caplog.records)
    assert TOKEN not in caplog.text
    assert "skipping alert record" in caplog.text and "not JSON" in caplog.text


def test_webhook_outage_loses_nothing_and_a_restart_posts_no_duplicates(
    broker: EmbeddedBroker,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    topic, group = unique_name("alerts"), unique_name("notifier")
    slack = FakeSlack(free_port())  # not started: Slack is down
    settings = SlackSettings(webhook_url=slack.webhook_url)
    a = _alert("support_chat", "firing", "warning", 1)
    b = _alert("support_chat", "escalated", "critical", 2)
    c = _alert("support_chat", "resolved", "critical", 3)

    async def scenario() -> None:
        await ensure_topics(broker.bootstrap, [TopicSpec(topic, 3)])
        await _produce(broker.bootstrap, topic, [a, b])
        first = SlackNotifier(_config(broker, topic, group, tmp_path), settings)

        async def come_back() -> None:
            while first.stats.failed_attempts < 2:
                await asyncio.sleep(0.05)
            assert await _committed(broker, topic, group) == 0  # nothing committed while down
            await slack.start()

        back = asyncio.create_task(come_back())
        try:
            await _run_until(first, lambda: first.stats.delivered == 2)
        finally:
            await back
        assert await _committed(broker, topic, group) == 2
        # Restart: the same escalation again (an at-least-once producer) and the resolution.
        await _produce(broker.bootstrap, topic, [b, c])
        # A new group id: it reads everything again (as after lost commits), and
        # Tansu makes a member rejoining a used group wait ~11 s.
        second = SlackNotifier(_config(broker, topic, unique_name("again"), tmp_path), settings)
        await _run_until(second, lambda: second.stats.delivered == 1)
        assert second.stats.duplicates == 3
        await slack.stop()

    asyncio.run(asyncio.wait_for(scenario(), 80))
    posted = slack.ok("webhook")
    assert [p["text"].split("]")[0] for p in posted] == ["[WARNING", "[CRITICAL", "[RESOLVED"]
    assert posted[0]["blocks"][0]["text"]["text"].endswith("cost_spike · support_chat")
    assert "delivery of" in caplog.text and "failed" in caplog.text
    # The webhook URL is a credential; slack-sdk logs request URLs, masked.
    assert HOOK_PATH not in caplog.text and "wEbHoOkS3cr3t" not in caplog.text
    assert "***" in caplog.text


def test_rate_limited_429_is_retried_after_retry_after_and_delivered_once(
    broker: EmbeddedBroker, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    topic, group = unique_name("alerts"), unique_name("notifier")
    slack = FakeSlack(free_port(), rate_limit_next=1)
    settings = SlackSettings(bot_token=TOKEN, api_url=slack.api_url)

    async def scenario() -> SlackNotifier:
        await slack.start()
        try:
            await ensure_topics(broker.bootstrap, [TopicSpec(topic, 3)])
            await _produce(broker.bootstrap, topic, [_alert("support_chat", "firing", "info", 1)])
            notifier = SlackNotifier(_config(broker, topic, group, tmp_path), settings)
            # Linger: a second post would show up within this time.
            await _run_until(notifier, lambda: notifier.stats.delivered == 1, linger=1.0)
            return notifier
        finally:
            await slack.stop()

    notifier = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert [c.status for c in slack.calls] == [429, 200]
    assert slack.calls[1].at - slack.calls[0].at >= 0.95  # Retry-After: 1 was honoured
    assert notifier.stats.failed_attempts == 0  # slack-sdk's handler retried, not our loop
    assert len(slack.ok("chat.postMessage")) == 1


def test_without_slack_settings_alerts_go_to_the_log_and_are_committed(
    broker: EmbeddedBroker,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="spendsentry")
    topic, group = unique_name("alerts"), unique_name("notifier")
    alert = _alert("support_chat", "firing", "warning", 1)

    async def scenario() -> int:
        await ensure_topics(broker.bootstrap, [TopicSpec(topic, 3)])
        await _produce(broker.bootstrap, topic, [alert])
        notifier = SlackNotifier(_config(broker, topic, group, tmp_path), SlackSettings())
        await _run_until(notifier, lambda: notifier.stats.delivered == 1)
        return await _committed(broker, topic, group)

    assert asyncio.run(asyncio.wait_for(scenario(), 60)) == 1
    assert f"alert {alert['alert_id']}:firing:warning:1" in caplog.text
    assert not (tmp_path / "slack-notifier.json").exists()


def test_the_worker_serves_slack_interactions_and_publishes_to_ai_control(
    broker: EmbeddedBroker,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import urllib.parse

    import aiohttp

    from spendsentry.engine import Engine
    from spendsentry.policy import PolicySet
    from spendsentry.worker.app import run_worker
    from spendsentry.worker.service import WorkerConfig
    from spendsentry.worker.topics import TopicsConfig

    caplog.set_level(logging.DEBUG)
    secret = "s1gn1ng-s3cr3t"
    monkeypatch.setenv("SLACK_SIGNING_SECRET", secret)
    names = {k: unique_name(k) for k in ("usage", "outcomes", "alerts", "throttle", "dl", "ctl")}
    topics = TopicsConfig.from_dict(
        {
            "usage": {"name": names["usage"], "partitions": 1},
            "outcomes": {"name": names["outcomes"], "partitions": 1},
            "alerts": {"name": names["alerts"], "partitions": 1},
            "throttle": {"name": names["throttle"], "partitions": 1},
            "deadletter": {"name": names["dl"], "partitions": 1},
            "control": {"name": names["ctl"], "partitions": 1},
        }
    )
    config = WorkerConfig(
        bootstrap=broker.bootstrap,
        group_id=unique_name("worker"),
        topics=topics,
        state_dir=tmp_path,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    port = free_port()
    alert = _alert("support_chat", "firing", "warning", 1)
    value = json.dumps(
        {
            "alert_id": alert["alert_id"],
            "use_case": "support_chat",
            "kind": "cost_spike",
            "scope_key": None,
        }
    )
    payload = {
        "type": "block_actions",
        "user": {"id": "U024BE7LH"},
        "actions": [{"action_id": "spendsentry_snooze", "value": value}],
    }
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()

    async def scenario() -> tuple[list[int], list[Any]]:
        stop = asyncio.Event()
        started = asyncio.Event()
        worker = asyncio.create_task(
            run_worker(
                config,
                Engine(PolicySet.empty()),
                stop,
                web_port=port,
                on_started=lambda service: started.set(),
            )
        )
        statuses = []
        try:
            await asyncio.wait_for(started.wait(), 30)
            url = f"http://127.0.0.1:{port}/slack/interactions"
            async with aiohttp.ClientSession() as http:
                stamp = str(int(time.time()))
                forged = {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": "v0=" + "0" * 64}
                for headers in (
                    forged,
                    {
                        "X-Slack-Request-Timestamp": stamp,
                        "X-Slack-Signature": sign(secret, stamp, body),
                    },
                ):
                    async with http.post(url, data=body, headers=headers) as resp:
                        statuses.append(resp.status)
            reader = AIOKafkaConsumer(
                names["ctl"], bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest"
            )
            await reader.start()
            try:
                records = await reader.getmany(timeout_ms=5000)
                got = [json.loads(r.value) for rs in records.values() for r in rs]
            finally:
                await reader.stop()
        finally:
            stop.set()
            await asyncio.wait_for(worker, 30)
        return statuses, got

    statuses, got = asyncio.run(asyncio.wait_for(scenario(), 80))
    assert statuses == [401, 200]
    assert len(got) == 1  # the forged request published nothing
    assert got[0]["action"] == "snooze" and got[0]["user"] == "U024BE7LH"
    assert got[0]["alert_id"] == alert["alert_id"] and got[0]["until"] is not None
    assert "rejected a Slack interaction request: 401" in caplog.text
    assert secret not in caplog.text


def test_the_worker_runs_the_notifier_only_when_slack_is_configured_or_asked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:

    from spendsentry.slack.embedded import start_embedded

    for name in ("SLACK_BOT_TOKEN", "SLACK_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    alerts = TopicSpec("ai.alerts", 3)

    def decide(flag: bool | None) -> bool:
        async def main() -> bool:
            started = start_embedded(flag, "127.0.0.1:1", alerts, tmp_path, "g")
            if started is None:
                return False
            started.task.cancel()  # nothing to reach on 127.0.0.1:1; only the decision counts
            await asyncio.gather(started.task, return_exceptions=True)
            return True

        return asyncio.run(main())

    assert decide(None) is False  # no Slack settings: alerts stay on the topic and the log
    assert decide(True) is True  # asked for: log-only notifier
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "http://127.0.0.1:1/hooks/x")
    assert decide(None) is True
    assert decide(False) is False


def test_one_parent_per_incident_updated_as_kinds_join_with_replies_in_its_thread(
    broker: EmbeddedBroker, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    topic, group = unique_name("alerts"), unique_name("notifier")
    slack = FakeSlack(free_port())
    settings = SlackSettings(bot_token=TOKEN, api_url=slack.api_url)
    spike = _alert("research_agent", "firing", "warning", 1)
    loop = _alert("research_agent", "firing", "warning", 1, kind="agent_chatter")
    done = _alert("research_agent", "resolved", "warning", 2)
    incident = {"incident_id": "inc-" + "ab" * 12}
    spike.update(incident, root_cause="cost_spike", role="cause")
    loop.update(incident, root_cause="agent_chatter", role="cause")
    loop["drivers"] = [
        {"dimension": "session", "value": "run-7", "excess_cost_per_hour_usd": 4.0, "share": 0.9}
    ]
    done.update(incident, root_cause="agent_chatter", role="symptom")

    async def scenario() -> SlackNotifier:
        await slack.start()
        try:
            await ensure_topics(broker.bootstrap, [TopicSpec(topic, 3)])
            await _produce(broker.bootstrap, topic, [spike, loop, done])
            notifier = SlackNotifier(_config(broker, topic, group, tmp_path), settings)
            await _run_until(notifier, lambda: notifier.stats.delivered == 3)
            return notifier
        finally:
            await slack.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))
    posts, updates = slack.ok("chat.postMessage"), slack.ok("chat.update")
    parents = [p for p in posts if "thread_ts" not in p]
    assert len(parents) == 1  # one page for the incident
    thread_ts = slack.ts_of[parents[0]["text"]]
    replies = [p for p in posts if p.get("thread_ts") == thread_ts]
    assert len(replies) == 2
    assert "agent_chatter joins and is named the root cause" in replies[0]["text"]
    assert "Resolved at" in replies[1]["blocks"][0]["text"]["text"]
    # The parent now names the loop as the cause, the spike as its symptom, the driver.
    assert len(updates) == 2
    header = updates[0]["blocks"][0]["text"]["text"]
    assert "agent_chatter" in header and "(incident: 2 kinds)" in header
    text = json.dumps(updates[-1]["blocks"])
    assert "run-7" in text and "90% of the excess" in text
    assert "`cost_spike` (symptom, resolved" in text
