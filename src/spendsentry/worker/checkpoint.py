"""Makes owned engines durable: capture under the lock, write in the background, then commit.

The protocol (docs/worker.md, State): the state of the changed partitions is
encoded under the service's lock (milliseconds), after the producer is flushed
so that what the state claims as published is on the broker; the encoded
snapshots are produced to the state topic while batches go on; once the broker
has them, the input offsets they reflect are committed and the engine-work
counters they hold are shown on ``/metrics``. One write is in flight at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from spendsentry.worker.clients import KafkaClients
from spendsentry.worker.deadletters import DeadLetterSink
from spendsentry.worker.metrics import PartitionCounters, WorkerMetrics
from spendsentry.worker.partitions import PartitionSet
from spendsentry.worker.pipeline import Pipeline
from spendsentry.worker.snapshots import KafkaSnapshotStore
from spendsentry.worker.state import EncodedSnapshot

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Captured:
    """Snapshots encoded under the lock, to be written after it is released."""

    started: float
    encoded: dict[int, EncodedSnapshot]
    #: The input offsets each snapshot reflects (committed once it is durable).
    offsets: list[dict[tuple[str, int], int]]
    #: The counters each snapshot holds, shown on /metrics once it is durable.
    counters: list[tuple[Pipeline, PartitionCounters]] = field(default_factory=list)


class Checkpointer:
    """Snapshots the owned engines to the state topic and commits what they reflect.

    Parameters
    ----------
    clients : KafkaClients
        The producer (snapshots) and the group consumer (commits, alert offsets).
    store : KafkaSnapshotStore
        Encodes and writes snapshots.
    parts : PartitionSet
        The owned engines.
    deadletters : DeadLetterSink
        A partition with a dead letter written nowhere is not snapshotted.
    metrics : WorkerMetrics
        Snapshot count and latency.
    interval_s : float
        Seconds between the consume loop's checkpoints.
    on_durable : callable
        Called after every write (the active throttle gauge is refreshed there).

    Examples
    --------
    >>> from prometheus_client import CollectorRegistry
    >>> from pathlib import Path
    >>> from spendsentry.worker.config import WorkerConfig
    >>> config = WorkerConfig("localhost:9092")
    >>> metrics = WorkerMetrics.create(CollectorRegistry())
    >>> inputs = config.topics.inputs
    >>> sink = DeadLetterSink("ai.deadletter", inputs, Path("x"), metrics, max_bytes=1 << 20)
    >>> store = KafkaSnapshotStore(config.bootstrap, config.topics.state, config.group_id)
    >>> parts = PartitionSet(lambda: None, inputs=inputs)
    >>> checkpoints = Checkpointer(KafkaClients(config), store, parts, sink, metrics)
    >>> checkpoints.due(), checkpoints.snapshot_id(0)
    (False, None)
    """

    def __init__(
        self,
        clients: KafkaClients,
        store: KafkaSnapshotStore,
        parts: PartitionSet,
        deadletters: DeadLetterSink,
        metrics: WorkerMetrics,
        *,
        interval_s: float = 5.0,
        on_durable: Callable[[], None] = lambda: None,
    ) -> None:
        self.clients = clients
        self.store = store
        self.parts = parts
        self.deadletters = deadletters
        self.metrics = metrics
        self.interval_s = interval_s
        self.on_durable = on_durable
        self.last_snapshot_at: float | None = None
        self.last_snapshot_bytes = 0
        #: Latest snapshot (writer, seq) per owned partition.
        self._ids: dict[int, tuple[str, int]] = {}
        self._last = time.monotonic()
        #: The snapshot write in flight, started by the consume loop.
        self._writing: asyncio.Task[None] | None = None

    # -- snapshot ids -----------------------------------------------------------

    def snapshot_id(self, partition: int) -> tuple[str, int] | None:
        """The latest snapshot (writer, seq) of an owned partition."""
        return self._ids.get(partition)

    def remember(self, partition: int, snapshot_id: tuple[str, int]) -> None:
        """``partition``'s state is that of snapshot ``snapshot_id`` (restored or kept)."""
        self._ids[partition] = snapshot_id

    def forget(self, partition: int) -> tuple[str, int] | None:
        """``partition`` is no longer owned; returns its latest snapshot id."""
        return self._ids.pop(partition, None)

    # -- the consume loop's schedule -------------------------------------------

    def due(self) -> bool:
        """Whether the consume loop should start a write now: none in flight,
        something changed and the interval has passed."""
        return (
            self._writing is None
            and bool(self.parts.changed())
            and time.monotonic() - self._last >= self.interval_s
        )

    def reap(self) -> None:
        """Forget a finished write; a failed one raises here (and fails the loop)."""
        writing = self._writing
        if writing is not None and writing.done():
            self._writing = None
            writing.result()

    async def start(self) -> None:
        """Capture the changed partitions (the caller holds the lock) and
        start writing them in the background."""
        # Producing megabytes of state and waiting for the broker must not hold
        # up the next batch's alerts: only the capture runs under the lock.
        captured = await self.capture()
        if captured is not None:
            self._writing = asyncio.create_task(self._write(captured), name="spendsentry-snapshot")

    # -- checkpoints -------------------------------------------------------------

    async def checkpoint(self, partitions: Iterable[int] | None = None) -> None:
        """Make owned engines' state durable, then commit the offsets it reflects.

        Parameters
        ----------
        partitions : iterable of int, optional
            Which partitions to snapshot; by default those whose state changed.

        The caller holds the service's lock, so no batch runs in between. A
        snapshot write the consume loop started is finished first.
        """
        await self.finish_writing()
        captured = await self.capture(partitions)
        if captured is not None:
            await self._write(captured)

    async def finish_writing(self) -> None:
        """Wait for the write in flight, if any."""
        writing, self._writing = self._writing, None
        if writing is not None:
            await writing

    async def capture(self, partitions: Iterable[int] | None = None) -> Captured | None:
        """Encode the state of ``partitions`` (default: the changed ones).

        The caller holds the lock. The encoded bytes are the snapshot, so
        the engines may change as soon as this returns.
        """
        started = time.perf_counter()
        producer = self.clients.require_producer()
        parts = self.parts
        targets = parts.changed() if partitions is None else [p for p in partitions if p in parts]
        held = self.deadletters.held(targets)
        if held:
            # A record whose dead letter is written nowhere must be read again
            # after a restart: no snapshot (nor commit) may reflect it yet.
            log.warning("partitions %s wait for held dead letters: not snapshotted", sorted(held))
            targets = [p for p in targets if p not in held]
        if not targets:
            return None
        # Alerts and dead letters of the state being snapshotted are on the
        # broker before the snapshot claims them as published.
        await producer.flush()
        alerts_offsets = await self._alerts_end_offsets()
        captured = Captured(started, {}, [])
        for p in targets:
            pipeline = parts.pipelines[p]
            state, counters = pipeline.checkpoint_state(alerts_offsets)
            captured.counters.append((pipeline, counters))
            captured.encoded[p] = self.store.encode(
                p,
                state,
                offsets={f"{t}:{n}": o for (t, n), o in sorted(state["offsets"].items())},
            )
            captured.offsets.append(state["offsets"])
        return captured

    async def _alerts_end_offsets(self) -> dict[int, int]:
        consumer = self.clients.require_consumer()
        alerts = self.clients.config.topics.alerts
        tps = [TopicPartition(alerts.name, p) for p in range(alerts.partitions)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: int(o) for tp, o in ends.items()}

    async def _write(self, captured: Captured) -> None:
        """Produce captured snapshots, wait for the broker, then commit offsets."""
        producer = self.clients.require_producer()
        sizes = await asyncio.gather(
            *(self.store.write(producer, enc) for enc in captured.encoded.values())
        )
        for p, enc in captured.encoded.items():
            self._ids[p] = (self.store.writer, enc.seq)
            log.debug("partition %d: snapshot %d at %s", p, enc.seq, enc.header["offsets"])
        # Durable: a restart restores these snapshots, so /metrics may show them.
        for pipeline, counters in captured.counters:
            pipeline.commit_counters(counters)
        await self._commit(captured.offsets)
        self._last = time.monotonic()
        self.last_snapshot_at = time.time()
        self.last_snapshot_bytes = sum(sizes)
        self.metrics.snapshots.inc(len(captured.encoded))
        self.metrics.snapshot_latency.observe(time.perf_counter() - captured.started)
        self.on_durable()

    async def _commit(self, states: Iterable[Mapping[tuple[str, int], int]]) -> None:
        """Commit what the (already durable) snapshots reflect.

        A failed commit loses nothing: the snapshot, not the committed offset,
        is where a partition resumes. It only leaves group lag tools behind.
        """
        consumer = self.clients.require_consumer()
        assigned = consumer.assignment()
        offsets = {
            TopicPartition(t, p): o
            for state in states
            for (t, p), o in state.items()
            if TopicPartition(t, p) in assigned
        }
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            log.warning("offset commit failed (the snapshots stand): %s", exc)
