"""The worker's Kafka clients (group consumer, producer, admin calls), made in one place.

Every collaborator of :class:`~spendsentry.worker.service.IngestService` reads
the clients from here when it needs them, so the service can create them at
start (and a test can put its own producer in).
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from spendsentry.kafka import ensure_topics
from spendsentry.kafka import security as kafka_security
from spendsentry.worker.config import WorkerConfig
from spendsentry.worker.topics import check_co_partitioned


class KafkaClients:
    """The group member that consumes the inputs and the producer of every output.

    Parameters
    ----------
    config : WorkerConfig
        Broker, group and topics.

    Examples
    --------
    >>> from spendsentry.worker.config import WorkerConfig
    >>> clients = KafkaClients(WorkerConfig("localhost:9092"))
    >>> clients.consumer is None and clients.producer is None
    True
    >>> clients.assignment()
    set()
    """

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        #: Security settings, read from the environment once at start.
        self.security: dict[str, Any] = {}

    def require_consumer(self) -> AIOKafkaConsumer:
        """The group consumer (started)."""
        consumer = self.consumer
        assert consumer is not None
        return consumer

    def require_producer(self) -> AIOKafkaProducer:
        """The producer (started)."""
        producer = self.producer
        assert producer is not None
        return producer

    def assignment(self) -> set[TopicPartition]:
        """The input partitions assigned to this member (none before start)."""
        return set(self.consumer.assignment()) if self.consumer is not None else set()

    async def ensure_topics(self) -> None:
        """Create the configured topics that do not exist yet."""
        self.security = kafka_security.client_kwargs()
        # Tansu auto-creates unknown topics with 4 partitions: create ours first.
        await ensure_topics(
            self.config.bootstrap, self.config.topics.specs(), security=self.security
        )

    async def ensure_state_topic(self) -> None:
        """Create the state topic again if the broker lost it."""
        # A broker that lost its topics would auto-create this one with its own
        # partition count the moment a snapshot is produced to it.
        await ensure_topics(
            self.config.bootstrap, [self.config.topics.state], security=self.security
        )

    async def start_producer(self) -> None:
        cfg = self.config
        self.producer = AIOKafkaProducer(
            bootstrap_servers=cfg.bootstrap,
            acks="all",
            linger_ms=5,
            client_id=cfg.group_id,
            max_request_size=cfg.max_request_size,
            **self.security,
        )
        await self.producer.start()

    async def start_consumer(self, listener: ConsumerRebalanceListener) -> None:
        """Join the group on the input topics (after checking they are co-partitioned)."""
        cfg = self.config
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=cfg.bootstrap,
            group_id=cfg.group_id,
            client_id=cfg.group_id,
            # Offsets are committed after the snapshot only (see checkpoint.py).
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=cfg.heartbeat_interval_ms,
            max_partition_fetch_bytes=4 << 20,
            fetch_max_wait_ms=cfg.fetch_max_wait_ms,
            # Range assigns partition p of every topic to the same member (the
            # default round robin does not): usage p and outcomes p stay together.
            partition_assignment_strategy=(RangePartitionAssignor,),
            **self.security,
        )
        await self.consumer.start()
        await self._check_partition_counts()
        self.consumer.subscribe(list(cfg.topics.inputs), listener=listener)

    async def _check_partition_counts(self) -> None:
        """The topics as they exist (not as configured) must be co-partitioned."""
        consumer = self.require_consumer()
        await consumer.topics()  # refreshes the metadata
        usage, outcomes = self.config.topics.inputs
        counts = [len(consumer.partitions_for_topic(t) or ()) for t in (usage, outcomes)]
        check_co_partitioned(usage, counts[0], outcomes, counts[1])

    def reader(self, *, offset_reset: str = "latest") -> AIOKafkaConsumer:
        """A consumer outside the group, for reading a topic by hand (not started)."""
        return AIOKafkaConsumer(
            bootstrap_servers=self.config.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset=offset_reset,
            **self.security,
        )

    async def stop(self, *others: AIOKafkaConsumer | None) -> None:
        """Stop the consumer, then ``others``, then the producer (errors ignored)."""
        for client in (self.consumer, *others, self.producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
