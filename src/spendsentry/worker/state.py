"""The record format of per-partition state snapshots (pure: no I/O).

The worker keeps one :class:`~spendsentry.engine.Engine` per input partition
number and snapshots each one, with the input offsets it reflects, into the
compacted ``ai.state`` topic, so whichever worker is assigned the partition next
can restore it (:mod:`spendsentry.worker.snapshots` does the Kafka part).

The snapshot itself is a document of :mod:`spendsentry.snapshot` (plain data,
msgpack, versioned; version-2 pickles are still read). It is written as:

* a **manifest** record, key ``"<group>:<partition>"``, holding a JSON header
  (sequence number, writer, size, SHA-256, input offsets, the offsets of its
  chunks) and, when the document fits in one record, the document itself;
* otherwise the document is split into **chunk** records of at most
  :data:`CHUNK_BYTES` (a broker's default message limit is 1 MB), keys
  ``"<group>:<partition>:<slot>:<i>"``, produced and acknowledged *before*
  the manifest that lists them.

``slot`` is the sequence number modulo 2: a new snapshot writes its chunks to
the slot the latest durable manifest does not use, so compaction (which keeps
only the newest record per key) can never remove a chunk the latest complete
snapshot still needs, and a crash half-way through leaves that snapshot
readable. Stale chunk keys are bounded by the largest snapshot ever written.

Every record is ``MAGIC + len(header) + header JSON + body``.

>>> from spendsentry.engine import Engine
>>> from spendsentry.worker.pipeline import Pipeline
>>> pipeline = Pipeline(Engine(), partition=0)
>>> pipeline.start_at({("ai.usage", 0): 7})
>>> records = encode_snapshot(
...     pipeline.snapshot_state(), group="g", partition=0, seq=1, writer="w",
...     offsets={"ai.usage:0": 7})
>>> [key for key, _ in records.chunks], records.manifest_key
([], b'g:0')
>>> header, body = parse_record(records.manifest_value(chunk_offsets=[]))
>>> header["type"], header["seq"], unpack_state(body)["offsets"]
('manifest', 1, {('ai.usage', 0): 7})
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from spendsentry.snapshot import SNAPSHOT_VERSION, SnapshotError, decode_state, encode_state

#: Largest piece of a snapshot in one record: under the 1 MB message limit
#: brokers (Kafka and Tansu) apply by default, with room for the header.
CHUNK_BYTES = 900 * 1024
#: First bytes of every record this module writes.
MAGIC = b"SSS2"
_LEN = struct.Struct(">I")


def manifest_key(group: str, partition: int) -> bytes:
    """The compaction key of a partition's latest snapshot manifest."""
    return f"{group}:{partition}".encode()


def chunk_key(group: str, partition: int, slot: int, index: int) -> bytes:
    """The compaction key of one chunk (``slot`` alternates between snapshots)."""
    return f"{group}:{partition}:{slot}:{index}".encode()


def pack_state(state: dict[str, Any]) -> bytes:
    """One partition's state as a snapshot document (:func:`spendsentry.snapshot.encode_state`)."""
    return encode_state(state)


def unpack_state(payload: bytes) -> dict[str, Any]:
    """Inverse of :func:`pack_state`; reads version-2 pickles too.

    Raises
    ------
    SnapshotError
        The bytes are not a snapshot this code can read; the message says why.
    """
    return decode_state(payload)


def record_value(header: dict[str, Any], body: bytes = b"") -> bytes:
    """One record's value: magic, header length, header JSON, body."""
    head = orjson.dumps(header)
    return MAGIC + _LEN.pack(len(head)) + head + body


def parse_record(value: bytes | None) -> tuple[dict[str, Any], bytes]:
    """Split a record's value into (header, body).

    Raises
    ------
    SnapshotError
        The value is not a record of this format.

    >>> parse_record(b"nope")
    Traceback (most recent call last):
    ...
    spendsentry.snapshot.SnapshotError: not a snapshot record (bad magic)
    """
    if not value or not value.startswith(MAGIC) or len(value) < len(MAGIC) + _LEN.size:
        raise SnapshotError("not a snapshot record (bad magic)")
    (n,) = _LEN.unpack_from(value, len(MAGIC))
    start = len(MAGIC) + _LEN.size
    if start + n > len(value):
        raise SnapshotError("truncated snapshot record header")
    try:
        header = orjson.loads(value[start : start + n])
    except orjson.JSONDecodeError as exc:
        raise SnapshotError(f"unreadable snapshot record header: {exc}") from None
    if not isinstance(header, dict) or header.get("type") not in ("manifest", "chunk"):
        raise SnapshotError("snapshot record header without a type")
    return header, value[start + n :]


