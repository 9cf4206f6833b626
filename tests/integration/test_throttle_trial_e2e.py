"""``spendsentry throttle test`` end to end on the real embedded broker (issue 15, item 6).

The command line publishes a signed test command; a real :class:`ThrottleGuard`
following the throttle topic denies calls of that scope only, says the denial
came from a test, and allows again when the test expires or is released. The
worker is told the test's version on the control topic. A scope held by a real
command is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from _worker_harness import PARTITIONS, read_all, topic_specs, write_topics_file
from aiokafka import AIOKafkaProducer

from spendsentry.actions import ControlAction, ThrottleKeys
from spendsentry.actions.commands import CommandReason, Scope, ThrottleCommand
from spendsentry.broker import EmbeddedBroker, ensure_topics
from spendsentry.client import ThrottleGuard

pytestmark = pytest.mark.integration

KEY = "trial-test-key"


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def trial_topics(
    broker: EmbeddedBroker, unique_name: Callable[[str], str], tmp_path: Path
) -> tuple[Path, dict[str, str]]:
    """A topics file of fresh names, and the names, with the topics created."""
    topics = tmp_path / "topics.toml"
    names = write_topics_file(topics, unique_name("trial"))
    asyncio.run(ensure_topics(broker.bootstrap, topic_specs(names)))
    return topics, names


@contextlib.contextmanager
def synced_guard(bootstrap: str, names: dict[str, str]) -> Iterator[ThrottleGuard]:
    """A running guard on the test's throttle topic that has read it to the end."""
    with ThrottleGuard(bootstrap, ThrottleKeys.of(KEY), topic=names["throttle"]) as guard:
        assert asyncio.run(guard.wait_synced(20))
        yield guard


def throttle(bootstrap: str, topics: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spendsentry", "throttle", *argv, "--broker", bootstrap,
         "--topics", str(topics)],
        env={**os.environ, "SPENDSENTRY_THROTTLE_KEY": KEY},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.timeout(180)
def test_a_test_throttle_denies_its_scope_until_it_expires_or_is_released(
    broker: EmbeddedBroker, trial_topics: tuple[Path, dict[str, str]]
) -> None:
    topics, names = trial_topics
    with synced_guard(broker.bootstrap, names) as guard:
        assert guard.check("support_chat").allowed

        # A block for 15 s on the use case: denied, marked, then back by itself.
        done = throttle(
            broker.bootstrap, topics, "test", "support_chat", "--duration", "15", "--user", "dev"
        )
        assert done.returncode == 0, done.stderr
        assert "support_chat: test block for 15s (version 1" in done.stdout
        wait_until(lambda: not guard.check("support_chat").allowed, 20, "the guard to deny")
        denied = guard.check("support_chat", model="gpt-4o")
        assert denied.action == "deny" and denied.test and "test command" in denied.reason
        assert denied.retry_after_s is not None and 0 < denied.retry_after_s <= 15
        assert guard.check("billing_bot").allowed
        wait_until(lambda: guard.check("support_chat").allowed, 40, "the test to expire")
        assert guard.counts["applied"] == 1

        # A rate limit on one model, listed as a test, lifted by a release.
        done = throttle(
            broker.bootstrap, topics, "test", "support_chat/model=gpt-4o",
            "--action", "limit_rate", "--requests-per-minute", "1", "--duration", "600",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        wait_until(
            lambda: "support_chat/model=gpt-4o" in guard.active(), 20, "the guard to hold it"
        )
        first = guard.check("support_chat", model="gpt-4o")
        assert first.allowed and first.test
        second = guard.check("support_chat", model="gpt-4o")
        assert not second.allowed and second.reason == "rate limit (test command)"
        assert guard.check("support_chat", model="gpt-4o-mini").allowed
        listing = throttle(broker.bootstrap, topics, "list")
        assert listing.returncode == 0, listing.stderr
        assert "support_chat/model=gpt-4o\tv1\tlimit_rate (requests_per_minute=1) TEST" in (
            listing.stdout
        )
        done = throttle(broker.bootstrap, topics, "release", "support_chat/model=gpt-4o")
        assert done.returncode == 0 and "released (version 2" in done.stdout, done.stderr
        wait_until(lambda: guard.check("support_chat", model="gpt-4o").allowed, 20, "the release")

    # The worker is told each test's version (and that it was a test) on ai.control.
    control = [ControlAction.parse(v) for v in asyncio.run(
        read_all(broker.bootstrap, names["control"], PARTITIONS["control"])
    )]  # fmt: skip
    tests = [(a.target_scope, a.version, a.user) for a in control if a.test]
    assert tests[0] == ("support_chat", 1, "dev") and len(tests) == 2
    assert tests[1][:2] == ("support_chat/model=gpt-4o", 1)


@pytest.mark.timeout(120)
def test_a_scope_held_by_a_real_command_is_not_tested(
    broker: EmbeddedBroker, trial_topics: tuple[Path, dict[str, str]]
) -> None:
    topics, names = trial_topics
    now = time.time()
    real = ThrottleCommand.build(
        Scope("billing_bot"), "block", {}, version=4, issued_at=now, expires_at=now + 600,
        reason=CommandReason("ab" * 8, "cost_spike", "cost x4"),
    )  # fmt: skip

    async def publish() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            value = orjson.dumps(real.to_dict(ThrottleKeys.of(KEY)))
            await producer.send_and_wait(names["throttle"], value, key=b"billing_bot")
        finally:
            await producer.stop()

    asyncio.run(publish())
    done = throttle(broker.bootstrap, topics, "test", "billing_bot")
    assert done.returncode == 2 and "holds a real block command (v4)" in done.stderr
    # Another scope of the same use case is fine, and continues from no version.
    done = throttle(broker.bootstrap, topics, "test", "billing_bot/agent=planner")
    assert done.returncode == 0 and "(version 1," in done.stdout, done.stderr
    with synced_guard(broker.bootstrap, names) as guard:
        held = guard.active()
        assert held["billing_bot"]["command_id"] == real.command_id
        assert held["billing_bot/agent=planner"]["test"] is True


@pytest.mark.timeout(120)
def test_a_session_scope_is_tested_listed_and_released_from_the_command_line(
    broker: EmbeddedBroker, trial_topics: tuple[Path, dict[str, str]]
) -> None:
    topics, names = trial_topics
    key = "research/agent=planner/session=run%2F7"
    with synced_guard(broker.bootstrap, names) as guard:
        done = throttle(broker.bootstrap, topics, "test", key, "--duration", "600")
        assert done.returncode == 0, done.stderr

        def stopped() -> bool:
            return not guard.check("research", agent_id="planner", session_id="run/7").allowed

        wait_until(stopped, 20, "the guard to stop the session")
        assert guard.check("research", agent_id="planner", session_id="run/8").allowed
        assert guard.check("research", agent_id="planner").allowed
        listing = throttle(broker.bootstrap, topics, "list", "--json")
        assert listing.returncode == 0, listing.stderr
        [row] = [orjson.loads(line) for line in listing.stdout.splitlines()]
        assert row["scope_key"] == key and row["scope"]["session_id"] == "run/7"
        done = throttle(broker.bootstrap, topics, "release", key)
        assert done.returncode == 0 and f"{key}: released" in done.stdout, done.stderr
        wait_until(lambda: not stopped(), 20, "the release")
