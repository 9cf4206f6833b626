"""The Kafka shell around the pipeline: a Faust (mode) service in the worker app.

Why an aiokafka consumer with ``getmany`` and not a Faust agent with
``stream.take()``: measured on this machine, aiokafka ``getmany`` + orjson reads
~370k events/s while Faust's per-message stream path tops out near 14k events/s
(``benchmarks/bench_worker.py`` measures both paths side by side; see
docs/worker.md for the numbers). Just as important, the snapshot protocol
needs full control of offsets: commit only after the snapshot that reflects them
is durable, and seek to the snapshot's offsets on restart. Faust commits on its
own schedule (the architecture notes record a Table losing updates whose source
offsets were already committed). So Faust runs the app (lifecycle, web server
with ``/metrics`` and ``/status``) and this service, started as a dependency of
the app, owns the consumer and producer.

One batch cycle: ``getmany`` -> :meth:`Pipeline.handle` (decode, engine,
watermarks) -> produce alerts (key = use case) and dead letters. Every
``snapshot_interval_s``: flush the producer, snapshot, then commit the offsets
the snapshot reflects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from spendsentry.actions import ThrottleCommand, ThrottleKeys
from spendsentry.broker import ensure_topics
from spendsentry.engine import Engine, EngineConfig
from spendsentry.ingest import DeadLetter, Decoder
from spendsentry.worker.metrics import WorkerMetrics
from spendsentry.worker.pipeline import Pipeline
from spendsentry.worker.state import SnapshotStore
from spendsentry.worker.status_page import StatusBoard, build_snapshot
from spendsentry.worker.topics import TopicsConfig

log = logging.getLogger(__name__)


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
    idle_partition_s: float = 30.0
    snapshot_interval_s: float = 5.0
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    use_case_label_limit: int = 50
    #: Seconds allowed for reading back published alerts on restart.
    readback_timeout_s: float = 30.0
    #: Signs throttle commands; without a signing key none is published.
    throttle_keys: ThrottleKeys = field(default_factory=ThrottleKeys)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, service: IngestService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.service.on_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.service.on_assigned(list(assigned))


class IngestService(faust.Service):
    """Consume usage and outcomes in batches, run the engine, publish results.

    Parameters
    ----------
    config : WorkerConfig
        Broker, topics, state directory and tuning.
    engine : Engine
        A fresh engine; replaced by the snapshot's engine when one exists.
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
        self.pipeline = Pipeline(
            engine,
            decoder,
            metrics,
            idle_after_s=config.idle_partition_s,
            control_topic=config.topics.control.name,
        )
        #: Throttle commands not published for want of a signing key.
        self.commands_unpublished = 0
        self.commands_published = 0
        self.store = SnapshotStore(config.state_dir, config.group_id)
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.lock = asyncio.Lock()
        #: Set when the consume loop fails; the runner stops the worker then.
        self.failed: asyncio.Future[BaseException] | None = None
        self.restored = False
        self.last_snapshot_at: float | None = None
        self.last_snapshot_bytes = 0
        self.started_at = time.time()
        #: Open incidents with evidence, recent alerts, throttles: the status page's data.
        self.board = StatusBoard()
        self._last_checkpoint = time.monotonic()
        self._dirty = False
        self._loop_task: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------

    async def on_start(self) -> None:
        cfg = self.config
        self.failed = asyncio.get_running_loop().create_future()
        # Tansu auto-creates unknown topics with 4 partitions: create ours first.
        await ensure_topics(cfg.bootstrap, cfg.topics.specs())
        state = await asyncio.to_thread(self.store.load)
        if state is not None:
            self.pipeline.restore_state(state)
            self.restored = True
            await self._read_back_alerts(state.get("alerts_offsets") or {})
            log.info(
                "restored snapshot: %d accepted events, offsets %s",
                self.pipeline.engine.stats.accepted,
                state["offsets"],
            )
        self.producer = AIOKafkaProducer(
            bootstrap_servers=cfg.bootstrap, acks="all", linger_ms=5, client_id=cfg.group_id
        )
        await self.producer.start()
        await self._seed_throttle_versions()
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
        )
        await self.consumer.start()
        if state is None:
            # A first snapshot before anything is consumed records where the
            # alerts topic ended: a crash before the first periodic snapshot
            # then reads back (and does not repeat) what this run published.
            await self.checkpoint()
        # ai.control rides along: its offsets are snapshotted and committed with
        # the inputs', so an operator action is applied exactly once per state.
        topics = [*cfg.topics.inputs, cfg.topics.control.name]
        self.consumer.subscribe(topics, listener=_Rebalance(self))
        self._loop_task = asyncio.create_task(self._consume_loop(), name="spendsentry-consume")

    async def on_stop(self) -> None:
        task = self._loop_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        try:
            if self.consumer is not None and self.producer is not None and self._dirty:
                await self.checkpoint()
        except Exception:
            log.exception("final checkpoint failed; the last snapshot stands")
        finally:
            if self.consumer is not None:
                await self.consumer.stop()
            if self.producer is not None:
                await self.producer.stop()

    # -- the loop -------------------------------------------------------------

    async def _consume_loop(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        cfg = self.config
        try:
            while True:
                batch = await consumer.getmany(
                    timeout_ms=cfg.poll_timeout_ms, max_records=cfg.max_batch
                )
                async with self.lock:
                    pending = await self._pending()
                    if batch:
                        out = self.pipeline.handle(batch, pending=pending)
                        self._dirty = True
                    else:
                        out = self.pipeline.tick(pending=pending)
                    if out.alerts or out.dead_letters or out.commands:
                        await self._publish(out.alerts, out.dead_letters, out.commands)
                        self._dirty = True
                if (
                    self._dirty
                    and time.monotonic() - self._last_checkpoint >= cfg.snapshot_interval_s
                ):
                    async with self.lock:
                        await self.checkpoint()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("the consume loop failed")
            if self.failed is not None and not self.failed.done():
                self.failed.set_result(exc)

    async def _pending(self) -> set[tuple[str, int]]:
        """Assigned partitions with data on the broker not consumed yet."""
        consumer = self.consumer
        assert consumer is not None
        pending: set[tuple[str, int]] = set()
        lags = []
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            position = self.pipeline.offsets.get((tp.topic, tp.partition))
            if position is None:
                try:
                    position = await consumer.position(tp)
                except Exception:  # IllegalStateError during a rebalance
                    continue
            lag = max(0, high - position)
            lags.append((tp.topic, tp.partition, lag))
            if lag:
                pending.add((tp.topic, tp.partition))
        self.metrics.set_consumer_lag(lags)
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
        keys = self.config.throttle_keys
        for command in commands:
            if not keys.can_sign:
                if self.commands_unpublished == 0:
                    log.warning(
                        "no throttle signing key (SPENDSENTRY_THROTTLE_KEY): throttle commands "
                        "are not published; /status counts them"
                    )
                self.commands_unpublished += 1
                continue
            doc = command.to_dict(keys)
            self.board.observe_throttle(doc)
            # Re-processing after a restart re-emits identical commands (same
            # version): gateways ignore them, and compaction keeps one.
            await producer.send(
                topics.throttle.name, value=orjson.dumps(doc), key=command.scope_key.encode()
            )
            self.commands_published += 1
        if commands:
            self._count_throttles()
        for letter in letters:
            await producer.send(
                topics.deadletter.name,
                value=orjson.dumps(letter.to_dict()),
                key=letter.use_case.encode() if letter.use_case else None,
            )

    # -- snapshots ------------------------------------------------------------

    async def checkpoint(self) -> None:
        """Make the current state durable, then commit the offsets it reflects.

        The caller holds :attr:`lock`, so no batch runs in between.
        """
        started = time.perf_counter()
        consumer, producer = self.consumer, self.producer
        assert consumer is not None and producer is not None
        # Alerts and dead letters of the state being snapshotted are on the
        # broker before the snapshot claims them as published.
        await producer.flush()
        state = self.pipeline.snapshot_state()
        state["alerts_offsets"] = await self._alerts_end_offsets()
        self.last_snapshot_bytes = await asyncio.to_thread(self.store.save, state)
        assigned = consumer.assignment()
        offsets = {
            TopicPartition(t, p): o
            for (t, p), o in state["offsets"].items()
            if TopicPartition(t, p) in assigned
        }
        if offsets:
            await consumer.commit(offsets)
        self._dirty = False
        self._last_checkpoint = time.monotonic()
        self.last_snapshot_at = time.time()
        self.metrics.snapshots.inc()
        self.metrics.snapshot_latency.observe(time.perf_counter() - started)
        self._count_throttles()
        self.metrics.rerank_use_cases()

    def _count_throttles(self) -> None:
        # Gateways expire commands by wall clock, so "active" is judged by it too.
        self.metrics.active_throttles.set(len(self.pipeline.engine.planner.active(time.time())))

    async def _seed_throttle_versions(self) -> None:
        """Make versions continue from what ai.throttle holds (a lost snapshot,
        or releases from ``spendsentry throttle release``)."""
        from spendsentry.client.guard import read_latest

        try:
            latest = await read_latest(
                self.config.bootstrap, self.config.topics.throttle.name, timeout_s=20.0
            )
        except Exception as exc:
            log.warning("could not read %s for versions: %s", self.config.topics.throttle.name, exc)
            return
        planner = self.pipeline.engine.planner
        for scope_key, (doc, _) in latest.items():
            planner.observe_version(scope_key, int(doc["version"]))

    async def _alerts_end_offsets(self) -> dict[int, int]:
        consumer = self.consumer
        assert consumer is not None
        name = self.config.topics.alerts.name
        tps = [TopicPartition(name, p) for p in range(self.config.topics.alerts.partitions)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: int(o) for tp, o in ends.items()}

    async def _read_back_alerts(self, start: dict[int, int]) -> None:
        """Learn which alerts were published after the snapshot (then a crash).

        The engine, restored to the snapshot, will emit them again; their keys
        make :meth:`Pipeline.mark_published` suppress the repeats.
        """
        if not start:
            return
        name = self.config.topics.alerts.name
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.config.bootstrap, group_id=None, enable_auto_commit=False
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
                        key = "{}:{}:{}:{}".format(
                            doc.get("alert_id"),
                            doc.get("status"),
                            doc.get("severity"),
                            doc.get("incident_seq"),
                        )
                        self.pipeline.mark_published(key)
                        seen += 1
                for tp in list(remaining):
                    if await reader.position(tp) >= ends[tp]:
                        remaining.discard(tp)
            log.info("read back %d alerts published after the snapshot", seen)
        finally:
            await reader.stop()

    # -- rebalance ------------------------------------------------------------

    async def on_revoked(self, revoked: list[TopicPartition]) -> None:
        if not revoked:
            return
        # Revocation hands partitions to another member: make what we did with
        # them durable and committed first.
        async with self.lock:
            if self._dirty:
                await self.checkpoint()
            self.pipeline.watermarks.forget([(tp.topic, tp.partition) for tp in revoked])

    async def on_assigned(self, assigned: list[TopicPartition]) -> None:
        consumer = self.consumer
        assert consumer is not None
        now = time.time()
        control = self.config.topics.control.name
        # Operator actions carry no event time: they must not hold the watermark.
        self.pipeline.watermarks.assign(
            [(tp.topic, tp.partition) for tp in assigned if tp.topic != control], now=now
        )
        for tp in assigned:
            offset = self.pipeline.offsets.get((tp.topic, tp.partition))
            if offset is not None:
                # The snapshot is the truth: committed offsets may lag it (a crash
                # between the snapshot and the commit).
                consumer.seek(tp, offset)
        log.info("assigned %d partitions", len(assigned))

    # -- introspection --------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The JSON ``/status`` view."""
        p = self.pipeline
        engine = p.engine
        stats = engine.stats
        assignment = sorted(
            f"{tp.topic}:{tp.partition}"
            for tp in (self.consumer.assignment() if self.consumer else ())
        )
        watermark = None if p.watermark == -math.inf else p.watermark
        return {
            "group_id": self.config.group_id,
            "started_at": self.started_at,
            "restored": self.restored,
            "assignment": assignment,
            "records": p.records,
            "offsets": {f"{t}:{n}": o for (t, n), o in sorted(p.offsets.items())},
            "watermark": watermark,
            "closed_until_ts": None if engine.closed_until is None else engine.closed_until * 60,
            "accepted": stats.accepted,
            "duplicates": stats.duplicates,
            "late": stats.late,
            "unpriced": stats.unpriced,
            "use_cases": {name: t.to_dict() for name, t in sorted(stats.use_cases.items())},
            "alerts": dict(sorted(stats.alerts.items())),
            "firing": [{"use_case": u, "kind": k, "alert_id": a} for u, k, a in engine.firing()],
            "published_alert_keys": len(p.published),
            "alerts_suppressed": p.suppressed,
            "throttle": {
                "active": [c.body() for c in engine.planner.active(time.time())],
                "published": self.commands_published,
                "unpublished_no_key": self.commands_unpublished,
                "signing_key": self.config.throttle_keys.can_sign,
            },
            "last_snapshot_at": self.last_snapshot_at,
            "last_snapshot_bytes": self.last_snapshot_bytes,
            "view": self.page_snapshot(),
        }

    def page_snapshot(self) -> dict[str, Any]:
        """What the status page at ``/`` shows (see :mod:`.status_page`)."""
        p = self.pipeline
        return build_snapshot(
            p.engine,
            self.board,
            watermark=None if p.watermark == -math.inf else p.watermark,
            header={
                "group_id": self.config.group_id,
                "accepted": p.engine.stats.accepted,
                "records": p.records,
            },
        )
