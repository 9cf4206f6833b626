"""POST /slack/interactions: only signed, fresh Slack clicks become control actions.

Each test runs the real aiohttp handler on a loopback port (aiohttp's TestServer,
or an AppRunner in its own loop thread when clients must be truly concurrent)
and a real HTTP client; ``publish`` is an in-memory list standing in for the
Kafka producer, except in the concurrent-copies test, which counts the records
a real producer put on the session's embedded broker (the integration test
covers the worker's own producer).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spendsentry.broker import TopicSpec, ensure_topics
from spendsentry.contracts import SCHEMA_NAMES, validate
from spendsentry.messages.control import ControlAction
from spendsentry.slack.blocks import button_value
from spendsentry.slack.interactions import (
    MAX_BODY_BYTES,
    PATH,
    kafka_publisher,
    register,
    register_from_env,
    sign,
)

pytestmark = pytest.mark.timeout(30)

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
NOW = 1793610000.0
ALERT = {
    "alert_id": "63412823acbdd60e66b2b4c7",
    "use_case": "support_chat",
    "kind": "cost_spike",
    "action": {"type": "throttle"},
}


def click(action_id: str = "spendsentry_ack", *, value: str | None = None, **extra: Any) -> bytes:
    payload = {
        "type": "block_actions",
        "user": {"id": "U024BE7LH", "username": "amy", "name": "amy"},
        "actions": [
            {"action_id": action_id, "value": button_value(ALERT) if value is None else value}
        ],
        **extra,
    }
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


def signed(body: bytes, *, secret: str = SECRET, ts: float = NOW) -> dict[str, str]:
    stamp = str(int(ts))
    return {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": sign(secret, stamp, body),
        "Content-Type": "application/x-www-form-urlencoded",
    }


Scenario = Callable[[TestClient, list[tuple[bytes, dict[str, Any]]]], Awaitable[None]]


def run(scenario: Scenario, *, fail_publish: bool = False) -> list[tuple[bytes, dict[str, Any]]]:
    published: list[tuple[bytes, dict[str, Any]]] = []

    async def publish(key: bytes, value: bytes) -> None:
        if fail_publish:
            raise ConnectionError("broker unreachable")
        published.append((key, json.loads(value)))

    async def main() -> None:
        app = web.Application()
        register(app, publish, SECRET, clock=lambda: NOW)
        async with TestServer(app, host="127.0.0.1") as server, TestClient(server) as client:
            await scenario(client, published)

    asyncio.run(main())
    return published


@pytest.mark.parametrize(
    ("action_id", "action"),
    [
        ("spendsentry_ack", "ack"),
        ("spendsentry_release", "release"),
        ("spendsentry_snooze", "snooze"),
        ("spendsentry_expected_change", "expected_change"),
        ("spendsentry_false_alarm", "false_alarm"),
    ],
)
def test_a_signed_click_publishes_one_control_action(action_id: str, action: str) -> None:
    async def scenario(client: TestClient, published: list[Any]) -> None:
        body = click(action_id)
        resp = await client.post(PATH, data=body, headers=signed(body))
        assert resp.status == 200, await resp.text()

    published = run(scenario)
    assert len(published) == 1
    key, msg = published[0]
    assert key == b"support_chat"
    assert msg == {
        "action": action,
        "alert_id": "63412823acbdd60e66b2b4c7",
        "use_case": "support_chat",
        "kind": "cost_spike",
        "scope_key": None,
        "until": "2026-11-02T10:00:00.000Z" if action == "snooze" else None,
        "user": "U024BE7LH",
        "at": "2026-11-02T09:00:00.000Z",
    }
    if "control-action" in SCHEMA_NAMES:  # the engine side's contract
        assert validate("control-action", msg) == []


@pytest.mark.parametrize("action_id", ["spendsentry_expected_change", "spendsentry_false_alarm"])
def test_a_feedback_click_needs_the_signature_like_any_other(action_id: str) -> None:
    async def scenario(client: TestClient, published: list[Any]) -> None:
        body = click(action_id)
        forged = signed(body, secret="not-the-secret")
        assert (await client.post(PATH, data=body, headers=forged)).status == 401
        assert (await client.post(PATH, data=body)).status == 401
        resp = await client.post(PATH, data=body, headers=signed(body))
        assert resp.status == 200, await resp.text()

    published = run(scenario)
    assert len(published) == 1  # only the signed click
    action = ControlAction.parse(published[0][1])
    assert action.is_feedback and action.kind == "cost_spike"


def _rejected(make: Callable[[bytes], tuple[bytes, dict[str, str]]], status: int) -> None:
    async def scenario(client: TestClient, published: list[Any]) -> None:
        body, headers = make(click("spendsentry_release"))
        resp = await client.post(PATH, data=body, headers=headers)
        assert resp.status == status, await resp.text()

    assert run(scenario) == []  # a forged request changes nothing


def test_missing_signature_is_401() -> None:
    _rejected(lambda body: (body, {}), 401)
    _rejected(lambda body: (body, {"X-Slack-Request-Timestamp": str(int(NOW))}), 401)


def test_wrong_signature_is_401() -> None:
    _rejected(lambda body: (body, signed(body, secret="someone-else")), 401)
    # A valid signature of another body: the payload was tampered with.
    _rejected(lambda body: (body + b"x", signed(body)), 401)
    _rejected(lambda body: (body, {**signed(body), "X-Slack-Signature": "v0=nothex"}), 401)


def test_stale_or_garbage_timestamp_is_401() -> None:
    _rejected(lambda body: (body, signed(body, ts=NOW - 301)), 401)
    _rejected(lambda body: (body, signed(body, ts=NOW + 301)), 401)
    _rejected(lambda body: (body, {**signed(body), "X-Slack-Request-Timestamp": "soon"}), 401)


def test_oversized_body_is_413_with_or_without_content_length() -> None:
    big = b"payload=" + b"x" * (MAX_BODY_BYTES + 1)

    async def chunks() -> Any:
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    async def scenario(client: TestClient, published: list[Any]) -> None:
        resp = await client.post(PATH, data=big, headers=signed(big))
        assert resp.status == 413
        # Chunked: no Content-Length up front, so the handler counts as it reads.
        resp = await client.post(PATH, data=chunks(), headers=signed(big))
        assert resp.status == 413

    assert run(scenario) == []


def test_a_signed_but_malformed_click_is_400_with_the_reason() -> None:
    cases = {
        b"payload=%7Bnot json": "payload is not JSON",
        click(value="nope"): "button value is not JSON",
        click(value=json.dumps({"alert_id": "ab", "use_case": "u", "kind": "nope"})): "kind",
        click(value=json.dumps({"use_case": "u", "kind": "cost_spike"})): "alert_id",
        click(user=None): "no user",
    }

    async def scenario(client: TestClient, published: list[Any]) -> None:
        for body, reason in cases.items():
            resp = await client.post(PATH, data=body, headers=signed(body))
            assert resp.status == 400
            assert reason in await resp.text()

    assert run(scenario) == []


def test_other_interactions_are_answered_and_ignored() -> None:
    async def scenario(client: TestClient, published: list[Any]) -> None:
        for body in (click("someone_elses_button"), click(type="view_submission")):
            resp = await client.post(PATH, data=body, headers=signed(body))
            assert resp.status == 200

    assert run(scenario) == []


def test_a_replayed_request_is_not_published_twice() -> None:
    async def scenario(client: TestClient, published: list[Any]) -> None:
        body = click("spendsentry_snooze")
        headers = signed(body)
        for _ in range(3):
            resp = await client.post(PATH, data=body, headers=headers)
            assert resp.status == 200

    assert len(run(scenario)) == 1


def test_publish_failure_is_503_so_the_user_sees_it_and_can_click_again() -> None:
    async def scenario(client: TestClient, published: list[Any]) -> None:
        body = click()
        resp = await client.post(PATH, data=body, headers=signed(body))
        assert resp.status == 503
        assert "try again" in await resp.text()

    run(scenario, fail_publish=True)


def test_no_route_without_a_signing_secret() -> None:
    async def main() -> tuple[int, int]:
        async def publish(key: bytes, value: bytes) -> None:
            raise AssertionError("must not publish")

        without, with_secret = web.Application(), web.Application()
        assert register_from_env(without, lambda: None, "ai.control", env={}) is None
        handler = register_from_env(
            with_secret, lambda: None, "ai.control", env={"SLACK_SIGNING_SECRET": SECRET}
        )
        assert handler is not None
        statuses = []
        for app in (without, with_secret):
            async with TestServer(app, host="127.0.0.1") as server, TestClient(server) as client:
                resp = await client.post(PATH, data=b"payload=%7B%7D")
                statuses.append(resp.status)
        return statuses[0], statuses[1]

    assert asyncio.run(main()) == (404, 401)


# -- attacks: concurrent replays, undecodable bodies, random bytes ---------------------


class _Served:
    """The module's route on a real aiohttp server on 127.0.0.1, in its own loop thread.

    Clients in other threads then hit it truly concurrently, as Slack's
    retries or an attacker's copies would.
    """

    def __init__(self, publish: Callable[[bytes, bytes], Awaitable[None]], clock: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._publish = publish
        self._clock = clock
        self.port = 0

    def call(self, coro: Awaitable[Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    async def _start(self) -> None:
        app = web.Application()
        register(app, self._publish, SECRET, clock=self._clock)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def __enter__(self) -> _Served:
        self.thread.start()
        self.call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.call(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def post(self, body: bytes, headers: dict[str, str]) -> int:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{PATH}", data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)


def _tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_eight_concurrent_copies_of_one_signed_request_give_one_control_record(
    broker: Any, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("control")
    asyncio.run(ensure_topics(broker.bootstrap, [TopicSpec(topic, 1)]))
    producer: list[AIOKafkaProducer] = []

    async def start_producer() -> None:
        producer.append(AIOKafkaProducer(bootstrap_servers=broker.bootstrap))
        await producer[0].start()

    copies = 8
    body = click("spendsentry_release")
    headers = signed(body, ts=time.time())
    barrier = threading.Barrier(copies)

    with _Served(kafka_publisher(lambda: producer[0], topic), time.time) as served:
        served.call(start_producer())
        try:

            def one_copy(_: int) -> int:
                barrier.wait(10)
                return served.post(body, headers)

            with ThreadPoolExecutor(copies) as pool:
                statuses = list(pool.map(one_copy, range(copies)))
        finally:
            served.call(producer[0].stop())

    assert statuses == [200] * copies
    assert asyncio.run(_records_on(broker.bootstrap, topic)) == 1


async def _records_on(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        return int((await consumer.end_offsets([tp]))[tp])
    finally:
        await consumer.stop()


def test_in_flight_copies_share_the_outcome_of_the_first_so_a_failure_is_retried() -> None:
    # A copy that arrives while the first is being published must not answer
    # 200 when that publish then fails: Slack would show a click that did nothing.
    release = asyncio.Event()
    calls: list[bytes] = []

    async def publish(key: bytes, value: bytes) -> None:
        calls.append(value)
        await release.wait()
        if len(calls) == 1:
            raise ConnectionError("broker unreachable")

    async def main() -> list[int]:
        app = web.Application()
        register(app, publish, SECRET, clock=lambda: NOW)
        async with TestServer(app, host="127.0.0.1") as server, TestClient(server) as client:
            body = click()
            headers = signed(body)
            posts = [asyncio.create_task(client.post(PATH, data=body, headers=headers))]
            while not calls:
                await asyncio.sleep(0.01)
            posts.append(asyncio.create_task(client.post(PATH, data=body, headers=headers)))
            await asyncio.sleep(0.1)
            release.set()
            statuses = [(await p).status for p in posts]
            # The failed request was forgotten: Slack's retry of it goes through.
            retry = await client.post(PATH, data=body, headers=headers)
            return [*statuses, retry.status]

    assert asyncio.run(asyncio.wait_for(main(), 20)) == [503, 503, 200]
    assert len(calls) == 2


INVALID_UTF8 = b"payload=%7B%7D\xff\xfe\x80"


def test_an_undecodable_body_with_a_plausible_signature_is_401_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    plausible = {**signed(b"something else"), "Content-Type": "application/octet-stream"}
    _rejected(lambda body: (INVALID_UTF8, plausible), 401)
    assert _tracebacks(caplog) == []


def test_an_undecodable_body_with_a_valid_signature_is_400_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario(client: TestClient, published: list[Any]) -> None:
        resp = await client.post(PATH, data=INVALID_UTF8, headers=signed(INVALID_UTF8))
        assert resp.status == 400
        assert "not form-encoded UTF-8" in await resp.text()

    assert run(scenario) == []
    assert _tracebacks(caplog) == []


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[tuple[_Served, list[bytes]]]:
    published: list[bytes] = []

    async def publish(key: bytes, value: bytes) -> None:
        published.append(value)

    with _Served(publish, lambda: NOW) as served:
        yield served, published


_FORMISH = st.lists(
    st.sampled_from([b"payload=", b"&", b"=", b"%", b"%7B", b"%ff", b"\xff", b"\x00", b"+"])
    | st.binary(max_size=40),
    max_size=12,
).map(b"".join)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.binary(max_size=2048) | _FORMISH, content_type=st.sampled_from(["form", "none"]))
def test_fuzz_any_signed_body_is_never_a_server_error(
    fuzz_server: tuple[_Served, list[bytes]],
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    content_type: str,
) -> None:
    served, _ = fuzz_server
    headers = signed(body)
    if content_type == "none":
        del headers["Content-Type"]
    caplog.clear()
    status = served.post(body, headers)
    assert status < 500, status
    assert status in (200, 400, 413)
    assert _tracebacks(caplog) == []


def test_the_release_button_of_a_use_case_with_a_slash_releases_that_use_case() -> None:
    # Issue 12, item 5: the control message of this click was dead-lettered
    # ("cannot release: scope key ... is not use_case[/model=...]").
    from spendsentry.actions.commands import Scope
    from spendsentry.engine import Engine
    from spendsentry.policy import LadderStep, Policy, PolicySet
    from spendsentry.timeutil import format_ts

    name = "support_chat/model=gpt-4o"
    alert = {**ALERT, "use_case": name}

    async def scenario(client: TestClient, published: list[Any]) -> None:
        body = click("spendsentry_release", value=button_value(alert))
        resp = await client.post(PATH, data=body, headers=signed(body))
        assert resp.status == 200, await resp.text()

    [(key, message)] = run(scenario)
    assert key == name.encode() and validate("control-action", message) == []
    policy = Policy(name, auto_throttle="on", ladder=(LadderStep("warning", "block"),))
    engine = Engine(PolicySet([policy]))
    from spendsentry.alerts import Alert

    firing = Alert(
        ALERT["alert_id"],
        "cost_spike",
        name,
        "warning",
        "firing",
        NOW - 60,
        NOW - 360,
        "x",
        {},
        2.0,
    )
    block = engine.planner.plan(firing, policy)
    assert block is not None and block.scope_key == "support_chat%2Fmodel%3Dgpt-4o"
    [release] = engine.apply_control({**message, "at": format_ts(NOW)}).commands
    assert release.action == "release" and release.scope == Scope(name)


def test_a_click_with_a_malformed_scope_key_is_400() -> None:
    value = json.dumps({**json.loads(button_value(ALERT)), "scope_key": "a/x=y"})

    async def scenario(client: TestClient, published: list[Any]) -> None:
        body = click("spendsentry_release", value=value)
        resp = await client.post(PATH, data=body, headers=signed(body))
        assert resp.status == 400 and "scope_key" in await resp.text()

    assert run(scenario) == []
