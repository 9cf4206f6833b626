"""Where the group consumer stands against the broker: backlog, lag, recreated and rewound logs."""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaConsumer, TopicPartition

from spendsentry.worker.metrics import WorkerMetrics
from spendsentry.worker.partitions import PartitionSet
from spendsentry.worker.pipeline import TP

log = logging.getLogger(__name__)


class LagTracker:
    """Finds the assigned partitions with records waiting and reports consumer lag.

    Parameters
    ----------
    metrics : WorkerMetrics
        Where consumer lag goes.

    Examples
    --------
    >>> from prometheus_client import CollectorRegistry
    >>> LagTracker(WorkerMetrics.create(CollectorRegistry())).lagging
    False
    """

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics
        #: Whether an assigned partition had records waiting at the last poll.
        self.lagging = False

    async def pending(self, consumer: AIOKafkaConsumer, parts: PartitionSet) -> set[TP]:
        """Assigned partitions with data on the broker not consumed yet."""
        pending: set[TP] = set()
        lags = []
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                # Not fetched yet: it may hold the oldest events of all.
                pending.add((tp.topic, tp.partition))
                continue
            position = parts.position((tp.topic, tp.partition))
            if position is None:
                try:
                    position = await consumer.position(tp)
                except Exception:  # IllegalStateError during a rebalance
                    continue
            if high < position and parts.owner((tp.topic, tp.partition)) is not None:
                await restart_recreated(consumer, parts, tp, high, position)
                continue
            lag = max(0, high - position)
            lags.append((tp.topic, tp.partition, lag))
            if lag:
                pending.add((tp.topic, tp.partition))
        self.metrics.set_consumer_lag(lags)
        # Catching up means a known backlog: a partition not fetched yet (no
        # high watermark) holds event time back, but is no reason to hold
        # throttle commands (an empty one may never report one).
        self.lagging = any(lag for _, _, lag in lags)
        return pending


async def restart_recreated(
    consumer: AIOKafkaConsumer, parts: PartitionSet, tp: TopicPartition, high: int, position: int
) -> None:
    """The log ends before this state's offset: the topic was recreated or
    truncated (a broker that lost its data). What the state reflected is
    gone, and the broker would not say "out of range" until the log grows
    past the old offset, so continue from the start of what is there."""
    pipeline = parts.owner((tp.topic, tp.partition))
    assert pipeline is not None
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
    pipeline.rewind((tp.topic, tp.partition), begin)
    consumer.seek(tp, begin)


def seek_behind(consumer: AIOKafkaConsumer, parts: PartitionSet) -> None:
    """Move partitions that went back behind their state forward again."""
    assigned = consumer.assignment()
    for pl in parts.values():
        for (topic, n), offset in pl.take_behind().items():
            tp = TopicPartition(topic, n)
            if tp in assigned:
                log.warning("%s:%d went back behind its state: seeking to %d", topic, n, offset)
                consumer.seek(tp, offset)
