"""The Kafka shell around the pipelines: a Faust (mode) service in the worker app.

Why an aiokafka consumer with ``getmany`` and not a Faust agent with
``stream.take()``: measured on this machine, aiokafka ``getmany`` + orjson reads
~370k events/s while Faust's per-message stream path tops out near 14k events/s
(see docs/worker.md for the numbers; ``benchmarks/bench_worker.py`` measures this
process against the raw ``getmany`` ceiling). Just as important, the snapshot protocol
needs full control of offsets: commit only after the snapshot that reflects them
is durable, and seek to the snapshot's offsets when a partition is assigned.
Faust commits on its own schedule (the architecture notes record a Table losing
updates whose source offsets were already committed). So Faust runs the app
(lifecycle, web server with ``/metrics`` and ``/status``) and this service,
started as a dependency of the app, owns the consumers and the producer.

State follows partitions: one engine per input partition number
(:class:`~spendsentry.worker.partitions.PartitionSet`), each snapshotted to the
compacted state topic (:class:`~spendsentry.worker.snapshots.KafkaSnapshotStore`).
On revoke, the revoked engines are snapshotted and their offsets committed; on
assign, each partition's engine is restored from its latest snapshot (whoever
wrote it) and its inputs are sought to the snapshot's offsets.

One batch cycle: ``getmany`` -> :meth:`PartitionSet.handle` (decode, engines,
watermarks) -> operator actions from ``ai.control`` -> produce alerts (key = use
case), throttle commands and dead letters. Every ``snapshot_interval_s``: flush
the producer and encode the engines that changed (under the lock, milliseconds),
then, while batches go on, produce those snapshots, wait for the broker and
commit the offsets they reflect. One snapshot write is in flight at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError

from spendsentry.actions import ThrottleCommand, ThrottleKeys
from spendsentry.engine import Engine, EngineConfig
from spendsentry.ingest import DeadLetter, Decoder
from spendsentry.ingest.deadletter import DEFAULT_MAX_REQUEST_SIZE, dead_letter_limit
from spendsentry.kafka import ensure_topics
from spendsentry.kafka import security as kafka_security
from spendsentry.messages.alert import dedupe_key_of
from spendsentry.worker.deadletters import DeadLetterSink
from spendsentry.worker.metrics import PartitionCounters, WorkerMetrics, label_share
from spendsentry.worker.partitions import EngineView, PartitionSet, engine_share, top_use_cases
from spendsentry.worker.pipeline import Pipeline
from spendsentry.worker.snapshots import KafkaSnapshotStore
from spendsentry.worker.state import EncodedSnapshot
from spendsentry.worker.status_page import StatusBoard, build_snapshot
from spendsentry.worker.throttle_edge import CommandEdge, wall_clock_body, wall_clock_doc
from spendsentry.worker.topics import TopicsConfig, check_co_partitioned

log = logging.getLogger(__name__)

#: Scopes whose version on ai.throttle a fresh engine learns at most (the most
#: recently issued): state grows with what the worker signed, not the topic.
MAX_OBSERVED_VERSIONS = 10_000
#: Use cases in ``/status`` (the costliest), unless asked for another page.
STATUS_USE_CASES = 100
#: The largest page of use cases ``/status`` returns.
MAX_STATUS_USE_CASES = 1_000


@dataclass(slots=True)
class WorkerConfig:
    """Everything the worker needs to run (the CLI fills it from flags)."""

    bootstrap: str
    group_id: str = "spendsentry"
    topics: TopicsConfig = field(default_factory=TopicsConfig.defaults)
    state_dir: Path = Path(".spendsentry-state")
    engine_config: EngineConfig = field(default_factory=EngineConfig)
    #: Records per ``getmany``: the engine is batch-shaped, as in replay.
    max_batch: int = 5_000
    poll_timeout_ms: int = 200
    #: How long the broker may hold a fetch that found no data. aiokafka keeps
    #: one fetch in flight per broker, so a fetch that only asks for quiet
    #: partitions (an empty ai.outcomes partition) delays the busy ones by this
    #: much; Kafka's 500 ms default made event-to-alert latency seconds.
    fetch_max_wait_ms: int = 50
    idle_partition_s: float = 30.0
    snapshot_interval_s: float = 5.0
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    use_case_label_limit: int = 50
    #: Seconds allowed for reading back published alerts on restart.
    readback_timeout_s: float = 30.0
    #: Signs throttle commands; without a signing key none is published.
    throttle_keys: ThrottleKeys = field(default_factory=ThrottleKeys)
    #: The producer's largest request; every dead letter is cut to fit in it
    #: (:func:`~spendsentry.ingest.deadletter.dead_letter_limit`).
    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE


@dataclass(slots=True)
class _Captured:
    """Snapshots encoded under the lock, to be written after it is released."""

    started: float
    encoded: dict[int, EncodedSnapshot]
    #: The input offsets each snapshot reflects (committed once it is durable).
    offsets: list[dict[tuple[str, int], int]]
    #: The counters each snapshot holds, shown on /metrics once it is durable.
    counters: list[tuple[Pipeline, PartitionCounters]] = field(default_factory=list)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, service: IngestService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.service.on_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.service.on_assigned(list(assigned))


class IngestService(faust.Service):
    """Consume usage and outcomes in batches, run the engines, publish results.

    Parameters
    ----------
    config : WorkerConfig
        Broker, topics, state directory and tuning.
    engine : Engine
        A fresh engine: the template (policies, prices, config) of the engine
        made for each assigned partition that has no snapshot yet.
    metrics : WorkerMetrics
        The worker's metrics container.
    """

    def __init__(
        self,
        config: WorkerConfig,
        engine: Engine,
        metrics: WorkerMetrics,
        *,
        decoder: Decoder | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.metrics = metrics
        self.template = engine
        #: Per engine: the worker's caps on names divided across the partitions.
        self._engine_config = engine_share(engine.config, config.topics.usage.partitions)
        self.parts = PartitionSet(
            self._new_engine,
            metrics,
            inputs=config.topics.inputs,
            idle_after_s=config.idle_partition_s,
            decoder=decoder,
            use_case_labels=label_share(
                config.use_case_label_limit, config.topics.usage.partitions
            ),
        )
        #: Publishes dead letters; one it could not write holds its partition's commit.
        self.deadletters = DeadLetterSink(
            config.topics.deadletter.name,
            config.topics.inputs,
            config.state_dir / "deadletters.jsonl",
            metrics,
            max_bytes=dead_letter_limit(config.max_request_size),
        )
        #: Throttle commands not published for want of a signing key.
        self.commands_unpublished = 0
        self.commands_published = 0
        #: Re-stamps commands onto the wall clock and holds them while catching up.
        self.throttle_edge = CommandEdge()
        #: Whether an assigned partition had records waiting at the last poll.
        self._lagging = False
        self.store = KafkaSnapshotStore(config.bootstrap, config.topics.state, config.group_id)
        self.consumer: AIOKafkaConsumer | None = None
        #: Reads ai.control outside the group: every worker applies every action.
        self.control_reader: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.lock = asyncio.Lock()
        #: Set when the consume loop fails; the runner stops the worker then.
        self.failed: asyncio.Future[BaseException] | None = None
        #: Partitions whose engine came from a snapshot another process wrote.
        self.restored: set[int] = set()
        self.last_snapshot_at: float | None = None
        self.last_snapshot_bytes = 0
        self.started_at = time.time()
        #: Open incidents with evidence, recent alerts, throttles: the status page's data.
        self.board = StatusBoard()
        #: Latest snapshot (writer, seq) per owned partition.
        self.snapshot_ids: dict[int, tuple[str, int]] = {}
        #: Engines revoked in this rebalance, kept in case they come straight back.
        self._parked: dict[int, tuple[Pipeline, tuple[str, int] | None]] = {}
        self._control_next: dict[int, int] = {}
        self._throttle_versions: dict[str, int] = {}
        #: Records on ai.throttle ignored at start, by reason (not verified commands).
        self.throttle_rejected: Counter[str] = Counter()
        self._last_checkpoint = time.monotonic()
        #: The snapshot write in flight, started by the consume loop.
        self._writing: asyncio.Task[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None

    def _new_engine(self) -> Engine:
        t = self.template
        return Engine(
            t.policies,
            config=self._engine_config,
            prices=t.prices,
            monitor_factory=t.monitor_factory,
        )

    @property
    def engine(self) -> EngineView:
        """The owned engines as one read-only view (status page, ``/status``)."""
        return self.parts.view()

    # -- lifecycle ------------------------------------------------------------

    async def on_start(self) -> None:
        cfg = self.config
        self.failed = asyncio.get_running_loop().create_future()
        cfg.topics.check_co_partitioned()
        # Tansu auto-creates unknown topics with 4 partitions: create ours first.
        security = kafka_security.client_kwargs()
        await ensure_topics(cfg.bootstrap, cfg.topics.specs(), security=security)
        self._warn_about_old_snapshot()
        self.producer = AIOKafkaProducer(
            bootstrap_servers=cfg.bootstrap,
            acks="all",
            linger_ms=5,
            client_id=cfg.group_id,
            max_request_size=cfg.max_request_size,
            **security,
        )
        await self.producer.start()
        await self.store.start()
        await self._read_throttle_versions()
        self.control_reader = AIOKafkaConsumer(
            bootstrap_servers=cfg.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **security,
        )
        await self.control_reader.start()
        control = cfg.topics.control
        self.control_reader.assign(
            [TopicPartition(control.name, n) for n in range(control.partitions)]
        )
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=cfg.bootstrap,
            group_id=cfg.group_id,
            client_id=cfg.group_id,
            # Offsets are committed by checkpoint() only, after the snapshot.
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=cfg.heartbeat_interval_ms,
            max_partition_fetch_bytes=4 << 20,
            fetch_max_wait_ms=cfg.fetch_max_wait_ms,
            # Range assigns partition p of every topic to the same member (the
            # default round robin does not): usage p and outcomes p stay together.
            partition_assignment_strategy=(RangePartitionAssignor,),
            **security,
        )
        await self.consumer.start()
        await self._check_partition_counts()
        self.consumer.subscribe(list(cfg.topics.inputs), listener=_Rebalance(self))
        self._loop_task = asyncio.create_task(self._consume_loop(), name="spendsentry-consume")

    async def on_stop(self) -> None:
        task = self._loop_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        try:
            await self._finish_writing()
            if self.consumer is not None and self.producer is not None and self._dirty():
                async with self.lock:
                    await self.checkpoint()
        except Exception:
            log.exception("final checkpoint failed; the last snapshots stand")
        finally:
            for client in (self.consumer, self.control_reader, self.producer):
                if client is not None:
                    with contextlib.suppress(Exception):
                        await client.stop()
            await self.store.stop()

    def _warn_about_old_snapshot(self) -> None:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", self.config.group_id)
        old = self.config.state_dir / f"{safe}.snapshot.pickle"
        if old.exists():
            log.warning(
                "%s is a whole-worker snapshot of an older version and is not used: state now "
                "lives per partition in %s (the engines start fresh); delete the file",
                old,
                self.config.topics.state.name,
            )

    async def _check_partition_counts(self) -> None:
        """The topics as they exist (not as configured) must be co-partitioned."""
        consumer = self.consumer
        assert consumer is not None
        await consumer.topics()  # refreshes the metadata
        usage, outcomes = self.config.topics.inputs
        counts = [len(consumer.partitions_for_topic(t) or ()) for t in (usage, outcomes)]
        check_co_partitioned(usage, counts[0], outcomes, counts[1])

    # -- the loop -------------------------------------------------------------

    def _dirty(self) -> bool:
        return any(pl.dirty for pl in self.parts.values())

    async def _consume_loop(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        cfg = self.config
        try:
            while True:
                batch = await consumer.getmany(
                    timeout_ms=cfg.poll_timeout_ms, max_records=cfg.max_batch
                )
                control = await self._read_control()
                async with self.lock:
                    if self.deadletters.unwritten:
                        await self.deadletters.retry(self.producer)
                    pending = await self._pending()
                    if batch:
                        out = self.parts.handle(batch, pending=pending)
                    else:
                        out = self.parts.tick(pending=pending)
                    if control:
                        self.parts.apply_control(control, out)
                    self._seek_behind()
                    if out.alerts or out.dead_letters or out.commands or self.throttle_edge.waiting:
                        await self._publish(out.alerts, out.dead_letters, out.commands)
                writing = self._writing
                if writing is not None and writing.done():
                    self._writing = None
                    writing.result()  # a failed snapshot write fails the loop
                if (
                    self._writing is None
                    and self._dirty()
                    and time.monotonic() - self._last_checkpoint >= cfg.snapshot_interval_s
                ):
                    # Capture under the lock (milliseconds), write in the
                    # background: producing megabytes of state and waiting for
                    # the broker must not hold up the next batch's alerts.
                    async with self.lock:
                        captured = await self._capture()
                    if captured is not None:
                        self._writing = asyncio.create_task(
                            self._write(captured), name="spendsentry-snapshot"
                        )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("the consume loop failed")
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self.failed is not None and not self.failed.done():
            self.failed.set_result(exc)

    async def _restart_recreated(self, tp: TopicPartition, high: int, position: int) -> None:
        """The log ends before this state's offset: the topic was recreated or
        truncated (a broker that lost its data). What the state reflected is
        gone, and the broker would not say "out of range" until the log grows
        past the old offset, so continue from the start of what is there."""
        consumer = self.consumer
        pipeline = self.parts.owner((tp.topic, tp.partition))
        assert consumer is not None and pipeline is not None
        begin = (await consumer.beginning_offsets([tp]))[tp]
        log.warning(
            "%s:%d ends at %d, before this state's offset %d (recreated or truncated): "
            "continuing from offset %d",
            tp.topic,
            tp.partition,
            high,
            position,
            begin,
        )
        pipeline.offsets[(tp.topic, tp.partition)] = begin
        pipeline.dirty = True
        consumer.seek(tp, begin)

    async def _ensure_state_topic(self) -> None:
        # A broker that lost its topics would auto-create this one with its own
        # partition count the moment a snapshot is produced to it.
        await ensure_topics(
            self.config.bootstrap,
            [self.config.topics.state],
            security=kafka_security.client_kwargs(),
        )

    def _seek_behind(self) -> None:
        """Move partitions that went back behind their state forward again."""
        consumer = self.consumer
        assert consumer is not None
        assigned = consumer.assignment()
        for pl in self.parts.values():
            for (topic, n), offset in pl.behind.items():
                tp = TopicPartition(topic, n)
                if tp in assigned:
                    log.warning("%s:%d went back behind its state: seeking to %d", topic, n, offset)
                    consumer.seek(tp, offset)
            pl.behind.clear()

    async def _read_control(self) -> list[Any]:
        """Operator actions some owned engine has not applied yet."""
        reader = self.control_reader
        if reader is None or not len(self.parts):
            return []
        control = self.config.topics.control
        for n in range(control.partitions):
            start = self.parts.control_start(n)
            if start is not None and self._control_next.get(n) != start:
                # A restored engine may need older actions; the others skip them.
                reader.seek(TopicPartition(control.name, n), start)
                self._control_next[n] = start
        batch = await reader.getmany(timeout_ms=0, max_records=1_000)
        records = [r for rs in batch.values() for r in rs]
        for r in records:
            self._control_next[r.partition] = max(
                self._control_next.get(r.partition, 0), r.offset + 1
            )
        return records

    async def _pending(self) -> set[tuple[str, int]]:
        """Assigned partitions with data on the broker not consumed yet."""
        consumer = self.consumer
        assert consumer is not None
        pending: set[tuple[str, int]] = set()
        lags = []
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                # Not fetched yet: it may hold the oldest events of all.
                pending.add((tp.topic, tp.partition))
                continue
            position = self.parts.position((tp.topic, tp.partition))
            if position is None:
                try:
                    position = await consumer.position(tp)
                except Exception:  # IllegalStateError during a rebalance
                    continue
            if high < position and self.parts.owner((tp.topic, tp.partition)) is not None:
                await self._restart_recreated(tp, high, position)
                continue
            lag = max(0, high - position)
            lags.append((tp.topic, tp.partition, lag))
            if lag:
                pending.add((tp.topic, tp.partition))
        self.metrics.set_consumer_lag(lags)
        # Catching up means a known backlog: a partition not fetched yet (no
        # high watermark) holds event time back, but is no reason to hold
        # throttle commands (an empty one may never report one).
        self._lagging = any(lag for _, _, lag in lags)
        return pending

    async def _publish(
        self,
        alerts: list[Any],
        letters: list[DeadLetter],
        commands: Sequence[ThrottleCommand] = (),
    ) -> None:
        producer = self.producer
        assert producer is not None
        topics = self.config.topics
        for alert in alerts:
            doc = alert.to_dict()
            self.board.observe_alert(doc)
            await producer.send(
                topics.alerts.name, value=orjson.dumps(doc), key=alert.use_case.encode()
            )
        await self._publish_commands(commands)
        if letters:
            # Never raises: what the broker does not take goes to a local file,
            # or is held (and its partition with it) until it can be written.
            await self.deadletters.publish(producer, letters)

    async def _publish_commands(self, commands: Sequence[ThrottleCommand]) -> None:
        """Sign and publish throttle commands on the wall clock (see
        :mod:`.throttle_edge`): held while catching up, then the latest per scope."""
        producer = self.producer
        assert producer is not None
        edge = self.throttle_edge
        now = time.time()
        event_time = self.parts.watermark
        edge.offer(commands, now=now)
        if not edge.due(lagging=self._lagging, event_time=event_time, now=now):
            return
        due = edge.take(self._latest_command)
        keys = self.config.throttle_keys
        for command in due:
            if not keys.can_sign:
                if self.commands_unpublished == 0:
                    log.warning(
                        "no throttle signing key (SPENDSENTRY_THROTTLE_KEY): throttle commands "
                        "are not published; /status counts them"
                    )
                self.commands_unpublished += 1
                continue
            doc = wall_clock_doc(command, keys, event_time=event_time, now=now)
            self.board.observe_throttle(doc)
            await producer.send(
                self.config.topics.throttle.name,
                value=orjson.dumps(doc),
                key=command.scope_key.encode(),
            )
            edge.mark_published(command)
            self.commands_published += 1
        if due:
            self._count_throttles()

    def _latest_command(self, scope_key: str) -> ThrottleCommand | None:
        """The latest command on ``scope_key`` of the engine here that holds it."""
        for pipeline in self.parts.values():
            command = pipeline.engine.planner.latest(scope_key)
            if command is not None:
                return command
        return None

    def _revisit_commands(self, pipelines: Iterable[Pipeline]) -> None:
        """Engines taken over may hold commands that never went out (held while
        catching up, then a crash or a hand-over): publish them at the next flush."""
        from spendsentry.actions.planner import MAX_COMMAND_S

        edge = self.throttle_edge
        edge.known(self._throttle_versions)
        now = time.time()
        for pipeline in pipelines:
            planner = pipeline.engine.planner
            # No command outlives a day: older ones cannot be in force anywhere.
            since = pipeline.watermark - MAX_COMMAND_S
            edge.revisit(planner.recent(since if math.isfinite(since) else -math.inf), now=now)

    def _event_now(self) -> float:
        """The worker's event time (the wall clock before any data)."""
        watermark = self.parts.watermark
        return watermark if math.isfinite(watermark) else time.time()

    # -- snapshots ------------------------------------------------------------

    async def checkpoint(self, partitions: Iterable[int] | None = None) -> None:
        """Make owned engines' state durable, then commit the offsets it reflects.

        Parameters
        ----------
        partitions : iterable of int, optional
            Which partitions to snapshot; by default those whose state changed.

        The caller holds :attr:`lock`, so no batch runs in between. A snapshot
        write the consume loop started is finished first.
        """
        await self._finish_writing()
        captured = await self._capture(partitions)
        if captured is not None:
            await self._write(captured)

    async def _finish_writing(self) -> None:
        writing, self._writing = self._writing, None
        if writing is not None:
            await writing

    async def _capture(self, partitions: Iterable[int] | None = None) -> _Captured | None:
        """Encode the state of ``partitions`` (default: the changed ones).

        The caller holds :attr:`lock`. The encoded bytes are the snapshot, so
        the engines may change as soon as this returns.
        """
        started = time.perf_counter()
        producer = self.producer
        assert producer is not None
        parts = self.parts
        if partitions is None:
            targets = [p for p in parts if parts.pipelines[p].dirty]
        else:
            targets = [p for p in partitions if p in parts]
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
        encoded: dict[int, EncodedSnapshot] = {}
        offsets: list[dict[tuple[str, int], int]] = []
        counters: list[tuple[Pipeline, PartitionCounters]] = []
        for p in targets:
            pipeline = parts.pipelines[p]
            counters.append((pipeline, pipeline.capture_counters()))
            state = pipeline.snapshot_state()
            state["alerts_offsets"] = alerts_offsets
            encoded[p] = self.store.encode(
                p,
                state,
                offsets={f"{t}:{n}": o for (t, n), o in sorted(state["offsets"].items())},
            )
            offsets.append(state["offsets"])
            pipeline.dirty = False
        return _Captured(started, encoded, offsets, counters)

    async def _write(self, captured: _Captured) -> None:
        """Produce captured snapshots, wait for the broker, then commit offsets."""
        producer = self.producer
        assert producer is not None
        sizes = await asyncio.gather(
            *(self.store.write(producer, enc) for enc in captured.encoded.values())
        )
        for p, enc in captured.encoded.items():
            self.snapshot_ids[p] = (self.store.writer, enc.seq)
            log.debug("partition %d: snapshot %d at %s", p, enc.seq, enc.header["offsets"])
        # Durable: a restart restores these snapshots, so /metrics may show them.
        for pipeline, counters in captured.counters:
            pipeline.commit_counters(counters)
        await self._commit(captured.offsets)
        self._last_checkpoint = time.monotonic()
        self.last_snapshot_at = time.time()
        self.last_snapshot_bytes = sum(sizes)
        self.metrics.snapshots.inc(len(captured.encoded))
        self.metrics.snapshot_latency.observe(time.perf_counter() - captured.started)
        self._count_throttles()

    async def _commit(self, states: Iterable[Mapping[tuple[str, int], int]]) -> None:
        """Commit what the (already durable) snapshots reflect.

        A failed commit loses nothing: the snapshot, not the committed offset,
        is where a partition resumes. It only leaves group lag tools behind.
        """
        consumer = self.consumer
        assert consumer is not None
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

    def _count_throttles(self) -> None:
        # Commands carry event time in the engine: judged against the worker's
        # event time, as their wall-clock copies are against the gateways' clock.
        self.metrics.active_throttles.set(len(self.parts.active_commands(self._event_now())))

    async def _read_throttle_versions(self) -> None:
        """Versions of the verified commands on ai.throttle (a lost snapshot, or
        releases from ``spendsentry throttle release``): fresh engines continue
        from them. Records that do not verify with the configured keys are
        counted and ignored: anyone who can write to the topic could forge them."""
        from spendsentry.actions.throttle_topic import read_commands

        keys, name = self.config.throttle_keys, self.config.topics.throttle.name
        if not keys.accepted:
            log.info("no throttle key: versions on %s are not read (none could verify)", name)
            return
        try:
            found = await read_commands(self.config.bootstrap, name, keys=keys, timeout_s=20.0)
        except Exception as exc:
            log.warning("could not read %s for versions: %s", name, exc)
            return
        for reason, n in found.rejected.items():
            self.throttle_rejected[reason] += n
            self.metrics.throttle_records_rejected.labels(reason).inc(n)
        if found.rejected:
            log.warning(
                "%s: records that are not verified commands: %s", name, found.describe_rejected()
            )
        self._throttle_versions = found.versions(MAX_OBSERVED_VERSIONS)

    async def _alerts_end_offsets(self) -> dict[int, int]:
        consumer = self.consumer
        assert consumer is not None
        name = self.config.topics.alerts.name
        tps = [TopicPartition(name, p) for p in range(self.config.topics.alerts.partitions)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: int(o) for tp, o in ends.items()}

    async def _read_back_alerts(self, start: dict[int, int], pipelines: Sequence[Pipeline]) -> None:
        """Learn which alerts were published after the snapshots (then a crash).

        The restored engines will emit them again; their keys make
        :meth:`Pipeline.mark_published` suppress the repeats. Keys of other
        partitions' alerts are remembered too: harmless, since an ``alert_id``
        names its use case, which lives in one partition.
        """
        if not start or not pipelines:
            return
        name = self.config.topics.alerts.name
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.config.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            **kafka_security.client_kwargs(),
        )
        await reader.start()
        try:
            tps = [TopicPartition(name, p) for p in start]
            reader.assign(tps)
            ends = await reader.end_offsets(tps)
            for tp in tps:
                reader.seek(tp, start[tp.partition])
            remaining = {tp for tp in tps if ends[tp] > start[tp.partition]}
            deadline = time.monotonic() + self.config.readback_timeout_s
            seen = 0
            while remaining:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reading back {name} took too long")
                batch = await reader.getmany(timeout_ms=500, max_records=10_000)
                for records in batch.values():
                    for r in records:
                        doc = orjson.loads(r.value or b"{}")
                        key = dedupe_key_of(doc)
                        for pipeline in pipelines:
                            pipeline.mark_published(key)
                        seen += 1
                for tp in list(remaining):
                    if await reader.position(tp) >= ends[tp]:
                        remaining.discard(tp)
            log.info("read back %d alerts published after the snapshot", seen)
        finally:
            await reader.stop()

    # -- rebalance ------------------------------------------------------------

    def _input_tps(self, partition: int) -> list[TopicPartition]:
        return [TopicPartition(t, partition) for t in self.config.topics.inputs]

    async def on_revoked(self, revoked: list[TopicPartition]) -> None:
        numbers = sorted({tp.partition for tp in revoked if tp.topic in self.config.topics.inputs})
        if not numbers:
            return
        try:
            # Revocation hands partitions to another member: make what we did
            # with them durable and committed first. Minutes are not closed
            # early: the next owner continues exactly where this state stops.
            async with self.lock:
                dirty = [p for p in numbers if p in self.parts and self.parts.pipelines[p].dirty]
                if dirty:
                    await self._ensure_state_topic()
                    await self.checkpoint(dirty)
                # Their held dead letters are the next owner's: it reads the
                # records again from the snapshot that did not claim them.
                self.deadletters.forget(numbers)
                for p in numbers:
                    pipeline = self.parts.remove(p)
                    if pipeline is not None:
                        self._parked[p] = (pipeline, self.snapshot_ids.pop(p, None))
            log.info("revoked partitions %s (snapshotted)", numbers)
        except Exception as exc:
            # aiokafka would only log a listener's exception and carry on.
            log.exception("could not hand over partitions %s", numbers)
            self._fail(exc)

    async def on_assigned(self, assigned: list[TopicPartition]) -> None:
        consumer = self.consumer
        assert consumer is not None
        # No fetching until every partition is sought to its snapshot's offsets:
        # otherwise the fetcher starts from the committed offsets meanwhile and
        # the same records can be delivered twice.
        consumer.pause(*assigned)
        try:
            async with self.lock:
                await self._take_over(assigned)
        except Exception as exc:
            log.exception("could not take over the assigned partitions")
            self._fail(exc)
        finally:
            current = consumer.assignment()
            consumer.resume(*[tp for tp in assigned if tp in current])

    async def _take_over(self, assigned: list[TopicPartition]) -> None:
        """Restore (or start) one engine per assigned partition and seek its inputs."""
        consumer = self.consumer
        assert consumer is not None
        inputs = self.config.topics.inputs
        tps = set(assigned)
        numbers = sorted({tp.partition for tp in assigned if tp.topic in inputs})
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
        await self._ensure_state_topic()
        now = time.time()
        fresh: list[int] = []
        #: Kept engines whose snapshot the state topic no longer has.
        lost: list[int] = []
        restored: list[tuple[Pipeline, dict[int, int]]] = []
        for p in numbers:
            if p in self.parts:
                continue
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
                pipeline = parked
                if manifest is None:
                    lost.append(p)
                else:
                    self.snapshot_ids[p] = manifest.snapshot_id
            elif manifest is not None:
                state = await self.store.load(manifest)
                pipeline = self.parts.new_pipeline(p)
                pipeline.restore_state(state, now=now)
                self.snapshot_ids[p] = manifest.snapshot_id
                self.restored.add(p)
                restored.append((pipeline, dict(state.get("alerts_offsets") or {})))
                log.info(
                    "partition %d: restored snapshot %s:%d (%d bytes, %d events)",
                    p,
                    manifest.writer,
                    manifest.seq,
                    manifest.size,
                    pipeline.engine.stats.accepted,
                )
            else:
                pipeline = self.parts.new_pipeline(p)
                for scope_key, version in self._throttle_versions.items():
                    pipeline.engine.planner.observe_version(scope_key, version)
                begin = await consumer.beginning_offsets(own)
                for tp in own:
                    start = committed[tp]
                    pipeline.offsets[(tp.topic, tp.partition)] = (
                        begin[tp] if start is None else start
                    )
                fresh.append(p)
            self.parts.add(pipeline)
            pipeline.watermarks.assign([(tp.topic, tp.partition) for tp in own], now=now)
            for tp in own:
                offset = pipeline.offsets.get((tp.topic, tp.partition))
                if offset is not None:
                    # The snapshot is the truth: committed offsets may lag it (a
                    # crash between the snapshot and the commit).
                    consumer.seek(tp, offset)
        self._parked.clear()
        self._revisit_commands(
            self.parts.pipelines[p] for p in numbers if p in self.parts and p not in fresh
        )
        if restored:
            starts: dict[int, int] = {}
            for _, offsets in restored:
                for n, o in offsets.items():
                    starts[int(n)] = min(starts.get(int(n), o), o)
            await self._read_back_alerts(starts, [pl for pl, _ in restored])
        if fresh or lost:
            # A first snapshot before anything is consumed records where the
            # alerts topic ended: a crash before the next snapshot then reads
            # back (and does not repeat) what this run published.
            for p in fresh + lost:
                self.parts.pipelines[p].dirty = True
            await self.checkpoint(fresh + lost)
        log.info("assigned partitions %s (fresh: %s)", numbers, fresh)
        # What exists now (clients, restored engines) lives for the run: take it
        # out of the cyclic collector's reach, or every full collection walks it
        # again. Measured: ~2x throughput (docs/worker.md, Performance).
        # Objects freed by reference counting are still freed.
        gc.collect()
        gc.freeze()

    # -- introspection --------------------------------------------------------

    def status(
        self, *, use_cases_limit: int = STATUS_USE_CASES, use_cases_offset: int = 0
    ) -> dict[str, Any]:
        """The JSON ``/status`` view (totals over the engines this worker owns).

        Use cases are a page by total cost (``use_cases_limit`` from
        ``use_cases_offset``, at most :data:`MAX_STATUS_USE_CASES`), so the
        view stays small and quick to build under a flood of names.
        """
        use_cases_limit = max(0, min(use_cases_limit, MAX_STATUS_USE_CASES))
        parts = self.parts
        view = parts.view()
        stats = view.stats
        control = self.config.topics.control
        assignment = sorted(
            [
                f"{tp.topic}:{tp.partition}"
                for tp in (self.consumer.assignment() if self.consumer else ())
            ]
            + [f"{control.name}:{n}" for n in range(control.partitions) if self.consumer]
        )
        watermark = None if parts.watermark == -math.inf else parts.watermark
        return {
            "group_id": self.config.group_id,
            "started_at": self.started_at,
            "restored": bool(self.restored),
            "assignment": assignment,
            "records": parts.records,
            "offsets": {f"{t}:{n}": o for (t, n), o in sorted(parts.offsets().items())},
            "watermark": watermark,
            "closed_until_ts": None if view.closed_until is None else view.closed_until * 60,
            "accepted": stats.accepted,
            "duplicates": stats.duplicates,
            "late": stats.late,
            "unpriced": stats.unpriced,
            "use_case_count": view.use_case_count(),
            "use_cases_offset": use_cases_offset,
            "use_cases": {
                name: t.to_dict() for name, t in view.top_totals(use_cases_limit, use_cases_offset)
            },
            "alerts": dict(sorted(stats.alerts.items())),
            "firing": [{"use_case": u, "kind": k, "alert_id": a} for u, k, a in view.firing()],
            "published_alert_keys": parts.published_keys,
            "alerts_suppressed": parts.suppressed,
            "partitions": {str(p): self._partition_status(p) for p in parts},
            "throttle": {
                "active": [
                    wall_clock_body(c, event_time=parts.watermark, now=time.time())
                    for c in parts.active_commands(self._event_now())
                ],
                "held_while_catching_up": len(self.throttle_edge.waiting),
                "published": self.commands_published,
                "unpublished_no_key": self.commands_unpublished,
                "signing_key": self.config.throttle_keys.can_sign,
                "rejected_records": dict(sorted(self.throttle_rejected.items())),
            },
            "state_topic": self.config.topics.state.name,
            "last_snapshot_at": self.last_snapshot_at,
            "last_snapshot_bytes": self.last_snapshot_bytes,
            "view": self.page_snapshot(view),
        }

    def _partition_status(self, p: int) -> dict[str, Any]:
        pl = self.parts.pipelines[p]
        engine = pl.engine
        snapshot = self.snapshot_ids.get(p)
        return {
            "records": pl.records,
            "committed_records": pl.committed.records,
            "offsets": {f"{t}:{n}": o for (t, n), o in sorted(pl.offsets.items())},
            "watermark": None if pl.watermark == -math.inf else pl.watermark,
            "closed_until_ts": None if engine.closed_until is None else engine.closed_until * 60,
            "accepted": engine.stats.accepted,
            "late": engine.stats.late,
            "use_case_count": len(engine.stats.use_cases),
            "use_cases": top_use_cases(engine, STATUS_USE_CASES),
            "restored": p in self.restored,
            "snapshot": None if snapshot is None else {"writer": snapshot[0], "seq": snapshot[1]},
        }

    def page_snapshot(self, view: EngineView | None = None) -> dict[str, Any]:
        """What the status page at ``/`` shows (see :mod:`.status_page`)."""
        parts = self.parts
        view = parts.view() if view is None else view
        return build_snapshot(
            view,
            self.board,
            watermark=None if parts.watermark == -math.inf else parts.watermark,
            header={
                "group_id": self.config.group_id,
                "accepted": view.stats.accepted,
                "records": parts.records,
            },
        )
