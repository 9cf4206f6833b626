"""Dead letters on their way out of the worker: never fatal, never lost.

A dead letter the broker does not take (too big for the producer, a broker
error, a timeout) used to end the consume loop, and the shutdown checkpoint
then committed past its record. Here a failed publish is logged with its
reason and counted, and the letter goes to a local JSON Lines file instead.
Every letter is also noted in the log, rate-limited and without its record
(:mod:`.deadletter_log`).
Only when that write fails too is the letter kept in memory and retried every
batch; until it is written somewhere, the service neither snapshots nor
commits the partition it came from (:meth:`DeadLetterSink.held`), so a restart
reads its record again and writes the letter then.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from spendsentry.ingest import DeadLetter
from spendsentry.ingest.deadletter import one_per_source
from spendsentry.worker.deadletter_log import DeadLetterLog
from spendsentry.worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Encoded:
    """A dead letter as it goes on the topic, and the input partition it holds."""

    #: The input partition number whose record it reports; None when it comes
    #: from elsewhere (``ai.control``): then every partition waits for it.
    partition: int | None
    key: bytes | None
    value: bytes


class DeadLetterSink:
    """Publishes dead letters to ``topic``; falls back to ``fallback`` (a file).

    Parameters
    ----------
    topic : str
        The dead-letter topic.
    inputs : collection of str
        The input topics: a letter from one of them holds that partition number.
    fallback : Path
        The local JSON Lines file for letters the broker did not take.
    metrics : WorkerMetrics
        Counts failures and letters written nowhere yet.
    max_bytes : int
        The bound of one serialized letter
        (:func:`~spendsentry.ingest.deadletter.dead_letter_limit` of the
        producer's ``max_request_size``).
    """

    def __init__(
        self,
        topic: str,
        inputs: Collection[str],
        fallback: Path,
        metrics: WorkerMetrics,
        *,
        max_bytes: int,
    ) -> None:
        self.topic = topic
        self.inputs = frozenset(inputs)
        self.fallback = fallback
        self.metrics = metrics
        self.max_bytes = max_bytes
        #: Letters neither on the topic nor in the file: retried every batch.
        self.unwritten: list[_Encoded] = []
        #: Rate-limited log lines: reason and position, never the record.
        self.log_book = DeadLetterLog()

    def encode(self, letter: DeadLetter) -> _Encoded:
        doc = letter.to_dict(self.max_bytes)
        use_case = doc.get("use_case")
        partition = letter.source.partition if letter.source.name in self.inputs else None
        return _Encoded(partition, use_case.encode() if use_case else None, orjson.dumps(doc))

    async def publish(self, producer: Any, letters: Sequence[DeadLetter]) -> None:
        """Publish ``letters`` and wait for the broker; what fails goes elsewhere.

        Letters of one record (the engine's ``late`` ones) go out as one.
        """
        self.log_book.note(letters)
        merged = one_per_source(list(letters))
        await self._deliver(producer, [self.encode(letter) for letter in merged])

    async def retry(self, producer: Any) -> None:
        """Try the letters written nowhere yet again (topic, then file)."""
        items, self.unwritten = self.unwritten, []
        await self._deliver(producer, items)
        self.metrics.deadletters_unwritten.set(len(self.unwritten))
        if items and not self.unwritten:
            log.info("%d held dead letters written: their partitions commit again", len(items))

    def held(self, partitions: Iterable[int]) -> set[int]:
        """Those of ``partitions`` that must not be snapshotted or committed yet."""
        wanted = set(partitions)
        if any(item.partition is None for item in self.unwritten):
            return wanted
        return wanted & {item.partition for item in self.unwritten}

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the held letters of revoked partitions.

        Their snapshots were held back, so the next owner reads the records
        again and writes the letters itself.
        """
        gone = set(partitions)
        self.unwritten = [item for item in self.unwritten if item.partition not in gone]
        self.metrics.deadletters_unwritten.set(len(self.unwritten))

    async def _deliver(self, producer: Any, items: list[_Encoded]) -> None:
        sent: list[tuple[_Encoded, asyncio.Future[Any]]] = []
        failed: list[tuple[_Encoded, BaseException]] = []
        for item in items:
            try:
                # Raises at once for a record over max_request_size or a full buffer.
                future = await producer.send(self.topic, value=item.value, key=item.key)
            except Exception as exc:
                failed.append((item, exc))
                continue
            sent.append((item, future))
        if sent:
            # Wait for the broker: a letter counts as written once acknowledged,
            # and the snapshot that claims its record must not come before.
            results = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
            failed += [
                (item, result)
                for (item, _), result in zip(sent, results, strict=True)
                if isinstance(result, BaseException)
            ]
        for item, problem in failed:
            self._fall_back(item, problem)
        self.metrics.deadletters_unwritten.set(len(self.unwritten))

    def _fall_back(self, item: _Encoded, exc: BaseException) -> None:
        error = type(exc).__name__
        try:
            self.fallback.parent.mkdir(parents=True, exist_ok=True)
            with self.fallback.open("ab") as out:
                out.write(item.value + b"\n")
                out.flush()
                os.fsync(out.fileno())
        except OSError as file_error:
            self.unwritten.append(item)
            self.metrics.deadletter_failures.labels(error, "held").inc()
            log.error(
                "dead letter (%d bytes) not published to %s (%s: %s) nor written to %s (%s): "
                "held, partition %s is not committed until it is written",
                len(item.value),
                self.topic,
                error,
                exc,
                self.fallback,
                file_error,
                "all" if item.partition is None else item.partition,
            )
            return
        self.metrics.deadletter_failures.labels(error, "file").inc()
        log.error(
            "dead letter (%d bytes) not published to %s (%s: %s): written to %s",
            len(item.value),
            self.topic,
            error,
            exc,
            self.fallback,
        )
