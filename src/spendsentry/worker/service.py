"""The worker's runner: a Faust (mode) service that consumes, processes and publishes.

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
(:class:`~spendsentry.worker.partitions.PartitionSet`). The service runs the
loop only; each other job has one owner:

- :mod:`.clients`: the group consumer and the producer;
- :mod:`.control_reader`: operator actions from ``ai.control``;
- :mod:`.lag`: backlog, consumer lag, recreated topics;
- :mod:`.publisher`: alerts, signed throttle commands, dead letters;
- :mod:`.checkpoint`: snapshots, then offset commits;
- :mod:`.handover`: rebalances (snapshot on revoke, restore on assign);
- :mod:`.status`: the ``/status`` view.

One batch cycle: ``getmany`` -> :meth:`PartitionSet.handle` (decode, engines,
watermarks) -> operator actions from ``ai.control`` -> publish. Every
``snapshot_interval_s`` the changed engines are captured under the lock and
written in the background (:class:`~.checkpoint.Checkpointer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from spendsentry.engine import Engine
from spendsentry.focus import write_hours
from spendsentry.ingest import Decoder
from spendsentry.ingest.deadletter import dead_letter_limit
from spendsentry.worker.checkpoint import Checkpointer
from spendsentry.worker.clients import KafkaClients
from spendsentry.worker.config import WorkerConfig
from spendsentry.worker.control_reader import ControlReader
from spendsentry.worker.deadletters import DeadLetterSink
from spendsentry.worker.handover import Handover
from spendsentry.worker.lag import LagTracker, seek_behind
from spendsentry.worker.metrics import WorkerMetrics, label_share
from spendsentry.worker.partitions import EngineView, PartitionSet, engine_share
from spendsentry.worker.publisher import MAX_OBSERVED_VERSIONS, Publisher
from spendsentry.worker.snapshots import KafkaSnapshotStore
from spendsentry.worker.status import MAX_STATUS_USE_CASES, STATUS_USE_CASES, WorkerStatus
from spendsentry.worker.status_page import StatusBoard

__all__ = [
    "MAX_OBSERVED_VERSIONS",
    "MAX_STATUS_USE_CASES",
    "STATUS_USE_CASES",
    "IngestService",
    "WorkerConfig",
]

log = logging.getLogger(__name__)


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
        topics = config.topics
        #: Per engine: the worker's caps on names divided across the partitions.
        self._engine_config = engine_share(engine.config, topics.usage.partitions)
        self.parts = PartitionSet(
            self._new_engine,
            metrics,
            inputs=topics.inputs,
            idle_after_s=config.idle_partition_s,
            decoder=decoder,
            use_case_labels=label_share(config.use_case_label_limit, topics.usage.partitions),
            focus=config.focus_dir is not None,
        )
        #: Publishes dead letters; one it could not write holds its partition's commit.
        self.deadletters = DeadLetterSink(
            topics.deadletter.name,
            topics.inputs,
            config.state_dir / "deadletters.jsonl",
            metrics,
            max_bytes=dead_letter_limit(config.max_request_size),
        )
        self.lock = asyncio.Lock()
        #: Set when the consume loop fails; the runner stops the worker then.
        self.failed: asyncio.Future[BaseException] | None = None
        self.clients = KafkaClients(config)
        self.store = KafkaSnapshotStore(config.bootstrap, topics.state, config.group_id)
        #: Open incidents with evidence, recent alerts, throttles: the status page's data.
        self.board = StatusBoard()
        self.control = ControlReader(topics.control.name, topics.control.partitions)
        self.lag = LagTracker(metrics)
        self.publisher = Publisher(config, self.parts, self.deadletters, self.board, metrics)
        self.checkpoints = Checkpointer(
            self.clients,
            self.store,
            self.parts,
            self.deadletters,
            metrics,
            interval_s=config.snapshot_interval_s,
            on_durable=self.publisher.count_throttles,
        )
        self.handover = Handover(
            self.clients,
            self.parts,
            self.store,
            self.checkpoints,
            self.publisher,
            self.deadletters,
            lock=self.lock,
            fail=self._fail,
            readback_timeout_s=config.readback_timeout_s,
        )
        self.view = WorkerStatus(
            self.clients, self.parts, self.handover, self.checkpoints, self.publisher, self.board
        )
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

    @property
    def producer(self) -> AIOKafkaProducer | None:
        """The producer (None before start); the Slack interactions publish with it."""
        return self.clients.producer

    @producer.setter
    def producer(self, producer: AIOKafkaProducer | None) -> None:
        self.clients.producer = producer

    @property
    def consumer(self) -> AIOKafkaConsumer | None:
        """The group consumer (None before start)."""
        return self.clients.consumer

    # -- lifecycle ------------------------------------------------------------

    async def on_start(self) -> None:
        cfg = self.config
        self.failed = asyncio.get_running_loop().create_future()
        cfg.topics.check_co_partitioned()
        await self.clients.ensure_topics()
        self._warn_about_old_snapshot()
        await self.clients.start_producer()
        await self.store.start()
        await self.publisher.read_throttle_versions()
        await self.publisher.watch.start()
        await self.control.start(self.clients.reader(offset_reset="earliest"))
        await self.clients.start_consumer(self.handover.listener())
        self._loop_task = asyncio.create_task(self._consume_loop(), name="spendsentry-consume")

    async def on_stop(self) -> None:
        task = self._loop_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        try:
            await self.checkpoints.finish_writing()
            started = self.clients.consumer is not None and self.clients.producer is not None
            if started and self.parts.changed():
                async with self.lock:
                    await self.checkpoints.checkpoint()
        except Exception:
            log.exception("final checkpoint failed; the last snapshots stand")
        finally:
            await self.publisher.watch.stop()
            await self.clients.stop(self.control.reader)
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

    # -- the loop -------------------------------------------------------------

    async def _consume_loop(self) -> None:
        consumer = self.clients.require_consumer()
        cfg = self.config
        try:
            while True:
                batch = await consumer.getmany(
                    timeout_ms=cfg.poll_timeout_ms, max_records=cfg.max_batch
                )
                await self._process(consumer, batch)
                self.checkpoints.reap()  # a failed snapshot write fails the loop
                if self.checkpoints.due():
                    async with self.lock:
                        await self.checkpoints.start()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("the consume loop failed")
            self._fail(exc)

    async def _process(self, consumer: AIOKafkaConsumer, batch: dict[Any, Any]) -> None:
        """One batch (or none) through the engines, and its results out."""
        control = await self.control.read(self.parts)
        async with self.lock:
            producer = self.clients.require_producer()
            if self.deadletters.unwritten:
                await self.deadletters.retry(producer)
            pending = await self.lag.pending(consumer, self.parts)
            if batch:
                out = self.parts.handle(batch, pending=pending)
            else:
                out = self.parts.tick(pending=pending)
            if control:
                self.parts.apply_control(control, out)
            seek_behind(consumer, self.parts)
            if self.publisher.has_work(out):
                await self.publisher.publish(
                    producer, out.alerts, out.dead_letters, out.commands, lagging=self.lag.lagging
                )
            if out.focus and self.config.focus_dir is not None:
                # Before the snapshot that forgets these hours: a crash in between
                # rewrites the same files from the previous snapshot.
                await asyncio.to_thread(write_hours, self.config.focus_dir, out.focus)

    def _fail(self, exc: BaseException) -> None:
        if self.failed is not None and not self.failed.done():
            self.failed.set_result(exc)

    # -- checkpoints and introspection ------------------------------------------

    async def checkpoint(self, partitions: Any = None) -> None:
        """Make owned engines' state durable, then commit the offsets it reflects
        (:meth:`.checkpoint.Checkpointer.checkpoint`; the caller holds :attr:`lock`)."""
        await self.checkpoints.checkpoint(partitions)

    def status(
        self, *, use_cases_limit: int = STATUS_USE_CASES, use_cases_offset: int = 0
    ) -> dict[str, Any]:
        """The JSON ``/status`` view (:meth:`.status.WorkerStatus.status`)."""
        return self.view.status(use_cases_limit=use_cases_limit, use_cases_offset=use_cases_offset)

    def page_snapshot(self, view: EngineView | None = None) -> dict[str, Any]:
        """What the status page at ``/`` shows (see :mod:`.status_page`)."""
        return self.view.page_snapshot(view)
