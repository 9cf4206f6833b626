"""Per-partition snapshots in the compacted ``ai.state`` topic.

:class:`KafkaSnapshotStore` writes a partition's snapshot (chunks, acknowledged,
then the manifest; see :mod:`spendsentry.worker.state` for the format) and finds
the latest complete one for a partition that was just assigned, whichever worker
wrote it. The state topic has as many partitions as the inputs, so input
partition *p*'s snapshots live in state partition ``p % partitions`` and the
latest one is at (or very near) its end.

Finding it reads **backwards** from the end of that partition, a window of
records at a time: restoring costs one snapshot's worth of reading however long
the (uncompacted) history is, which matters on brokers that never compact
(Tansu). A chunk of a torn snapshot (a crash between its chunks and its
manifest) sends the walk straight to before that snapshot's first chunk.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from spendsentry.kafka.admin import TopicSpec
from spendsentry.kafka.security import KafkaSecurity, resolve
from spendsentry.worker.state import (
    CHUNK_BYTES,
    EncodedSnapshot,
    SnapshotError,
    assemble,
    encode_snapshot,
    manifest_key,
    parse_record,
    unpack_state,
)

log = logging.getLogger(__name__)

#: Records read per step of the backward walk.
WALK_WINDOW = 16
#: The walk gives up (an error, not a silent fresh start) after this many records.
WALK_LIMIT = 20_000


@dataclass(frozen=True, slots=True)
class Manifest:
    """Where a partition's latest snapshot is, and what it claims."""

    partition: int
    seq: int
    writer: str
    size: int
    #: Offset of the manifest record in the state topic.
    offset: int
    header: dict[str, Any]

    @property
    def snapshot_id(self) -> tuple[str, int]:
        """Unique per snapshot: (writer, seq)."""
        return (self.writer, self.seq)


