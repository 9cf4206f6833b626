"""Topic administration: TopicSpec and ensure_topics, which creates topics before use.

Production code and the embedded broker alike create every topic explicitly,
with its partition count and configs, before anything touches it: a broker with
auto-creation (Tansu always, Kafka by default) would otherwise create it with
its own partition count the moment a client asks for it by name. Nothing here
names a topic to the broker except ``create_topics``: partition counts are read
from the metadata of all topics (:func:`topic_partitions`).

Examples
--------
>>> TopicSpec("ai.throttle", 3, {"cleanup.policy": "compact"}).config["cleanup.policy"]
'compact'
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from spendsentry.kafka.errors import BrokerError
from spendsentry.kafka.security import KafkaSecurity

__all__ = [
    "TopicSpec",
    "ensure_topics",
    "ensure_topics_sync",
    "existing_partitions",
    "topic_partitions",
]

log = logging.getLogger(__name__)

# Kafka error codes ensure_topics treats specially.
_TOPIC_ALREADY_EXISTS = 36


@dataclasses.dataclass(frozen=True)
class TopicSpec:
    """A topic as it must exist before anything produces to or reads from it.

    Parameters
    ----------
    name : str
        Topic name.
    partitions : int
        Partition count; fixed at creation (Kafka can only grow it later).
    config : Mapping[str, str]
        Topic configs, e.g. ``{"cleanup.policy": "compact"}`` for changelogs.

    Examples
    --------
    >>> TopicSpec("usage-events", 3).config
    mappingproxy({})
    """

    name: str
    partitions: int
    config: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a topic needs a name")
        if self.partitions < 1:
            raise ValueError(f"topic {self.name!r}: partitions must be >= 1")
        # A read-only copy keeps the frozen spec immutable (and safe to share).
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))

    def __hash__(self) -> int:
        # The generated hash would fail on the mapping; hash its items instead.
        return hash((self.name, self.partitions, frozenset(self.config.items())))


async def ensure_topics(
    bootstrap: str,
    topics: Sequence[TopicSpec],
    *,
    attempts: int = 5,
    request_timeout: float = 10.0,
    security: KafkaSecurity | Mapping[str, Any] | None = None,
) -> None:
    """Create the topics that do not exist yet; leave existing ones alone.

    Parameters
    ----------
    bootstrap : str
        ``host:port`` of the broker.
    topics : Sequence[TopicSpec]
        The topics to guarantee.
    attempts : int
        How many times to try (connection failures and retriable broker errors),
        with a doubling back-off from 0.2 s.
    request_timeout : float
        Seconds allowed for each request to the broker.
    security : KafkaSecurity or Mapping[str, Any], optional
        TLS/SASL settings for the admin client (a
        :class:`~spendsentry.kafka.security.KafkaSecurity`, or its
        ``client_kwargs()``), for an external broker; plaintext when omitted
        (the embedded broker is plaintext on loopback).

    Raises
    ------
    BrokerError
        If a topic is rejected for a non-retriable reason, or the broker is still
        unreachable or failing after ``attempts`` tries.

    Notes
    -----
    Existing topics are not altered. One whose partition count differs from the
    spec (for instance one Tansu auto-created with 4 partitions because a client
    touched it first) is reported with a warning, not "fixed".
    """
    # Imported here so that importing this module (the CLI does, for --help)
    # stays cheap.
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    wanted = {spec.name: spec for spec in topics}
    if not wanted:
        return
    if isinstance(security, KafkaSecurity):
        security = security.client_kwargs()
    timeout_ms = int(request_timeout * 1000)
    delay = 0.2
    last_error: str = ""
    for attempt in range(1, attempts + 1):
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, **(security or {})
        )
        retry = False
        try:
            await admin.start()
            # Listing all topics never triggers auto-creation (naming them would).
            existing = set(await admin.list_topics())
            missing = [spec for name, spec in wanted.items() if name not in existing]
            if missing:
                failed = await _create(admin, missing, timeout_ms)
                if failed is not None:
                    retry, last_error = True, failed
            present = [name for name in wanted if name in existing]
            if present:
                await _warn_on_partition_mismatch(admin, [wanted[n] for n in present])
        except (KafkaError, OSError) as exc:  # OSError covers TimeoutError
            retry, last_error = True, str(exc)
            if not last_error.startswith(type(exc).__name__):  # aiokafka's str() names it
                last_error = f"{type(exc).__name__}: {last_error}"
        finally:
            await admin.close()
        if not retry:
            return
        if attempt < attempts:
            log.info("ensure_topics attempt %d/%d failed: %s", attempt, attempts, last_error)
            await asyncio.sleep(delay)
            delay *= 2
    raise BrokerError(
        f"could not ensure topics on {bootstrap} after {attempts} tries: {last_error}"
    )


async def _create(admin: Any, missing: Sequence[TopicSpec], timeout_ms: int) -> str | None:
    """Create ``missing``; return the last retriable failure, None if all went well.

    Raises
    ------
    BrokerError
        If a topic is rejected for a non-retriable reason.
    """
    from aiokafka.admin import NewTopic
    from aiokafka.errors import for_code

    response = await admin.create_topics(
        [
            NewTopic(
                spec.name,
                spec.partitions,
                replication_factor=1,
                topic_configs=dict(spec.config),
            )
            for spec in missing
        ],
        timeout_ms=timeout_ms,
    )
    failed: str | None = None
    # aiokafka returns per-topic error codes instead of raising.
    for name, code, message in _topic_errors(response):
        if code in (0, _TOPIC_ALREADY_EXISTS):
            continue
        error = for_code(code)
        detail = f"topic {name!r}: {error.__name__} ({code}) {message or ''}".strip()
        if not error.retriable:
            raise BrokerError(f"cannot create {detail}")
        failed = detail
    return failed


def _topic_errors(response: Any) -> list[tuple[str, int, str | None]]:
    """Return ``(topic, error_code, error_message)`` from any CreateTopics version."""
    rows = []
    for entry in response.topic_errors:
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else None
        rows.append((name, code, message))
    return rows


async def _warn_on_partition_mismatch(admin: Any, specs: Sequence[TopicSpec]) -> None:
    described = await admin.describe_topics([spec.name for spec in specs])
    counts = {t["topic"]: len(t["partitions"]) for t in described if not t["error_code"]}
    for spec in specs:
        actual = counts.get(spec.name)
        if actual is not None and actual != spec.partitions:
            log.warning(
                "topic %r exists with %d partitions, not the %d wanted; was it "
                "auto-created by a client before ensure_topics ran?",
                spec.name,
                actual,
                spec.partitions,
            )


def ensure_topics_sync(bootstrap: str, topics: Sequence[TopicSpec], **kwargs: Any) -> None:
    """Blocking form of :func:`ensure_topics`, for code without an event loop.

    Parameters
    ----------
    bootstrap : str
        ``host:port`` of the broker.
    topics : Sequence[TopicSpec]
        The topics to guarantee.
    **kwargs
        Passed on to :func:`ensure_topics` (``attempts``, ``request_timeout``,
        ``security``).

    Raises
    ------
    RuntimeError
        If called from a thread that is running an event loop (await
        :func:`ensure_topics` there instead).
    """
    asyncio.run(ensure_topics(bootstrap, topics, **kwargs))


async def existing_partitions(
    bootstrap: str,
    names: Sequence[str],
    *,
    attempts: int = 5,
    request_timeout: float = 10.0,
    security: KafkaSecurity | Mapping[str, Any] | None = None,
) -> dict[str, int]:
    """The partition count of each of ``names`` that exists on the broker.

    Topics are listed first and only existing ones described, so no topic is
    auto-created by asking (describing a missing one would create it on Tansu).
    Retries like :func:`ensure_topics` (a broker that is still starting).

    Raises
    ------
    BrokerError
        If the broker is still unreachable or failing after ``attempts`` tries.
    """
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    if isinstance(security, KafkaSecurity):
        security = security.client_kwargs()
    delay, last_error = 0.2, ""
    for attempt in range(1, attempts + 1):
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=int(request_timeout * 1000),
            **(security or {}),
        )
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            present = [name for name in names if name in existing]
            described = await admin.describe_topics(present) if present else []
            return {t["topic"]: len(t["partitions"]) for t in described if not t["error_code"]}
        except (KafkaError, OSError) as exc:  # OSError covers TimeoutError
            last_error = f"{type(exc).__name__}: {exc}"
        finally:
            await admin.close()
        if attempt < attempts:
            await asyncio.sleep(delay)
            delay *= 2
    raise BrokerError(f"cannot read the topics on {bootstrap} after {attempts} tries: {last_error}")


async def topic_partitions(consumer: Any, topic: str, *, timeout_s: float = 10.0) -> list[int]:
    """The partition numbers of ``topic`` as the broker knows it; [] if it does not exist.

    ``consumer`` is a started ``AIOKafkaConsumer``. Its metadata is refreshed for
    *all* topics, which never auto-creates one (asking for ``topic`` by name
    would, on Tansu).
    """
    await asyncio.wait_for(consumer.topics(), timeout_s)
    found = consumer.partitions_for_topic(topic)
    return sorted(found) if found else []