@dataclass(slots=True)
class EncodedSnapshot:
    """A snapshot ready to produce: chunk records, then the manifest."""

    header: dict[str, Any]
    payload: bytes
    manifest_key: bytes
    #: (key, value) of every chunk, in order; empty when the payload is inline.
    chunks: list[tuple[bytes, bytes]] = field(default_factory=list)

    @property
    def partition(self) -> int:
        """The input partition whose state this is."""
        return int(self.header["partition"])

    @property
    def seq(self) -> int:
        """The snapshot's sequence number within its partition."""
        return int(self.header["seq"])

    def manifest_value(self, *, chunk_offsets: Sequence[int]) -> bytes:
        """The manifest record, once the chunks' offsets are known."""
        if len(chunk_offsets) != len(self.chunks):
            raise SnapshotError("one offset per chunk is needed")
        header = {**self.header, "chunk_offsets": list(chunk_offsets)}
        return record_value(header, b"" if self.chunks else self.payload)


def encode_snapshot(
    state: dict[str, Any] | bytes,
    *,
    group: str,
    partition: int,
    seq: int,
    writer: str,
    offsets: dict[str, int] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> EncodedSnapshot:
    """Encode ``state`` and cut it into records (see the module docstring).

    Parameters
    ----------
    state : dict or bytes
        :meth:`Pipeline.snapshot_state` output, or a document already encoded
        (this layer only cuts bytes into records).
    group, partition : str, int
        Whose snapshot this is (the consumer group and input partition number).
    seq : int
        Strictly increasing per (group, partition); picks the chunk slot.
    writer : str
        Identifies the worker process (a restarted worker is another writer).
    offsets : dict, optional
        ``"topic:partition" -> next offset``, copied into the header for humans
        and tools (the document holds the authoritative copy).
    chunk_bytes : int
        Largest chunk; the payload is inline in the manifest when it fits.
    """
    payload = state if isinstance(state, bytes) else pack_state(state)
    slot = seq % 2
    header: dict[str, Any] = {
        "type": "manifest",
        "v": SNAPSHOT_VERSION,
        "group": group,
        "partition": partition,
        "seq": seq,
        "slot": slot,
        "writer": writer,
        "size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "created_at": time.time(),
        "offsets": dict(offsets or {}),
    }
    encoded = EncodedSnapshot(header, payload, manifest_key(group, partition))
    if len(payload) <= chunk_bytes:
        return encoded
    pieces = [payload[i : i + chunk_bytes] for i in range(0, len(payload), chunk_bytes)]
    for i, piece in enumerate(pieces):
        chunk_header = {
            "type": "chunk",
            "group": group,
            "partition": partition,
            "seq": seq,
            "writer": writer,
            "index": i,
            "count": len(pieces),
        }
        encoded.chunks.append(
            (chunk_key(group, partition, slot, i), record_value(chunk_header, piece))
        )
    return encoded


def assemble(manifest: dict[str, Any], inline: bytes, chunks: Sequence[bytes | None]) -> bytes:
    """The document a manifest describes, from its inline body or its chunk records.

    Raises
    ------
    SnapshotError
        A chunk is missing or belongs to another snapshot, or the size or
        SHA-256 does not match (a torn or foreign snapshot).
    """
    offsets = manifest.get("chunk_offsets") or []
    if not offsets:
        payload = inline
    else:
        if len(chunks) != len(offsets):
            raise SnapshotError(f"{len(chunks)} chunk records for {len(offsets)} chunks")
        pieces = []
        for i, value in enumerate(chunks):
            if value is None:
                raise SnapshotError(f"chunk {i} at offset {offsets[i]} is gone")
            header, body = parse_record(value)
            same = (header.get("seq"), header.get("writer"), header.get("index"))
            if header.get("type") != "chunk" or same != (manifest["seq"], manifest["writer"], i):
                raise SnapshotError(f"the record at offset {offsets[i]} is not chunk {i}")
            pieces.append(body)
        payload = b"".join(pieces)
    if len(payload) != manifest.get("size"):
        raise SnapshotError(
            f"snapshot is {len(payload)} bytes, the manifest says {manifest.get('size')}"
        )
    if hashlib.sha256(payload).hexdigest() != manifest.get("sha256"):
        raise SnapshotError("snapshot checksum mismatch")
    return payload
