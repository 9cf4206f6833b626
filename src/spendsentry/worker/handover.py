"""Partitions changing hands: snapshot what is revoked, restore and seek what is assigned.

On revoke, the revoked engines are snapshotted and their offsets committed; on
assign, each partition's engine is restored from its latest snapshot on the
state topic (whoever wrote it), kept (if it comes straight back), or started
fresh, and its inputs are sought to the offsets its state reflects. Alerts
published after a restored snapshot are read back so that they are not repeated.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from spendsentry.messages.alert import dedupe_key_of
from spendsentry.worker.checkpoint import Checkpointer
from spendsentry.worker.clients import KafkaClients
from spendsentry.worker.deadletters import DeadLetterSink
from spendsentry.worker.partitions import PartitionSet
from spendsentry.worker.pipeline import Pipeline, alerts_offsets_of
from spendsentry.worker.publisher import Publisher
from spendsentry.worker.snapshots import KafkaSnapshotStore

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Resumed:
    """How one assigned partition's engine came to be."""

    pipeline: Pipeline
    #: "fresh", "restored", "kept" (straight back) or "lost" (kept, but the
    #: state topic no longer has its snapshot).
    how: str
    #: Where ai.alerts ended when the restored snapshot was taken.
    alerts_offsets: dict[int, int] | None = None


