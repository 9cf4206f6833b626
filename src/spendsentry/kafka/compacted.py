"""Reading a compacted topic from its beginning: once to its end, or followed for ever.

A compacted topic (``ai.throttle``) holds the latest record per key; a reader
that wants "the current value of every key" reads it from the beginning and
lets later records replace earlier ones. Two ways to do that:

* :func:`read_to_end` reads every partition from the beginning to its end once
  and returns (``spendsentry throttle list``, the worker's start-up read of the
  versions on ``ai.throttle``).
* :class:`CompactedFollower` reads from the beginning and keeps following, with
  reconnects, a "read to the end once" flag and a proof-of-contact clock (the
  gateway's :class:`~spendsentry.client.ThrottleGuard`).

Neither names the topic to the broker before it exists (metadata of all topics
only: Tansu would auto-create it), and neither judges the values: a ``take``
callback does.

Examples
--------
>>> seen = []
>>> asyncio.run(read_to_end("127.0.0.1:9092", "ai.throttle", seen.append))  # doctest: +SKIP
>>> follower = CompactedFollower("127.0.0.1:9092", "ai.throttle", seen.append)
>>> follower.synced.is_set(), follower.fresh(30.0)
(False, False)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from spendsentry.kafka.admin import topic_partitions
from spendsentry.kafka.security import KafkaSecurity, resolve

__all__ = ["CompactedFollower", "read_to_end"]

log = logging.getLogger(__name__)


def _reader(bootstrap: str, security: KafkaSecurity) -> Any:
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=10_000,
        **security.client_kwargs(),
    )


async def read_to_end(
    bootstrap: str,
    topic: str,
    take: Callable[[bytes | None], None],
    *,
    timeout_s: float = 20.0,
    security: KafkaSecurity | None = None,
) -> None:
    """Pass every record value of ``topic``, from the beginning to its end, to ``take``.

    Values arrive in offset order per partition (a tombstone as None); a topic
    that does not exist reads as empty.

    Parameters
    ----------
    bootstrap : str
        Kafka bootstrap servers.
    topic : str
        The topic to read.
    take : callable
        Called with each record value.
    timeout_s : float
        Bound on connecting and on reading to the end.
    security : KafkaSecurity, optional
        TLS/SASL settings; the environment's when omitted.

    Raises
    ------
    TimeoutError
        The topic could not be read to its end within ``timeout_s``.
    """
    from aiokafka import TopicPartition

    consumer = _reader(bootstrap, resolve(security))
    try:
        # Inside the try: a start that fails (broker down) still stops the
        # consumer, or aiokafka warns "Unclosed AIOKafkaConsumer" about it.
        await asyncio.wait_for(consumer.start(), timeout_s)
        partitions = await topic_partitions(consumer, topic)
        if not partitions:
            return
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end in {timeout_s:g}s")
            batch = await consumer.getmany(timeout_ms=300, max_records=5000)
            for records in batch.values():
                for r in records:
                    take(r.value)
            # Past the end offsets and nothing more: done. The end offset alone
            # is not enough: the embedded broker can report one below records
            # already written (seen: 49912 of 50001), and the newest record of
            # a key is the one that counts.
            if not batch and not [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                return
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), 5)


class CompactedFollower:
    """Follows a compacted topic from its beginning, for ever, passing values to ``take``.

    After a lost connection it reconnects by itself (back-off from 0.5 s to
    10 s) and resumes where it was; a partition that now ends before what was
    read (the topic was recreated, or a broker lost its data) is read again
    from its start. Tombstones are not passed on.

    Parameters
    ----------
    bootstrap : str
        Kafka bootstrap servers.
    topic : str
        The topic to follow.
    take : callable
        Called with each non-null record value, on the event loop's thread.
    security : KafkaSecurity, optional
        TLS/SASL settings; the environment's (read once, here) when omitted.
    health_interval_s : float
        How often to ask the broker for end offsets as proof of contact.
    name : str
        Who follows, for log lines.

    Attributes
    ----------
    synced : threading.Event
        Set once every partition has been read to the end it had at connection.
    last_contact : float
        ``time.monotonic()`` of the last proof that the broker answers.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        take: Callable[[bytes], object],
        *,
        security: KafkaSecurity | None = None,
        health_interval_s: float = 2.0,
        name: str = "compacted topic follower",
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.take = take
        self.security = resolve(security)
        self.health_interval_s = health_interval_s
        self.name = name
        self.synced = threading.Event()
        self.last_contact = -float("inf")
        self._positions: dict[int, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        #: How long one connection attempt may take to start.
        self.start_timeout_s = 15.0

    def fresh(self, stale_after_s: float) -> bool:
        """Whether the topic was read to its end and the broker answered recently."""
        return self.synced.is_set() and time.monotonic() - self.last_contact <= stale_after_s

    async def start(self, task_name: str = "spendsentry-compacted-follower") -> None:
        """Start following in the running event loop (returns at once)."""
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=task_name)

    async def stop(self) -> None:
        """Stop following and wait for the consumer to close."""
        self._stopping = True
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._task = None

    async def wait_synced(self, timeout: float) -> bool:
        """Wait until the topic has been read to its end once; False on timeout."""
        return await asyncio.to_thread(self.synced.wait, timeout)

    async def _run(self) -> None:
        backoff = 0.5
        while not self._stopping:
            try:
                await self._follow()
                backoff = 0.5
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if self._stopping or (task is not None and task.cancelling()):
                    raise  # stop() cancelled us
                # aiokafka can surface a CancelledError of its own when the
                # broker drops connections mid-request; that is an outage, not
                # a stop, and must not end the reconnect loop.
                error: BaseException = exc
            except Exception as exc:  # the broker went away: reconnect
                error = exc
            else:
                continue
            log.warning(
                "%s lost %s (%s); reconnecting in %.1fs",
                self.name,
                self.bootstrap,
                type(error).__name__,
                backoff,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _follow(self) -> None:
        """One connection: position every partition, then read until stopped or failed."""
        from aiokafka import TopicPartition

        consumer = _reader(self.bootstrap, self.security)
        try:
            # Inside the try, as in read_to_end: every reconnect's consumer is stopped.
            await asyncio.wait_for(consumer.start(), self.start_timeout_s)
            partitions = await topic_partitions(consumer, self.topic)
            if not partitions:
                # Not created yet: nothing to read, and the broker answered.
                self.last_contact = time.monotonic()
                self.synced.set()
                await asyncio.sleep(self.health_interval_s)
                return
            tps = [TopicPartition(self.topic, p) for p in partitions]
            consumer.assign(tps)
            ends = await self._position(consumer, tps)
            self.last_contact = time.monotonic()
            await self._read(consumer, tps, ends)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), 5)

    async def _position(self, consumer: Any, tps: list[Any]) -> dict[Any, int]:
        """Seek to where we were (or the beginning); return the end offsets."""
        for tp in tps:
            if tp.partition in self._positions:
                consumer.seek(tp, self._positions[tp.partition])
            else:
                await consumer.seek_to_beginning(tp)
        ends: dict[Any, int] = await asyncio.wait_for(consumer.end_offsets(tps), 10)
        for tp in tps:
            held = self._positions.get(tp.partition)
            if held is not None and held > ends[tp]:
                # The log ends before what we read: the topic was recreated or
                # truncated (a broker that lost its data). The broker would not
                # say "out of range" until it grows past our old position, so
                # records published since would be skipped: read it again.
                log.warning(
                    "%s: %s:%d ends at %d, before offset %d read earlier "
                    "(recreated or truncated); reading it from the start",
                    self.name,
                    self.topic,
                    tp.partition,
                    ends[tp],
                    held,
                )
                del self._positions[tp.partition]
                await consumer.seek_to_beginning(tp)
        return ends

    async def _read(self, consumer: Any, tps: list[Any], ends: dict[Any, int]) -> None:
        next_health = time.monotonic() + self.health_interval_s
        while not self._stopping:
            batch = await consumer.getmany(timeout_ms=300, max_records=1000)
            for tp, records in batch.items():
                for r in records:
                    if r.value is not None:
                        self.take(r.value)
                    self._positions[tp.partition] = r.offset + 1
            if not self.synced.is_set() and all(
                self._positions.get(tp.partition, 0) >= ends[tp] for tp in tps
            ):
                self.synced.set()
            if time.monotonic() >= next_health:
                # Proof of contact: a fetch that returns nothing says nothing.
                await asyncio.wait_for(consumer.end_offsets(tps), 5)
                self.last_contact = time.monotonic()
                next_health = time.monotonic() + self.health_interval_s
