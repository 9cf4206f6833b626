"""The spendsentry.kafka package: one owner per piece of Kafka plumbing, old homes re-export."""

from __future__ import annotations

import ast
import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

import spendsentry.kafka as kafka
from spendsentry.kafka import admin, compacted, security

SRC = Path(__file__).resolve().parents[2] / "src" / "spendsentry"


def test_old_import_paths_are_the_new_objects() -> None:
    from spendsentry import broker, kafka_security

    assert broker.EmbeddedBroker is kafka.EmbeddedBroker
    assert broker.ensure_topics is kafka.ensure_topics
    assert broker.ensure_topics_sync is kafka.ensure_topics_sync
    assert broker.TopicSpec is kafka.TopicSpec
    assert broker.free_port is kafka.free_port
    assert broker.BrokerError is kafka.BrokerError
    assert kafka_security.KafkaSecurity is kafka.KafkaSecurity
    assert kafka_security.client_kwargs is security.client_kwargs


def test_the_gateway_client_reexports_the_throttle_topic_reader() -> None:
    from spendsentry import client
    from spendsentry.actions import throttle_topic

    assert client.ThrottleTopic is throttle_topic.ThrottleTopic
    assert client.read_commands is throttle_topic.read_commands
    assert client.read_latest is throttle_topic.read_latest


def _imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


@pytest.mark.parametrize("path", sorted((SRC / "worker").glob("*.py")), ids=lambda p: p.name)
def test_the_worker_does_not_import_the_gateway_client(path: Path) -> None:
    gateway = {m for m in _imported_modules(path) if m.split(".")[:2] == ["spendsentry", "client"]}
    assert not gateway


@pytest.mark.parametrize("path", sorted((SRC / "kafka").glob("*.py")), ids=lambda p: p.name)
def test_the_kafka_package_depends_on_nothing_of_spendsentry_but_its_errors(path: Path) -> None:
    # Plumbing under everything: it must not know the engine, the worker or the client.
    ours = {m for m in _imported_modules(path) if m.startswith("spendsentry")}
    assert all(m.startswith(("spendsentry.kafka", "spendsentry.errors")) for m in ours), ours


class _Admin:
    """Stands in for AIOKafkaAdminClient: records its keyword arguments."""

    made: list[dict[str, Any]] = []

    def __init__(self, **kwargs: Any) -> None:
        _Admin.made.append(kwargs)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def list_topics(self) -> list[str]:
        return ["t"]

    async def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
        return [{"topic": "t", "error_code": 0, "partitions": [0, 1]}]


@pytest.mark.parametrize(
    "given",
    [
        security.KafkaSecurity("SASL_PLAINTEXT", "PLAIN", "u", "p"),
        security.KafkaSecurity("SASL_PLAINTEXT", "PLAIN", "u", "p").client_kwargs(),
    ],
    ids=["settings", "kwargs"],
)
def test_ensure_topics_takes_the_settings_object_or_its_kwargs(
    monkeypatch: pytest.MonkeyPatch, given: Any
) -> None:
    import aiokafka.admin

    monkeypatch.setattr(aiokafka.admin, "AIOKafkaAdminClient", _Admin)
    _Admin.made.clear()
    asyncio.run(admin.ensure_topics("b:9092", [admin.TopicSpec("t", 2)], security=given))
    (made,) = _Admin.made
    assert made["security_protocol"] == "SASL_PLAINTEXT"
    assert made["sasl_plain_username"] == "u" and made["sasl_plain_password"] == "p"


def test_components_read_the_environment_once_when_built(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []
    real = security.KafkaSecurity.from_env.__func__  # type: ignore[attr-defined]

    def counting(cls: type[security.KafkaSecurity], env: Any = None) -> security.KafkaSecurity:
        reads.append(1)
        return real(cls, env)  # type: ignore[no-any-return]

    monkeypatch.setattr(security.KafkaSecurity, "from_env", classmethod(counting))
    follower = compacted.CompactedFollower("b:9092", "t", lambda value: None)
    for _ in range(3):
        follower.security.client_kwargs()
    assert len(reads) == 1
    given = security.KafkaSecurity("SSL")
    assert compacted.CompactedFollower("b", "t", print, security=given).security is given
    assert len(reads) == 1  # handed settings are not re-read


def test_a_follower_is_neither_synced_nor_fresh_before_it_reads() -> None:
    follower = compacted.CompactedFollower("b:9092", "t", lambda value: None)
    assert not follower.fresh(1e9)
    follower.synced.set()
    follower.last_contact = time.monotonic()  # as if the broker just answered
    assert follower.fresh(30.0)
    follower.last_contact -= 31.0
    assert not follower.fresh(30.0)


def test_a_consumer_whose_start_fails_is_closed_not_left_for_the_garbage_collector() -> None:
    """With the broker down, every reconnect's consumer is stopped (aiokafka warns
    "Unclosed AIOKafkaConsumer" about one that is not, on every reconnect)."""
    import contextlib
    import gc
    import warnings

    from spendsentry.broker import free_port
    from spendsentry.kafka.compacted import CompactedFollower, read_to_end

    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there

    async def main() -> None:
        with contextlib.suppress(Exception):
            await read_to_end(bootstrap, "t", lambda _: None, timeout_s=1.0)
        follower = CompactedFollower(bootstrap, "t", lambda _: None)
        follower.start_timeout_s = 1.0
        with contextlib.suppress(Exception):
            await follower._follow()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(main())
        gc.collect()
    unclosed = [str(w.message) for w in caught if "Unclosed AIOKafkaConsumer" in str(w.message)]
    assert unclosed == []
