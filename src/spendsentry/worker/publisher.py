"""Puts one batch's results on the broker: alerts, signed throttle commands and dead letters."""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from spendsentry.actions import ThrottleCommand
from spendsentry.ingest import DeadLetter
from spendsentry.worker.config import WorkerConfig
from spendsentry.worker.deadletters import DeadLetterSink
from spendsentry.worker.metrics import WorkerMetrics
from spendsentry.worker.partitions import PartitionSet
from spendsentry.worker.pipeline import BatchOutput, Pipeline
from spendsentry.worker.status_page import StatusBoard
from spendsentry.worker.throttle_edge import CommandEdge, wall_clock_doc
from spendsentry.worker.throttle_watch import ThrottleWatch, in_force

log = logging.getLogger(__name__)

#: Scopes whose version on ai.throttle a fresh engine learns at most (the most
#: recently issued): state grows with what the worker signed, not the topic.
MAX_OBSERVED_VERSIONS = 10_000


class Publisher:
    """Publishes alerts (key = use case), throttle commands on the wall clock
    (signed, through :class:`~spendsentry.worker.throttle_edge.CommandEdge`) and
    dead letters (through :class:`~spendsentry.worker.deadletters.DeadLetterSink`).

    Parameters
    ----------
    config : WorkerConfig
        Topics and throttle keys.
    parts : PartitionSet
        The owned engines (event time, the commands they hold).
    deadletters : DeadLetterSink
        Where dead letters go.
    board : StatusBoard
        The status page's data: sees every alert and command published.
    metrics : WorkerMetrics
        Where active throttles and rejected ``ai.throttle`` records are counted.

    Examples
    --------
    >>> from prometheus_client import CollectorRegistry
    >>> from spendsentry.worker.partitions import PartitionSet
    >>> config = WorkerConfig("localhost:9092")
    >>> metrics = WorkerMetrics.create(CollectorRegistry())
    >>> parts = PartitionSet(lambda: None, inputs=config.topics.inputs)
    >>> from pathlib import Path
    >>> sink = DeadLetterSink(
    ...     "ai.deadletter", config.topics.inputs, Path("unused.jsonl"), metrics, max_bytes=1 << 20
    ... )
    >>> publisher = Publisher(config, parts, sink, StatusBoard(), metrics)
    >>> publisher.has_work(BatchOutput()), publisher.commands_published
    (False, 0)
    """

    def __init__(
        self,
        config: WorkerConfig,
        parts: PartitionSet,
        deadletters: DeadLetterSink,
        board: StatusBoard,
        metrics: WorkerMetrics,
    ) -> None:
        self.config = config
        self.parts = parts
        self.deadletters = deadletters
        self.board = board
        self.metrics = metrics
        #: Re-stamps commands onto the wall clock and holds them while catching up.
        self.throttle_edge = CommandEdge()
        #: Throttle commands not published for want of a signing key.
        self.commands_unpublished = 0
        self.commands_published = 0
        #: Results of the batch being published (``/status`` shows them: a batch
        #: counted as consumed may still have alerts or commands on their way).
        self.in_flight = 0
        #: Latest version per scope on ai.throttle at start (fresh engines continue them).
        self.throttle_versions: dict[str, int] = {}
        #: Records on ai.throttle ignored at start, by reason (not verified commands).
        self.throttle_rejected: Counter[str] = Counter()
        #: Every verified command on ai.throttle (other workers', operators'), followed.
        self.watch = ThrottleWatch(
            config.bootstrap,
            config.topics.throttle.name,
            config.throttle_keys,
            on_change=self.count_throttles,
        )

    def has_work(self, out: BatchOutput) -> bool:
        """Whether :meth:`publish` has anything to do for ``out``."""
        return bool(out.alerts or out.dead_letters or out.commands or self.throttle_edge.waiting)

    async def publish(
        self,
        producer: AIOKafkaProducer,
        alerts: list[Any],
        letters: list[DeadLetter],
        commands: Sequence[ThrottleCommand] = (),
        *,
        lagging: bool = False,
    ) -> None:
        """Publish one batch's results (``lagging``: a backlog is being read)."""
        self.in_flight = len(alerts) + len(letters) + len(commands)
        try:
            topics = self.config.topics
            for alert in alerts:
                doc = alert.to_dict()
                self.board.observe_alert(doc)
                await producer.send(
                    topics.alerts.name, value=orjson.dumps(doc), key=alert.use_case.encode()
                )
            await self._publish_commands(producer, commands, lagging)
            if letters:
                # Never raises: what the broker does not take goes to a local file,
                # or is held (and its partition with it) until it can be written.
                await self.deadletters.publish(producer, letters)
        finally:
            self.in_flight = 0

    async def _publish_commands(
        self, producer: AIOKafkaProducer, commands: Sequence[ThrottleCommand], lagging: bool
    ) -> None:
        """Sign and publish throttle commands on the wall clock (see
        :mod:`.throttle_edge`): held while catching up, then the latest per scope."""
        edge = self.throttle_edge
        now = time.time()
        event_time = self.parts.watermark
        edge.offer(commands, now=now)
        if not edge.due(lagging=lagging, event_time=event_time, now=now):
            return
        due = edge.take(self.parts.latest_command)
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
            self.count_throttles()

    def start_fresh(self, pipeline: Pipeline) -> None:
        """A fresh engine continues the command versions found on ai.throttle."""
        pipeline.observe_throttle_versions(self.throttle_versions)

    def revisit(self, pipelines: Iterable[Pipeline]) -> None:
        """Engines taken over may hold commands that never went out (held while
        catching up, then a crash or a hand-over): publish them at the next flush."""
        edge = self.throttle_edge
        edge.known(self.throttle_versions)
        now = time.time()
        for pipeline in pipelines:
            edge.revisit(pipeline.recent_commands(), now=now)

    def event_now(self) -> float:
        """The worker's event time (the wall clock before any data)."""
        watermark = self.parts.watermark
        return watermark if math.isfinite(watermark) else time.time()

    def count_throttles(self) -> None:
        """Set the gauge: scopes throttled by the engines' commands or by any
        verified command in force on ai.throttle (see :mod:`.throttle_watch`)."""
        count, _ = self.throttles_in_force()
        self.metrics.active_throttles.set(count)

    def throttles_in_force(self) -> tuple[int, list[dict[str, Any]]]:
        """How many scopes are throttled, and the topic's commands in force that
        are not the engines' (issued by another worker or an operator)."""
        # Engine commands carry event time: judged against the worker's event
        # time, as their wall-clock copies are against the gateways' clock.
        own = self.parts.active_commands(self.event_now())
        return in_force(own, self.watch.latest, now=time.time())

    async def read_throttle_versions(self) -> None:
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
        self.throttle_versions = found.versions(MAX_OBSERVED_VERSIONS)
