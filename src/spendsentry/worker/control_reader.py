"""Reads operator actions from ``ai.control`` outside the group, for every owned engine."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from spendsentry.worker.partitions import PartitionSet


class ControlReader:
    """Every worker applies every action: ``ai.control`` is read from where the
    least advanced owned engine stops, not through the consumer group.

    Parameters
    ----------
    name : str
        The control topic.
    partitions : int
        Its partition count (all are read).

    Examples
    --------
    >>> reader = ControlReader("ai.control", 2)
    >>> [tp.partition for tp in reader.partitions()]
    [0, 1]
    """

    def __init__(self, name: str, partitions: int) -> None:
        self.name = name
        self.count = partitions
        self.reader: AIOKafkaConsumer | None = None
        #: Next offset the reader returns, per control partition.
        self._next: dict[int, int] = {}

    def partitions(self) -> list[TopicPartition]:
        """The control topic's partitions."""
        return [TopicPartition(self.name, n) for n in range(self.count)]

    async def start(self, reader: AIOKafkaConsumer) -> None:
        """Start ``reader`` (a consumer outside the group) on every control partition."""
        self.reader = reader
        await reader.start()
        reader.assign(self.partitions())

    async def read(self, parts: PartitionSet) -> list[Any]:
        """Operator actions some owned engine has not applied yet."""
        reader = self.reader
        if reader is None or not len(parts):
            return []
        for n in range(self.count):
            start = parts.control_start(n)
            if start is not None and self._next.get(n) != start:
                # A restored engine may need older actions; the others skip them.
                reader.seek(TopicPartition(self.name, n), start)
                self._next[n] = start
        batch = await reader.getmany(timeout_ms=0, max_records=1_000)
        records = [r for rs in batch.values() for r in rs]
        for r in records:
            self._next[r.partition] = max(self._next.get(r.partition, 0), r.offset + 1)
        return records
