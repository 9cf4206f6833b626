"""The embedded Tansu broker: start/stop, topic creation, a real produce/consume
round trip, and the ``spendsentry broker`` command's lifecycle.

Everything binds 127.0.0.1. Consumer groups get a 6 s session timeout because
Tansu holds a new group's JoinGroup answer for half the session timeout (5 s at
aiokafka's 10 s default), and every group id is unique because aiokafka skips
LeaveGroup in Tansu's generation 0, so a reused group waits for the ghost
member's session to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from spendsentry.broker import BrokerError, EmbeddedBroker, TopicSpec, ensure_topics, free_port

pytestmark = pytest.mark.integration

GROUP_SETTINGS: dict[str, Any] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def _alive(pid: int) -> bool:
    """Whether *pid* is a live process (a zombie counts as gone: it runs nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return not sys.platform.startswith("linux")
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    """Process ids whose parent is *pid*, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state, ppid, ...
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


async def _roundtrip_one(bootstrap: str, topic: str) -> bytes:
    """Produce one message to *topic* and read it back without a consumer group."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b'{"hello": "tansu"}', key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", request_timeout_ms=5000
    )
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), timeout=10)
    finally:
        await consumer.stop()
    assert message.value is not None
    return message.value


@pytest.mark.timeout(30)
def test_ensure_topics_creates_partitions_and_configs(
    broker: EmbeddedBroker, unique_name: Callable[[str], str]
) -> None:
    plain, compacted = unique_name("plain"), unique_name("compacted")
    specs = [TopicSpec(plain, 3), TopicSpec(compacted, 2, {"cleanup.policy": "compact"})]

    async def scenario() -> tuple[list[Any], dict[str, Any]]:
        await ensure_topics(broker.bootstrap, specs)
        await ensure_topics(broker.bootstrap, specs)  # existing topics are fine
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            described = await admin.describe_topics([plain, compacted])
            configs = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, compacted)]
            )
        finally:
            await admin.close()
        return described, configs[0].to_object()

    described, configs = asyncio.run(asyncio.wait_for(scenario(), timeout=20))
    assert {t["topic"]: len(t["partitions"]) for t in described} == {plain: 3, compacted: 2}
    entries = configs["resources"][0]["config_entries"]
    assert {e["config_names"]: e["config_value"] for e in entries}["cleanup.policy"] == "compact"


@pytest.mark.timeout(60)
def test_produce_and_consume_1000_json_messages_with_a_group(
    broker: EmbeddedBroker, unique_name: Callable[[str], str]
) -> None:
    topic, group = unique_name("usage"), unique_name("group")
    count = 1000

    async def scenario() -> tuple[list[tuple[str, int, int, dict[str, Any]]], int]:
        await ensure_topics(broker.bootstrap, [TopicSpec(topic, 3)])
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, request_timeout_ms=5000)
        await producer.start()
        try:
            for seq in range(count):
                key = f"use-case-{seq % 37}"
                value = {"seq": seq, "use_case": key, "cost_usd": round(seq * 0.001, 3)}
                await producer.send(topic, json.dumps(value).encode(), key=key.encode())
            await producer.flush()
        finally:
            await producer.stop()

        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=broker.bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            request_timeout_ms=10000,
            **GROUP_SETTINGS,
        )
        await consumer.start()
        received: list[tuple[str, int, int, dict[str, Any]]] = []
        try:
            deadline = time.monotonic() + 30
            while len(received) < count and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for tp, messages in batches.items():
                    for m in messages:
                        assert m.key is not None and m.value is not None
                        received.append(
                            (m.key.decode(), tp.partition, m.offset, json.loads(m.value))
                        )
            await consumer.commit()
            committed = 0
            for partition in range(3):
                committed += await consumer.committed(TopicPartition(topic, partition)) or 0
        finally:
            await consumer.stop()
        return received, committed

    received, committed = asyncio.run(asyncio.wait_for(scenario(), timeout=50))

    assert sorted(value["seq"] for _, _, _, value in received) == list(range(count))
    assert committed == count
    partitions_by_key: dict[str, set[int]] = {}
    seqs_by_key: dict[str, list[int]] = {}
    for key, partition, _, value in received:
        assert value["use_case"] == key
        partitions_by_key.setdefault(key, set()).add(partition)
        seqs_by_key.setdefault(key, []).append(value["seq"])
    # Keyed messages stay on one partition, in order, and the keys spread out.
    assert all(len(parts) == 1 for parts in partitions_by_key.values())
    assert all(seqs == sorted(seqs) for seqs in seqs_by_key.values())
    assert len(set().union(*partitions_by_key.values())) == 3


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find children")
@pytest.mark.timeout(60)
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_cli_broker_serves_then_stops_cleanly(
    stop_signal: signal.Signals, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    port = free_port()
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "spendsentry", "broker", "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    stdout = proc.stdout
    assert stdout is not None
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    # A reader thread gives readline a timeout: a hung start-up fails, not hangs.
    threading.Thread(target=pump, daemon=True).start()
    tansu: list[int] = []
    try:
        try:
            first = lines.get(timeout=20).strip()
        except queue.Empty:
            pytest.fail(f"no bootstrap line within 20s; stderr: {stderr_path.read_text()}")
        assert first == f"bootstrap=127.0.0.1:{port}"
        tansu = _children(proc.pid)
        assert len(tansu) == 1, f"expected one Tansu child, found {tansu}"
        assert _listening(port)

        topic = unique_name("cli")
        bootstrap = first.partition("=")[2]

        async def scenario() -> bytes:
            await ensure_topics(bootstrap, [TopicSpec(topic, 1)])
            return await _roundtrip_one(bootstrap, topic)

        assert asyncio.run(asyncio.wait_for(scenario(), timeout=20)) == b'{"hello": "tansu"}'

        proc.send_signal(stop_signal)
        assert proc.wait(timeout=10) == 0, stderr_path.read_text()
        assert _wait_gone(tansu[0]), f"Tansu pid {tansu[0]} outlived the command"
        assert not _listening(port)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in tansu:  # never leak a broker from a failed run
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(30)
def test_stop_is_idempotent_and_the_process_is_gone() -> None:
    broker = EmbeddedBroker()
    broker.stop()  # before start: nothing to do
    with pytest.raises(BrokerError):
        _ = broker.pid
    broker.start()
    pid = broker.pid
    assert broker.running and _alive(pid) and _listening(broker.port)
    broker.stop()
    broker.stop()
    broker.stop(timeout=0.1)
    assert not broker.running
    assert not _alive(pid)
    assert not _listening(broker.port)
    assert broker.pid == pid  # still reported after stop, for diagnostics


@pytest.mark.timeout(30)
def test_busy_port_is_a_clear_broker_error(broker: EmbeddedBroker) -> None:
    with pytest.raises(BrokerError, match=f"{broker.port}.*in use"):
        EmbeddedBroker(port=broker.port).start()
    assert broker.running


@pytest.mark.timeout(30)
def test_async_with_starts_and_stops(unique_name: Callable[[str], str]) -> None:
    topic = unique_name("async")

    async def scenario() -> tuple[int, bytes]:
        async with EmbeddedBroker() as started:
            await ensure_topics(started.bootstrap, [TopicSpec(topic, 1)])
            value = await _roundtrip_one(started.bootstrap, topic)
        return started.pid, value

    pid, value = asyncio.run(asyncio.wait_for(scenario(), timeout=20))
    assert value == b'{"hello": "tansu"}'
    assert not _alive(pid)