class Handover:
    """The consumer group's rebalance listener: hands partitions over.

    Parameters
    ----------
    clients : KafkaClients
        The group consumer (committed offsets, seeks) and the security settings.
    parts : PartitionSet
        The owned engines.
    store : KafkaSnapshotStore
        Where snapshots are found and loaded.
    checkpoints : Checkpointer
        Snapshots revoked engines, and fresh ones before anything is consumed.
    publisher : Publisher
        Throttle versions for fresh engines; commands of engines taken over.
    deadletters : DeadLetterSink
        Forgets held dead letters of revoked partitions.
    lock : asyncio.Lock
        The service's lock: no batch runs during a hand-over.
    fail : callable
        Stops the worker with an exception (aiokafka only logs a listener's).
    readback_timeout_s : float
        Seconds allowed for reading back published alerts.
    """

    def __init__(
        self,
        clients: KafkaClients,
        parts: PartitionSet,
        store: KafkaSnapshotStore,
        checkpoints: Checkpointer,
        publisher: Publisher,
        deadletters: DeadLetterSink,
        *,
        lock: asyncio.Lock,
        fail: Callable[[BaseException], None],
        readback_timeout_s: float = 30.0,
    ) -> None:
        self.clients = clients
        self.inputs = clients.config.topics.inputs
        self.alerts_topic = clients.config.topics.alerts.name
        self.parts = parts
        self.store = store
        self.checkpoints = checkpoints
        self.publisher = publisher
        self.deadletters = deadletters
        self.lock = lock
        self.fail = fail
        self.readback_timeout_s = readback_timeout_s
        #: Partitions whose engine came from a snapshot another process wrote.
        self.restored: set[int] = set()
        #: Engines revoked in this rebalance, kept in case they come straight back.
        self._parked: dict[int, tuple[Pipeline, tuple[str, int] | None]] = {}

    def listener(self) -> ConsumerRebalanceListener:
        """The listener to subscribe the group consumer with."""
        return _Rebalance(self)

    def _input_tps(self, partition: int) -> list[TopicPartition]:
        return [TopicPartition(t, partition) for t in self.inputs]

    # -- revoke -----------------------------------------------------------------

    async def on_revoked(self, revoked: list[TopicPartition]) -> None:
        numbers = sorted({tp.partition for tp in revoked if tp.topic in self.inputs})
        if not numbers:
            return
        try:
            # Revocation hands partitions to another member: make what we did
            # with them durable and committed first. Minutes are not closed
            # early: the next owner continues exactly where this state stops.
            async with self.lock:
                changed = set(self.parts.changed())
                dirty = [p for p in numbers if p in changed]
                if dirty:
                    await self.clients.ensure_state_topic()
                    await self.checkpoints.checkpoint(dirty)
                # Their held dead letters are the next owner's: it reads the
                # records again from the snapshot that did not claim them.
                self.deadletters.forget(numbers)
                for p in numbers:
                    pipeline = self.parts.remove(p)
                    if pipeline is not None:
                        self._parked[p] = (pipeline, self.checkpoints.forget(p))
            log.info("revoked partitions %s (snapshotted)", numbers)
        except Exception as exc:
            # aiokafka would only log a listener's exception and carry on.
            log.exception("could not hand over partitions %s", numbers)
            self.fail(exc)

    # -- assign -----------------------------------------------------------------

    async def on_assigned(self, assigned: list[TopicPartition]) -> None:
        consumer = self.clients.require_consumer()
        # No fetching until every partition is sought to its snapshot's offsets:
        # otherwise the fetcher starts from the committed offsets meanwhile and
        # the same records can be delivered twice.
        consumer.pause(*assigned)
        try:
            async with self.lock:
                await self._take_over(assigned)
        except Exception as exc:
            log.exception("could not take over the assigned partitions")
            self.fail(exc)
        finally:
            current = consumer.assignment()
            consumer.resume(*[tp for tp in assigned if tp in current])

    def _numbers(self, assigned: list[TopicPartition]) -> list[int]:
        """The assigned partition numbers (logged when one comes without the rest)."""
        tps = set(assigned)
        numbers = sorted({tp.partition for tp in assigned if tp.topic in self.inputs})
        for p in numbers:
            missing = [tp for tp in self._input_tps(p) if tp not in tps]
            if missing:
                log.error(
                    "partition %d of %s is not assigned with the rest of partition %d: "
                    "are all members running the range assignor?",
                    p,
                    [tp.topic for tp in missing],
                    p,
                )
        return numbers

    async def _take_over(self, assigned: list[TopicPartition]) -> None:
        """Restore (or start) one engine per assigned partition and seek its inputs."""
        consumer = self.clients.require_consumer()
        numbers = self._numbers(assigned)
        await self.clients.ensure_state_topic()
        now = time.time()
        resumed: dict[int, _Resumed] = {}
        for p in numbers:
            if p in self.parts:
                continue
            got = resumed[p] = await self._resume(consumer, p, now)
            self.parts.add(got.pipeline)
            self._seek(consumer, got.pipeline, p, now)
        self._parked.clear()
        fresh = [p for p, got in resumed.items() if got.how == "fresh"]
        self.publisher.revisit(
            self.parts.pipelines[p] for p in numbers if p in self.parts and p not in fresh
        )
        await self._read_back_alerts([got for got in resumed.values() if got.how == "restored"])
        unsaved = [p for p, got in resumed.items() if got.how in ("fresh", "lost")]
        if unsaved:
            # A first snapshot before anything is consumed records where the
            # alerts topic ended: a crash before the next snapshot then reads
            # back (and does not repeat) what this run published.
            for p in unsaved:
                self.parts.pipelines[p].touch()
            await self.checkpoints.checkpoint(unsaved)
        log.info("assigned partitions %s (fresh: %s)", numbers, fresh)
        # What exists now (clients, restored engines) lives for the run: take it
        # out of the cyclic collector's reach, or every full collection walks it
        # again. Measured: ~2x throughput (docs/worker.md, Performance).
        # Objects freed by reference counting are still freed.
        gc.collect()
        gc.freeze()

    async def _resume(self, consumer: AIOKafkaConsumer, p: int, now: float) -> _Resumed:
        """Partition ``p``'s engine: kept, restored from its snapshot, or fresh."""
        own = self._input_tps(p)
        committed = {tp: await consumer.committed(tp) for tp in own}
        parked, parked_id = self._parked.pop(p, (None, None))
        # Snapshot before commit: a partition the group never committed has
        # no snapshot, so its history need not be searched.
        manifest = None
        if any(o is not None for o in committed.values()):
            manifest = await self.store.latest(p)
        log.debug(
            "partition %d: committed %s, latest snapshot %s",
            p,
            {f"{tp.topic}:{tp.partition}": o for tp, o in committed.items()},
            None if manifest is None else f"{manifest.writer}:{manifest.seq}@{manifest.offset}",
        )
        if parked is not None and (manifest is None or manifest.snapshot_id == parked_id):
            # Straight back: nobody else owned it meanwhile (no newer
            # snapshot; none at all means the broker lost the state topic).
            if manifest is None:
                return _Resumed(parked, "lost")
            self.checkpoints.remember(p, manifest.snapshot_id)
            return _Resumed(parked, "kept")
        if manifest is not None:
            state = await self.store.load(manifest)
            pipeline = self.parts.new_pipeline(p)
            pipeline.restore_state(state, now=now)
            self.checkpoints.remember(p, manifest.snapshot_id)
            self.restored.add(p)
            log.info(
                "partition %d: restored snapshot %s:%d (%d bytes, %d events)",
                p,
                manifest.writer,
                manifest.seq,
                manifest.size,
                pipeline.engine.stats.accepted,
            )
            return _Resumed(pipeline, "restored", alerts_offsets_of(state))
        pipeline = self.parts.new_pipeline(p)
        self.publisher.start_fresh(pipeline)
        begin = await consumer.beginning_offsets(own)
        pipeline.start_at(
            {
                (tp.topic, tp.partition): begin[tp] if committed[tp] is None else committed[tp]
                for tp in own
            }
        )
        return _Resumed(pipeline, "fresh")

    def _seek(self, consumer: AIOKafkaConsumer, pipeline: Pipeline, p: int, now: float) -> None:
        own = self._input_tps(p)
        pipeline.assign_inputs([(tp.topic, tp.partition) for tp in own], now=now)
        for tp in own:
            offset = pipeline.offsets.get((tp.topic, tp.partition))
            if offset is not None:
                # The snapshot is the truth: committed offsets may lag it (a
                # crash between the snapshot and the commit).
                consumer.seek(tp, offset)

    # -- alert read-back --------------------------------------------------------

    async def _read_back_alerts(self, restored: Sequence[_Resumed]) -> None:
        """Learn which alerts were published after the snapshots (then a crash).

        The restored engines will emit them again; their keys make
        :meth:`Pipeline.mark_published` suppress the repeats. Keys of other
        partitions' alerts are remembered too: harmless, since an ``alert_id``
        names its use case, which lives in one partition.
        """
        start: dict[int, int] = {}
        for got in restored:
            for n, o in (got.alerts_offsets or {}).items():
                start[n] = min(start.get(n, o), o)
        pipelines = [got.pipeline for got in restored]
        if not start or not pipelines:
            return
        reader = self.clients.reader()
        await reader.start()
        try:
            seen = await self._read_alerts(reader, start, pipelines)
            log.info("read back %d alerts published after the snapshot", seen)
        finally:
            await reader.stop()

    async def _read_alerts(
        self, reader: AIOKafkaConsumer, start: dict[int, int], pipelines: list[Pipeline]
    ) -> int:
        name = self.alerts_topic
        tps = [TopicPartition(name, p) for p in start]
        reader.assign(tps)
        ends = await reader.end_offsets(tps)
        for tp in tps:
            reader.seek(tp, start[tp.partition])
        remaining = {tp for tp in tps if ends[tp] > start[tp.partition]}
        deadline = time.monotonic() + self.readback_timeout_s
        seen = 0
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading back {name} took too long")
            batch = await reader.getmany(timeout_ms=500, max_records=10_000)
            for records in batch.values():
                for r in records:
                    key = dedupe_key_of(orjson.loads(r.value or b"{}"))
                    for pipeline in pipelines:
                        pipeline.mark_published(key)
                    seen += 1
            for tp in list(remaining):
                if await reader.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return seen


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, handover: Handover) -> None:
        self.handover = handover

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.handover.on_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.handover.on_assigned(list(assigned))
