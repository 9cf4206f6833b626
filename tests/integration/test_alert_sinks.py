"""The sinks beside Slack, end to end: alert on Kafka -> sink -> a local stand-in, once.

Each stand-in is a small aiohttp app on a free 127.0.0.1 port that records every
request and answers from a script (500 and 429 first, then success), so the
real client code, the notifier's back-off and its dedupe state all run. The
notifiers are built from environment-shaped settings, as ``spendsentry notify``
builds them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from test_slack_notifier import _alert, _committed, _config, _produce, _run_until

from spendsentry.broker import EmbeddedBroker, TopicSpec, ensure_topics, free_port
from spendsentry.messages.alert import dedupe_key_of
from spendsentry.sinks.notifier import AlertNotifier
from spendsentry.sinks.settings import notifiers, sink_settings
from spendsentry.sinks.signature import verify

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SECRET = "wh-s3cr3t-for-tests"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class StandIn:
    """A receiver on 127.0.0.1: answers ``script`` in order, then ``ok``."""

    port: int
    ok: int = 200
    script: list[int] = field(default_factory=list)
    got: list[Received] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._take)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def accepted(self) -> list[Received]:
        return [r for r in self.got if 200 <= r.status < 300]

    async def _take(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = self.script.pop(0) if self.script else self.ok
        self.got.append(Received(request.path, dict(request.headers), body, status))
        headers = {"Retry-After": "1"} if status == 429 else {}
        return web.json_response({"status": "ok"}, status=status, headers=headers)


def _one(
    env: dict[str, str],
    broker: EmbeddedBroker,
    topic: str,
    group: str,
    d: Path,
    control: str | None = None,
) -> Any:
    config = _config(broker, topic, group, d)
    if control is not None:
        config = dataclasses.replace(config, control=TopicSpec(control, 1))
    (notifier,) = notifiers(config, sink_settings(env))
    return notifier


def _incident(owner: str) -> list[dict[str, Any]]:
    return [
        _alert("support_chat", "firing", "warning", 1, owner=owner),
        _alert("support_chat", "escalated", "critical", 2, owner=owner),
        _alert("support_chat", "resolved", "critical", 3, owner=owner),
    ]


def _deliver_all(
    broker: EmbeddedBroker,
    topic: str,
    stand_in: StandIn,
    messages: list[Any],
    make: Callable[[], AlertNotifier],
    done: Callable[[AlertNotifier], bool],
) -> AlertNotifier:
    async def scenario() -> AlertNotifier:
        await stand_in.start()
        try:
            await ensure_topics(broker.bootstrap, [TopicSpec(topic, 3)])
            await _produce(broker.bootstrap, topic, messages)
            notifier = make()
            # Linger: a second delivery of anything would show up within it.
            await _run_until(notifier, lambda: done(notifier), timeout=60, linger=1.0)
            return notifier
        finally:
            await stand_in.stop()

    return asyncio.run(asyncio.wait_for(scenario(), 100))


def test_webhook_delivers_each_state_change_once_signed_through_500_and_429(
    broker: EmbeddedBroker, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    topic, group = unique_name("alerts"), unique_name("notify")
    hook = StandIn(free_port(), script=[500, 429])
    env = {
        "SPENDSENTRY_WEBHOOK_URL": hook.url("/hooks/spend"),
        "SPENDSENTRY_WEBHOOK_SECRET": SECRET,
    }
    incident = _incident("#support-ai-oncall")
    notifier = _deliver_all(
        broker,
        topic,
        hook,
        [*incident, incident[1]],  # the escalation twice: an at-least-once producer
        lambda: _one(env, broker, topic, group, tmp_path),
        lambda n: n.stats.delivered == 3 and n.stats.duplicates == 1,
    )
    assert [r.status for r in hook.got] == [500, 429, 200, 200, 200]
    assert notifier.stats.failed_attempts == 2
    keys = [r.headers["X-Spendsentry-Dedupe-Key"] for r in hook.accepted()]
    assert keys == [dedupe_key_of(a) for a in incident]  # each once, in order
    for r in hook.got:
        # The receiver's check, over the exact bytes; a retry is signed anew.
        assert verify(
            SECRET,
            r.headers["X-Spendsentry-Timestamp"],
            r.headers["X-Spendsentry-Signature"],
            r.body,
        )
        assert not verify("other", r.headers["X-Spendsentry-Timestamp"],
                          r.headers["X-Spendsentry-Signature"], r.body)  # fmt: skip
    assert [json.loads(r.body) for r in hook.accepted()] == incident  # the alert, as on the topic
    assert (tmp_path / "webhook-notifier.json").exists()

    # A restart that lost its commits (a new group reads from the start): nothing again.
    again = StandIn(hook.port)
    second = _deliver_all(
        broker,
        topic,
        again,
        [],
        lambda: _one(env, broker, topic, unique_name("again"), tmp_path),
        lambda n: n.stats.duplicates == 4,
    )
    assert again.got == [] and second.stats.delivered == 0


def test_pagerduty_triggers_and_resolves_by_incident_key_routed_by_owner(
    broker: EmbeddedBroker, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    topic, group = unique_name("alerts"), unique_name("notify")
    pd = StandIn(free_port(), ok=202, script=[429, 500])
    env = {
        "PAGERDUTY_ROUTING_KEY": "R-default",
        "PAGERDUTY_ROUTING_KEY_SUPPORT": "R-support",
        "PAGERDUTY_EVENTS_URL": pd.url("/v2/enqueue"),
    }
    incident = _incident("#support-ai-oncall pagerduty:support")
    recommendation = _alert("batch_jobs", "firing", "info", 1, kind="model_oversizing", owner=None)
    other = _alert("batch_jobs", "firing", "critical", 1, owner=None)
    notifier = _deliver_all(
        broker,
        topic,
        pd,
        [*incident, recommendation, other, incident[0]],
        lambda: _one(env, broker, topic, group, tmp_path),
        lambda n: n.stats.delivered == 4 and n.stats.not_routed == 1 and n.stats.duplicates == 1,
    )
    assert Counter(r.status for r in pd.got) == {202: 4, 429: 1, 500: 1}
    events = [json.loads(r.body) for r in pd.accepted()]
    assert {r.path for r in pd.got} == {"/v2/enqueue"}
    mine = [e for e in events if e["dedup_key"] == incident[0]["alert_id"]]
    assert [e["event_action"] for e in mine] == ["trigger", "trigger", "resolve"]
    assert {e["routing_key"] for e in mine} == {"R-support"}  # the owner's service
    assert [e["payload"]["severity"] for e in mine[:2]] == ["warning", "critical"]
    assert mine[0]["payload"]["class"] == "cost_spike"
    assert mine[0]["payload"]["source"] == "spendsentry/support_chat"
    assert mine[0]["payload"]["custom_details"]["alert_id"] == incident[0]["alert_id"]
    (theirs,) = [e for e in events if e["dedup_key"] == other["alert_id"]]
    assert theirs["routing_key"] == "R-default"  # no owner: the default key
    assert recommendation["alert_id"] not in {e["dedup_key"] for e in events}  # info: no page
    assert notifier.stats.failed_attempts == 2


def test_pagerduty_relays_an_operators_acknowledgement_once(
    broker: EmbeddedBroker, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    topic, control, group = unique_name("alerts"), unique_name("control"), unique_name("notify")
    pd = StandIn(free_port(), ok=202, script=[202, 500, 429])
    env = {
        "PAGERDUTY_ROUTING_KEY": "R-default",
        "PAGERDUTY_ROUTING_KEY_SUPPORT": "R-support",
        "PAGERDUTY_EVENTS_URL": pd.url("/v2/enqueue"),
    }
    firing = _alert("support_chat", "firing", "critical", 1, owner="#oncall pagerduty:support")
    unpaged = _alert("batch_jobs", "firing", "info", 1, owner=None)

    def action(name: str, alert: dict[str, Any], at: str) -> dict[str, Any]:
        return {"action": name, "alert_id": alert["alert_id"], "use_case": alert["use_case"],
                "kind": alert["kind"], "scope_key": None, "user": "U024BE7LH", "at": at,
                "until": "2026-11-02T10:12:00Z" if name == "snooze" else None}  # fmt: skip

    ack = action("ack", firing, "2026-11-02T09:12:00.000Z")

    async def scenario() -> AlertNotifier:
        await pd.start()
        try:
            await ensure_topics(broker.bootstrap, [TopicSpec(topic, 3), TopicSpec(control, 1)])
            await _produce(broker.bootstrap, topic, [firing, unpaged])
            notifier = _one(env, broker, topic, group, tmp_path, control=control)
            stop = asyncio.Event()
            task = asyncio.create_task(notifier.run(stop))
            try:
                while notifier.stats.delivered < 1:
                    assert not task.done()
                    await asyncio.sleep(0.05)
                await _produce(
                    broker.bootstrap,
                    control,
                    [
                        ack,
                        ack,
                        action("ack", unpaged, "2026-11-02T09:13:00Z"),
                        action("snooze", firing, "2026-11-02T09:14:00Z"),
                        b"junk",
                    ],
                )
                deadline = time.monotonic() + 30
                while notifier.stats.delivered < 2 or notifier.stats.duplicates < 1:
                    assert not task.done() and time.monotonic() < deadline, notifier.stats
                    await asyncio.sleep(0.05)
                await asyncio.sleep(1.0)  # a second acknowledgement would show up
            finally:
                stop.set()
                await asyncio.wait_for(task, 20)
            return notifier
        finally:
            await pd.stop()

    notifier = asyncio.run(asyncio.wait_for(scenario(), 100))
    assert [r.status for r in pd.got] == [202, 500, 429, 202]
    events = [json.loads(r.body) for r in pd.accepted()]
    assert [e["event_action"] for e in events] == ["trigger", "acknowledge"]
    assert events[1] == {
        "routing_key": "R-support",  # the service the incident was paged to
        "event_action": "acknowledge",
        "dedup_key": firing["alert_id"],
    }
    assert notifier.stats.failed_attempts == 2


def test_alertmanager_gets_each_change_once_and_escalation_ends_the_lower_severity(
    broker: EmbeddedBroker, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    topic, group = unique_name("alerts"), unique_name("notify")
    am = StandIn(free_port(), script=[500, 429])
    # Re-sends far apart: this test counts the state changes only.
    env = {"ALERTMANAGER_URL": am.url(), "ALERTMANAGER_RESEND_S": "3600"}
    incident = _incident("#support-ai-oncall")
    _deliver_all(
        broker,
        topic,
        am,
        [*incident, incident[2]],
        lambda: _one(env, broker, topic, group, tmp_path),
        lambda n: n.stats.delivered == 3 and n.stats.duplicates == 1,
    )
    assert [r.status for r in am.got] == [500, 429, 200, 200, 200]
    assert {r.path for r in am.got} == {"/api/v2/alerts"}
    posts = [json.loads(r.body) for r in am.accepted()]
    first, escalation, resolution = posts
    now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    (firing,) = first
    assert firing["labels"]["severity"] == "warning"
    assert firing["labels"]["alertname"] == "spendsentry_cost_spike"
    assert firing["labels"]["use_case"] == "support_chat"
    assert firing["startsAt"] == incident[0]["started_at"]
    assert firing["endsAt"] > now  # kept alive ahead of now
    ended, critical = escalation
    assert ended["labels"] == firing["labels"] and ended["endsAt"][:19] <= now
    assert critical["labels"]["severity"] == "critical" and critical["endsAt"] > now
    (resolved,) = resolution
    assert resolved["labels"] == critical["labels"]
    assert resolved["endsAt"] == incident[2]["resolved_at"]
    assert json.loads((tmp_path / "alertmanager-firing.json").read_text()) == {}


def test_alertmanager_resends_while_firing_and_stops_after_the_resolution(
    broker: EmbeddedBroker, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    topic, group = unique_name("alerts"), unique_name("notify")
    am = StandIn(free_port())
    env = {"ALERTMANAGER_URL": am.url(), "ALERTMANAGER_RESEND_S": "0.3"}
    firing = _alert("support_chat", "firing", "warning", 1)
    resolved = _alert("support_chat", "resolved", "warning", 2)

    async def scenario() -> int:
        await am.start()
        try:
            await ensure_topics(broker.bootstrap, [TopicSpec(topic, 3)])
            await _produce(broker.bootstrap, topic, [firing])
            notifier = _one(env, broker, topic, group, tmp_path)
            await _run_until(notifier, lambda: len(am.got) >= 4, timeout=60)
            state = json.loads((tmp_path / "alertmanager-firing.json").read_text())
            assert list(state) == [firing["alert_id"]]  # survives a restart
            await _produce(broker.bootstrap, topic, [resolved])
            again = _one(env, broker, topic, group, tmp_path)
            await _run_until(again, lambda: again.stats.delivered == 1, timeout=60, linger=1.0)
            return await _committed(broker, topic, f"{group}-alertmanager")  # its own group
        finally:
            await am.stop()

    assert asyncio.run(asyncio.wait_for(scenario(), 100)) == 2
    posts = [json.loads(r.body) for r in am.got]
    last = max(i for i, p in enumerate(posts) if p[0]["endsAt"] == resolved["resolved_at"])
    assert last == len(posts) - 1  # nothing re-sent after the resolution
    before = posts[:last]
    assert len(before) >= 4  # the first post and re-sends every 0.3 s
    assert all(p == [{**before[0][0], "endsAt": p[0]["endsAt"]}] for p in before)
    ends = [p[0]["endsAt"] for p in before]
    assert ends == sorted(ends) and ends[-1] > ends[0]  # each re-send moves endsAt ahead
