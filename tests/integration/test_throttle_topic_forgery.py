"""Forged records on the throttle topic, against the real worker and CLI (issue 12, items 3, 5).

Anyone who can write to the throttle topic can put anything there. Before the
fix a forged ``{"scope_key": ..., "version": 2^64 - 1}`` made the worker's next
command unserializable (it exited, and /status was a 500 after a restart),
50k junk scope keys went into every engine snapshot, and a forged ``release``
hid a live block from ``spendsentry throttle list`` and ``release``. Also:
use cases whose names hold ``/`` or ``=`` can be listed and released.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest
from _worker_harness import WorkerProcess, topic_specs, write_topics_file
from aiokafka import AIOKafkaProducer

from spendsentry.actions import ThrottleKeys
from spendsentry.actions.commands import CommandReason, Scope, ThrottleCommand
from spendsentry.broker import EmbeddedBroker, ensure_topics
from spendsentry.client import read_commands

pytestmark = pytest.mark.integration

KEY = "trust-test-key"
KEYS = ThrottleKeys.of(KEY)
#: The issue's record: no signature, a version orjson cannot write plus one.
HUGE = b'{"scope_key":"support_chat","version":18446744073709551615}'
POLICY = """
[use_cases.support_chat]
auto_throttle = "on"
cooldown_s = 0
max_duration_s = 3600
[[use_cases.support_chat.ladder]]
at = "warning"
action = "block"
"""


def command(scope: Scope, action: str = "block", version: int = 1, key: str = KEY) -> bytes:
    now = time.time()
    cmd = ThrottleCommand.build(
        scope, action, {}, version=version, issued_at=now - 60, expires_at=now + 3600,
        reason=CommandReason(None, None, "test"),
    )  # fmt: skip
    return orjson.dumps(cmd.to_dict(ThrottleKeys.of(key)))


async def publish(bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, enable_idempotence=False)
    await producer.start()
    try:
        for key, value in records:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


def setup_topics(broker: EmbeddedBroker, tmp: Path, prefix: str) -> dict[str, str]:
    names = write_topics_file(tmp / "topics.toml", prefix)
    asyncio.run(ensure_topics(broker.bootstrap, topic_specs(names)))
    return names


def cli(broker: EmbeddedBroker, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "spendsentry", "throttle", *args]
    argv += ["--broker", broker.bootstrap, "--topics", str(tmp / "topics.toml")]
    env = {**os.environ, "SPENDSENTRY_THROTTLE_KEY": KEY}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.timeout(240)
def test_the_cli_lists_and_releases_verified_commands_only(
    broker: EmbeddedBroker, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    names = setup_topics(broker, tmp_path, unique_name("trust"))
    victim = Scope("victim")
    slashed = Scope("team/a=b")
    impostor = Scope("support_chat/model=gpt-4o")  # a use case named like a scope key
    narrow = Scope("support_chat", model="gpt-4o")
    forged_release = orjson.loads(command(victim, "release", version=9, key="attacker"))
    records = [
        (b"victim", command(victim)),
        (b"victim", orjson.dumps(forged_release)),
        (b"victim", HUGE.replace(b"support_chat", b"victim")),
        (slashed.key.encode(), command(slashed)),
        (impostor.key.encode(), command(impostor)),
        (narrow.key.encode(), command(narrow)),
    ]
    asyncio.run(publish(broker.bootstrap, names["throttle"], records))

    listing = cli(broker, tmp_path, "list")
    assert listing.returncode == 0, listing.stderr
    rows = {line.split("\t")[0]: line for line in listing.stdout.splitlines()}
    assert set(rows) == {"victim", "team%2Fa%3Db", "support_chat%2Fmodel%3Dgpt-4o", narrow.key}
    assert "\tblock\t" in rows["victim"] and "verified" in rows["victim"]
    assert "bad_signature=1" in listing.stderr and "unsigned=1" in listing.stderr
    only = cli(broker, tmp_path, "list", "team/a=b")
    assert only.returncode == 0 and only.stdout.split("\t")[0] == "team%2Fa%3Db"

    released = cli(broker, tmp_path, "release", "victim")
    assert released.returncode == 0, released.stderr
    assert "victim: released (version 2" in released.stdout

    assert cli(broker, tmp_path, "release", "team/a=b").returncode == 0
    ambiguous = cli(broker, tmp_path, "release", "support_chat/model=gpt-4o")
    assert ambiguous.returncode == 2 and "--use-case" in ambiguous.stderr
    as_name = cli(broker, tmp_path, "release", "support_chat/model=gpt-4o", "--use-case")
    assert as_name.returncode == 0 and "support_chat%2Fmodel%3Dgpt-4o: released" in as_name.stdout
    as_key = cli(broker, tmp_path, "release", "support_chat/model=gpt-4o")
    assert as_key.returncode == 0 and "support_chat/model=gpt-4o: released" in as_key.stdout

    found = asyncio.run(read_commands(broker.bootstrap, names["throttle"], keys=KEYS))
    assert {k: d["action"] for k, d in found.latest.items()} == dict.fromkeys(rows, "release")
    assert found.latest["victim"]["version"] == 2
    # The control messages name the scopes the releases lifted.
    control = asyncio.run(read_commands_raw(broker.bootstrap, names["control"]))
    assert [(c["use_case"], c["scope_key"]) for c in control] == [
        ("victim", "victim"),
        ("team/a=b", "team%2Fa%3Db"),
        ("support_chat/model=gpt-4o", "support_chat%2Fmodel%3Dgpt-4o"),
        ("support_chat", "support_chat/model=gpt-4o"),
    ]


async def read_commands_raw(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    from _worker_harness import read_all

    return [orjson.loads(v) for v in await read_all(bootstrap, topic, 1)]


def spike(start: float, minutes: int) -> list[dict[str, Any]]:
    """support_chat at 20 calls a minute, ten times that from minute 100 on."""
    events = []
    for m in range(minutes):
        for i in range(200 if m >= 100 else 20):
            events.append(
                {
                    "event_id": f"e{m}-{i}", "ts": start + m * 60 + i * 0.25,
                    "use_case": "support_chat", "model": "gpt-4o", "input_tokens": 1000,
                    "output_tokens": 200, "cost_usd": 0.001,
                }
            )  # fmt: skip
    return events


@pytest.mark.timeout(300)
def test_the_worker_starts_and_throttles_with_forged_records_on_the_topic(
    broker: EmbeddedBroker, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    names = setup_topics(broker, tmp_path, unique_name("trust"))
    junk = [
        (f"junk-{i}".encode(), b'{"scope_key":"junk-%d","version":1}' % i) for i in range(50_000)
    ]
    records = [(b"support_chat", HUGE), *junk]
    asyncio.run(publish(broker.bootstrap, names["throttle"], records))
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.toml").write_text(POLICY)

    def start() -> WorkerProcess:
        return WorkerProcess(
            broker.bootstrap, tmp_path / "topics.toml", tmp_path / "state", unique_name("g"),
            policies=tmp_path / "policies", env={"SPENDSENTRY_THROTTLE_KEY": KEY},
        )  # fmt: skip

    worker = start()
    try:
        status = worker.wait_for(lambda s: len(s["assignment"]) >= 6, 120, "the group join")
        assert status["throttle"]["rejected_records"] == {"unsigned": 50_001}
        assert b"records that are not verified commands: 50001 ignored" in worker.output()
        metrics = worker.get("/metrics").decode()
        assert 'spendsentry_throttle_records_rejected_total{reason="unsigned"} 50001.0' in metrics
        events = spike(float(int(time.time() // 60 * 60) - 120 * 60), 112)
        usage = [
            (b"support_chat", orjson.dumps(events[i : i + 100])) for i in range(0, len(events), 100)
        ]
        asyncio.run(publish(broker.bootstrap, names["usage"], usage))
        status = worker.wait_for(
            lambda s: s["accepted"] == len(events) and s["throttle"]["published"] >= 1
            and s["last_snapshot_bytes"] > 0,
            120,
            "the worker to throttle",
        )  # fmt: skip
        # Junk never entered the engines: snapshots stay the size of real state.
        assert status["last_snapshot_bytes"] < 200_000, status["last_snapshot_bytes"]
    finally:
        assert worker.stop() == 0, worker.tail()
    found = asyncio.run(read_commands(broker.bootstrap, names["throttle"], keys=KEYS))
    assert found.latest["support_chat"]["version"] == 1
    assert found.latest["support_chat"]["action"] == "block"

    again = start()  # the forged records are still there: /status still answers
    try:
        status = again.wait_for(lambda s: len(s["assignment"]) >= 6, 120, "the restart")
        assert status["throttle"]["rejected_records"] == {"unsigned": 50_001}
    finally:
        assert again.stop() == 0, again.tail()