class KafkaSnapshotStore:
    """Save and find per-partition snapshots of one consumer group.

    Parameters
    ----------
    bootstrap : str
        Kafka bootstrap servers.
    topic : TopicSpec
        The state topic (compacted).
    group : str
        The consumer group id: it prefixes every key, so groups can share the topic.
    chunk_bytes : int
        Largest record body (see :data:`~spendsentry.worker.state.CHUNK_BYTES`).
    timeout_s : float
        Bound on one read from the state topic.
    security : KafkaSecurity, optional
        TLS/SASL settings for the reader; the environment's (read once, here)
        when omitted.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: TopicSpec,
        group: str,
        *,
        chunk_bytes: int = CHUNK_BYTES,
        timeout_s: float = 30.0,
        security: KafkaSecurity | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.security = resolve(security)
        self.topic = topic
        self.group = group
        self.chunk_bytes = chunk_bytes
        self.timeout_s = timeout_s
        #: This process; a restarted worker writes under a new id.
        self.writer = uuid.uuid4().hex[:12]
        #: Last sequence number written or restored, per input partition.
        self.seq: dict[int, int] = {}
        self._reader: AIOKafkaConsumer | None = None

    def state_partition(self, partition: int) -> int:
        """The state topic partition that holds input partition ``partition``."""
        return partition % max(1, self.topic.partitions)

    async def start(self) -> None:
        self._reader = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Reads are bounded ranges: do not let the broker hold a fetch open.
            fetch_max_wait_ms=20,
            # A chunk is up to CHUNK_BYTES plus its header.
            max_partition_fetch_bytes=max(2 << 20, 2 * self.chunk_bytes),
            **self.security.client_kwargs(),
        )
        await self._reader.start()

    async def stop(self) -> None:
        if self._reader is not None:
            await self._reader.stop()
            self._reader = None

    # -- writing --------------------------------------------------------------

    async def save(
        self,
        producer: AIOKafkaProducer,
        partition: int,
        state: dict[str, Any],
        *,
        offsets: dict[str, int] | None = None,
    ) -> int:
        """Write one snapshot and wait until the broker acknowledged all of it.

        Returns the snapshot's size in bytes. The state is encoded before the
        first ``await``, so it may change as soon as this is called.
        """
        return await self.write(producer, self.encode(partition, state, offsets=offsets))

    def encode(
        self, partition: int, state: dict[str, Any], *, offsets: dict[str, int] | None = None
    ) -> EncodedSnapshot:
        """Encode ``state`` (as a :mod:`spendsentry.snapshot` document) into the chunks
        of this partition's next snapshot.

        Synchronous on purpose: the worker captures the state under its lock
        (milliseconds: the big parts are flat arrays of bytes) and writes it
        (:meth:`write`) while the consume loop goes on.
        """
        return encode_snapshot(
            state,
            group=self.group,
            partition=partition,
            seq=self.seq.get(partition, 0) + 1,
            writer=self.writer,
            offsets=offsets,
            chunk_bytes=self.chunk_bytes,
        )

    async def write(self, producer: AIOKafkaProducer, encoded: EncodedSnapshot) -> int:
        """Produce an encoded snapshot, chunks first, then its manifest; wait for
        the broker's acknowledgements. Returns the snapshot's size in bytes.

        One write per partition at a time: the next :meth:`encode` of a
        partition takes its sequence number from the last completed write.
        """
        partition = encoded.partition
        target = self.state_partition(partition)
        name = self.topic.name
        futures = [
            await producer.send(name, value=value, key=key, partition=target)
            for key, value in encoded.chunks
        ]
        chunk_offsets = [int((await f).offset) for f in futures]
        manifest = await producer.send(
            name,
            value=encoded.manifest_value(chunk_offsets=chunk_offsets),
            key=encoded.manifest_key,
            partition=target,
        )
        await manifest
        self.seq[partition] = encoded.seq
        return len(encoded.payload)

    # -- reading --------------------------------------------------------------

    async def latest(self, partition: int) -> Manifest | None:
        """The newest complete snapshot manifest of ``partition``, or None.

        Raises
        ------
        SnapshotError
            The state topic could not be read, or no manifest was found within
            :data:`WALK_LIMIT` records while the partition holds our records.
        """
        reader = self._require_reader()
        tp = TopicPartition(self.topic.name, self.state_partition(partition))
        key = manifest_key(self.group, partition)
        prefix = key + b":"
        try:
            reader.assign([tp])
            begin = (await reader.beginning_offsets([tp]))[tp]
            hi = (await reader.end_offsets([tp]))[tp]
        except Exception as exc:
            raise SnapshotError(f"cannot read {self.topic.name}: {exc}") from exc
        log.debug("walking %s:%d back from %d (begins at %d)", tp.topic, tp.partition, hi, begin)
        scanned = 0
        ours = False
        while hi > begin:
            lo = max(begin, hi - WALK_WINDOW)
            records = await self._read(tp, lo, hi)
            scanned += hi - lo
            next_hi = lo
            for r in reversed(records):
                if r.key == key:
                    try:
                        header, _ = parse_record(r.value)
                    except SnapshotError as exc:
                        log.warning("skipping %s@%d: %s", tp, r.offset, exc)
                        continue
                    if header.get("type") == "manifest":
                        return self._manifest(partition, r.offset, header)
                elif r.key is not None and r.key.startswith(prefix):
                    ours = True
                    # A chunk of a snapshot whose manifest never came (or a
                    # newer one's): its first chunk is at least ``index`` back.
                    try:
                        header, _ = parse_record(r.value)
                        next_hi = min(next_hi, r.offset - int(header.get("index", 0)))
                    except (SnapshotError, TypeError, ValueError):
                        pass
            hi = max(begin, next_hi)
            if scanned >= WALK_LIMIT:
                if ours:
                    raise SnapshotError(
                        f"no snapshot manifest for {key.decode()} in the last {scanned} "
                        f"records of {tp.topic}:{tp.partition}"
                    )
                return None
        return None

    async def load(self, manifest: Manifest) -> dict[str, Any]:
        """The state a manifest describes.

        Raises
        ------
        SnapshotError
            The records are missing, torn or of another layout version.
        """
        tp = TopicPartition(self.topic.name, self.state_partition(manifest.partition))
        offsets = [int(o) for o in manifest.header.get("chunk_offsets") or []]
        inline = b""
        chunks: list[bytes | None] = []
        if offsets:
            records = await self._read(tp, min(offsets), max(offsets) + 1)
            by_offset = {r.offset: r.value for r in records}
            chunks = [by_offset.get(o) for o in offsets]
        else:
            records = await self._read(tp, manifest.offset, manifest.offset + 1)
            found = [r for r in records if r.offset == manifest.offset]
            if not found:
                raise SnapshotError(f"manifest at {tp.topic}:{tp.partition}@{manifest.offset} gone")
            _, inline = parse_record(found[0].value)
        payload = assemble(manifest.header, inline, chunks)
        state = await asyncio.to_thread(unpack_state, payload)
        # The next snapshot of this partition continues the sequence (and uses
        # the other chunk slot).
        self.seq[manifest.partition] = max(self.seq.get(manifest.partition, 0), manifest.seq)
        return state

    # -- internals ------------------------------------------------------------

    def _require_reader(self) -> AIOKafkaConsumer:
        if self._reader is None:
            raise SnapshotError("the snapshot store is not started")
        return self._reader

    def _manifest(self, partition: int, offset: int, header: dict[str, Any]) -> Manifest:
        try:
            return Manifest(
                partition=partition,
                seq=int(header["seq"]),
                writer=str(header["writer"]),
                size=int(header["size"]),
                offset=offset,
                header=header,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"malformed snapshot manifest at offset {offset}: {exc}") from None

    async def _read(self, tp: TopicPartition, lo: int, hi: int) -> list[Any]:
        """Records of ``tp`` with ``lo <= offset < hi`` (compaction may leave gaps)."""
        reader = self._require_reader()
        reader.assign([tp])
        reader.seek(tp, lo)
        out: list[Any] = []
        deadline = time.monotonic() + self.timeout_s
        try:
            while await reader.position(tp) < hi:
                if time.monotonic() > deadline:
                    raise SnapshotError(
                        f"reading {tp.topic}:{tp.partition} [{lo}, {hi}) took over "
                        f"{self.timeout_s:g}s"
                    )
                batch = await reader.getmany(tp, timeout_ms=500)
                out += [r for r in batch.get(tp, ()) if lo <= r.offset < hi]
        except SnapshotError:
            raise
        except Exception as exc:
            raise SnapshotError(f"cannot read {tp.topic}:{tp.partition}: {exc}") from exc
        return out
