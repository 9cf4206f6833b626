"""POST /slack/interactions: only signed, fresh Slack clicks become control actions.

Each test runs the real aiohttp handler on a loopback port (aiohttp's TestServer)
and a real HTTP client; ``publish`` is an in-memory list standing in for the
Kafka producer (the integration test covers the worker's real producer).
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from spendsentry.contracts import SCHEMA_NAMES, validate
from spendsentry.slack.blocks import button_value
from spendsentry.slack.interactions import (
    MAX_BODY_BYTES,
    PATH,
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
