"""Throttling end to end on the real embedded broker.

Usage events go in through :class:`UsageReporter`; the worker (a subprocess)
detects a cost spike and publishes signed throttle commands on the throttle
topic; a :class:`ThrottleGuard` reading that topic denies calls for the use
case; ``spendsentry throttle release`` lifts it (and tells the worker on the
control topic), after which the guard allows again. Also: an unreachable
broker makes the guard fail open or closed as configured, and the reporter
drop and count without blocking.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from spendsentry.actions import ThrottleKeys, verify
from spendsentry.broker import EmbeddedBroker, free_port
from spendsentry.client import ThrottleGuard, UsageReporter, read_latest
from spendsentry.contracts import validate

pytestmark = pytest.mark.integration

KEY = "e2e-test-key"
POLICY = """
[use_cases.support_chat]
owner = "#support"
auto_throttle = "on"
cooldown_s = 0
max_duration_s = 3600
[[use_cases.support_chat.ladder]]
at = "warning"
action = "route_model"
target_model = "gpt-4o-mini"
[[use_cases.support_chat.ladder]]
at = "critical"
action = "block"
"""


def write_topics(path: Path, prefix: str) -> dict[str, str]:
    names = {
        logical: f"{prefix}.{logical}"
        for logical in ("usage", "outcomes", "alerts", "throttle", "deadletter", "control")
    }
    parts = {"usage": 2, "outcomes": 2, "alerts": 1, "throttle": 2, "deadletter": 1, "control": 1}
    lines = []
    for logical, name in names.items():
        lines += [f"[topics.{logical}]", f'name = "{name}"', f"partitions = {parts[logical]}"]
        if logical == "throttle":
            lines.append('config = { "cleanup.policy" = "compact" }')
        lines.append("")
    path.write_text("\n".join(lines))
    return names


def spike_traffic(start: float, minutes: int, seed: int = 3) -> list[dict[str, Any]]:
    """Steady support_chat calls; a 10x burst from minute 100 on, still going at the end."""
    rng = random.Random(seed)
    events = []
    for m in range(minutes):
        k = 10 if m >= 100 else 1
        for i in range(20 * k):
            events.append(
                {
                    "event_id": f"e{m}-{i}",
                    "ts": round(start + m * 60 + rng.uniform(0, 59), 3),
                    "use_case": "support_chat",
                    "model": "gpt-4o",
                    "input_tokens": rng.randint(500, 1500),
                    "output_tokens": 200,
                    "cost_usd": round(0.001 * rng.uniform(0.8, 1.2), 6),
                }
            )
    return sorted(events, key=lambda e: e["ts"])


class Worker:
    """``python -m spendsentry worker`` in its own process group."""

    def __init__(self, bootstrap: str, tmp: Path, topics: Path, group: str) -> None:
        self.port = free_port()
        (tmp / "policies").mkdir()
        (tmp / "policies" / "p.toml").write_text(POLICY)
        self.log = tmp / "worker.log"
        self._log = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        argv = [
            sys.executable, "-m", "spendsentry", "worker", "--broker", bootstrap,
            "--web-port", str(self.port), "--topics", str(topics), "--group", group,
            "--state-dir", str(tmp / "state"), "--policies", str(tmp / "policies"),
            "--idle-partition", "2", "--snapshot-interval", "1",
            "--session-timeout-ms", "6000",
        ]  # fmt: skip
        env = {**os.environ, "SPENDSENTRY_THROTTLE_KEY": KEY}
        self.proc = subprocess.Popen(
            argv, cwd=tmp, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

    def status(self) -> dict[str, Any] | None:
        try:
            url = f"http://127.0.0.1:{self.port}/status"
            with urllib.request.urlopen(url, timeout=5) as r:
                doc: dict[str, Any] = json.loads(r.read())
                return doc
        except OSError:
            return None

    def wait_for(self, check: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"worker exited:\n{self.tail()}"
            status = self.status()
            if status is not None and check(status):
                return status
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}; status={status}\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self, grace: float = 20.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture
def worker_setup(
    broker: EmbeddedBroker, unique_name: Callable[[str], str], tmp_path: Path
) -> Iterator[tuple[Worker, dict[str, str], Path]]:
    names = write_topics(tmp_path / "topics.toml", unique_name("t"))
    worker = Worker(broker.bootstrap, tmp_path, tmp_path / "topics.toml", unique_name("g"))
    try:
        yield worker, names, tmp_path / "topics.toml"
    finally:
        worker.stop()


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.timeout(180)
def test_incident_throttles_the_gateway_until_an_operator_releases_it(
    broker: EmbeddedBroker, worker_setup: tuple[Worker, dict[str, str], Path]
) -> None:
    worker, names, topics_file = worker_setup
    # Topics are created by the worker; group joined once it serves 5 partitions.
    worker.wait_for(lambda s: len(s["assignment"]) == 5, 90, "the group join")
    start = float(int(time.time() // 60 * 60) - 120 * 60)
    events = spike_traffic(start, 112)
    reporter = UsageReporter(broker.bootstrap, topic=names["usage"], batch_size=100)
    reporter.start_background()
    try:
        assert all(reporter.report(e) for e in events)
        wait_until(lambda: reporter.counts["sent"] == len(events), 30, "the reporter to send")
    finally:
        reporter.close()
    assert reporter.counts["dropped_full"] == reporter.counts["dropped_send_failed"] == 0
    status = worker.wait_for(
        # The worker reads a backlog two hours behind the wall clock: it publishes
        # only the latest command of the scope (the block, version 2), not the
        # route_model a live run would have sent first and the block replaced.
        lambda s: s["accepted"] == len(events) and s["throttle"]["published"] >= 1,
        60,
        "the worker to accept every reported event and throttle",
    )
    assert status["throttle"]["signing_key"] is True
    assert [c["action"] for c in status["throttle"]["active"]] == ["block"]

    guard = ThrottleGuard(broker.bootstrap, ThrottleKeys.of(KEY), topic=names["throttle"])
    with guard:
        assert asyncio.run(guard.wait_synced(20))
        wait_until(lambda: not guard.check("support_chat").allowed, 20, "the guard to deny")
        denied = guard.check("support_chat", model="gpt-4o")
        assert denied.action == "deny" and denied.retry_after_s and denied.retry_after_s > 60
        assert guard.check("another_use_case").allowed
        assert guard.counts["applied"] >= 1 and guard.counts["bad_signature"] == 0

        # Every command on the topic keeps to the contract and verifies.
        latest = asyncio.run(read_latest(broker.bootstrap, names["throttle"], keys=guard.keys))
        doc, verified = latest["support_chat"]
        assert verified and doc["action"] == "block" and validate("throttle-command", doc) == []
        assert verify(doc, [KEY]) and doc["version"] == 2
        # On the wall clock for the gateway; the event time it was issued at beside it.
        assert doc["event_time_issued_at"] < doc["issued_at"]

        listing = subprocess.run(
            [sys.executable, "-m", "spendsentry", "throttle", "list", "--broker",
             broker.bootstrap, "--topics", str(topics_file)],
            env={**os.environ, "SPENDSENTRY_THROTTLE_KEY": KEY},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert listing.returncode == 0, listing.stderr
        assert "support_chat" in listing.stdout and "block" in listing.stdout
        assert "verified" in listing.stdout and KEY not in listing.stdout + listing.stderr

        release = subprocess.run(
            [sys.executable, "-m", "spendsentry", "throttle", "release", "support_chat",
             "--broker", broker.bootstrap, "--topics", str(topics_file), "--reason", "test"],
            env={**os.environ, "SPENDSENTRY_THROTTLE_KEY": KEY},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert release.returncode == 0, release.stderr
        assert "released" in release.stdout
        wait_until(lambda: guard.check("support_chat").allowed, 20, "the guard to allow again")
        assert guard.counts["released"] == 1
    # The worker took the release from the control topic: nothing active any more.
    worker.wait_for(lambda s: s["throttle"]["active"] == [], 20, "the worker to see the release")


def test_release_without_a_key_is_refused(broker: EmbeddedBroker) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDSENTRY_THROTTLE_KEY")}
    done = subprocess.run(
        [sys.executable, "-m", "spendsentry", "throttle", "release", "support_chat",
         "--broker", broker.bootstrap],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "no signing key" in done.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fail_open", [True, False])
def test_unreachable_broker_fails_open_or_closed(fail_open: bool) -> None:
    guard = ThrottleGuard(
        f"127.0.0.1:{free_port()}", ThrottleKeys.of(KEY), fail_open=fail_open, stale_after_s=1.0
    )
    with guard:
        for _ in range(3):
            decision = guard.check("support_chat")
            assert decision.allowed is fail_open
            assert "unavailable" in decision.reason
            time.sleep(0.2)
    assert guard.counts["unavailable"] == 3


@pytest.mark.timeout(60)
def test_reporter_never_blocks_and_counts_drops_when_the_broker_is_down() -> None:
    reporter = UsageReporter(f"127.0.0.1:{free_port()}", max_buffer=10, batch_size=5)
    reporter.start_background()
    try:
        started = time.perf_counter()
        results = [
            reporter.report({"event_id": f"e{i}", "ts": time.time(), "use_case": "u"})
            for i in range(50)
        ]
        elapsed = time.perf_counter() - started
        assert not reporter.report({"no": "use case"})
        assert not reporter.report({"use_case": "u", "bad": object()})
    finally:
        reporter.close(flush_timeout_s=1.0)
    assert elapsed < 0.5, f"report() blocked: {elapsed:.3f}s for 50 events"
    assert results.count(True) == 10 and reporter.counts["dropped_full"] == 40
    assert reporter.counts["dropped_invalid"] == 2
    assert reporter.counts["sent"] == 0 and reporter.counts["dropped_unsent"] == 10


@pytest.mark.timeout(120)
def test_commands_of_other_workers_and_operators_count_as_in_force(
    broker: EmbeddedBroker, worker_setup: tuple[Worker, dict[str, str], Path]
) -> None:
    from aiokafka import AIOKafkaProducer

    from spendsentry.actions.commands import CommandReason, Scope, ThrottleCommand

    worker, names, _ = worker_setup
    worker.wait_for(lambda s: len(s["assignment"]) == 5, 90, "the group join")
    now = time.time()

    def signed(version: int, action: str, params: dict[str, Any]) -> bytes:
        cmd = ThrottleCommand.build(
            Scope("billing_bot", model="gpt-4o"), action, params, version=version,
            issued_at=now - 5 + version, expires_at=now + 600,
            reason=CommandReason(None, None, "operator"),
        )  # fmt: skip
        return json.dumps(cmd.to_dict(ThrottleKeys.of(KEY))).encode()

    async def publish(*values: bytes) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait(
                    names["throttle"], value, key=b"billing_bot/model=gpt-4o"
                )
        finally:
            await producer.stop()

    forged = json.dumps({"scope_key": "x", "version": 9, "signature": "00"}).encode()
    asyncio.run(publish(signed(1, "limit_rate", {"requests_per_minute": 5}), forged))
    status = worker.wait_for(
        lambda s: s["throttle"]["in_force"] == 1, 30, "the operator's command to count"
    )
    [shown] = status["throttle"]["elsewhere"]
    assert shown["scope_key"] == "billing_bot/model=gpt-4o" and shown["action"] == "limit_rate"
    assert "signature" not in shown and status["throttle"]["active"] == []
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics", timeout=5) as r:
        assert "spendsentry_active_throttles 1.0" in r.read().decode()
    # The release lifts it; the forged record never counted.
    asyncio.run(publish(signed(2, "release", {})))
    status = worker.wait_for(lambda s: s["throttle"]["in_force"] == 0, 30, "the release")
    assert status["throttle"]["elsewhere"] == []
