"""Decoding one pipeline's input records, in offset order, into the events its engine takes.

:func:`decode_records` is the batch loop of :meth:`Pipeline.ingest
<spendsentry.worker.pipeline.Pipeline.ingest>`: it skips records the state
already reflects, takes the msgspec fast path where it can and the checking
path (which names a bad record's reason) otherwise, and gathers each input
partition's event timestamps for its event clock. Of the pipeline's state it
changes only the offsets and the ``behind`` map (in place); dead letters go to
the batch's output list.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from spendsentry.events import Event
from spendsentry.ingest import DeadLetter, Decoder, SourcePosition
from spendsentry.worker.accounting import count_unattributed

if TYPE_CHECKING:
    from spendsentry.worker.metrics import WorkerMetrics

#: A partition as the pipeline sees it: (topic, partition).
TP = tuple[str, int]

_RECORD_ORDER = operator.attrgetter("topic", "partition", "offset")


class RecordLike(Protocol):
    """The fields of an aiokafka ``ConsumerRecord`` the pipeline reads."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass(slots=True)
class DecodedBatch:
    """What one batch of input records decoded to."""

    events: list[Event] = field(default_factory=list)
    #: Where each event came from (parallel to ``events``).
    sources: list[SourcePosition] = field(default_factory=list)
    #: Each input partition's event timestamps, for its event clock.
    stamps: dict[TP, list[float]] = field(default_factory=dict)
    #: Records taken (not already reflected in the state).
    taken: int = 0
    #: Events per source format (``native`` for the fast path).
    formats: dict[str, int] = field(default_factory=dict)
    #: Foreign records that are no operation spendsentry counts.
    skipped: int = 0


def decode_records(
    records: list[RecordLike],
    decoder: Decoder,
    offsets: dict[TP, int],
    behind: dict[TP, int],
    dead_letters: list[DeadLetter],
    *,
    now: float,
    metrics: WorkerMetrics | None,
) -> DecodedBatch:
    """Decode ``records`` (sorted here) past ``offsets``, moving ``offsets`` on.

    A record below its partition's offset is already reflected in the state
    and only noted in ``behind`` (where the partition belongs); bad records
    become letters appended to ``dead_letters``.
    """
    batch = DecodedBatch()
    events, sources, stamps, formats = batch.events, batch.sources, batch.stamps, batch.formats
    decode = decoder.decode
    decode_native = decoder.decode_native
    max_bytes = decoder.limits.max_record_bytes
    default_use_case = decoder.otlp.default_use_case
    # Partition order, then offset order: the same batch always feeds the
    # engine in the same order, whatever order the fetcher returned it in.
    records.sort(key=_RECORD_ORDER)
    taken = 0
    skipped = 0
    for r in records:
        tp = (r.topic, r.partition)
        if r.offset < offsets.get(tp, -1):
            # Already reflected in this state (a consumer that went back to
            # its committed offset after a seek): processing it again
            # would count it twice.
            behind[tp] = offsets[tp]
            continue
        taken += 1
        source = SourcePosition(r.topic, None, r.partition, r.offset)
        value = r.value or b""
        # The C fast path takes well-formed native records; anything else
        # (and anything over the size limit) goes through decode(), which
        # names the reason. The events are the same either way.
        got = decode_native(value, now=now) if len(value) <= max_bytes else None
        if got is not None:
            formats["native"] = formats.get("native", 0) + len(got)
        else:
            decoded = decode(value, source, now=now)
            dead_letters.extend(decoded.rejected)
            got = decoded.events
            if got and metrics is not None:
                # Only foreign or marked events take this path and can be defaulted.
                count_unattributed(metrics, got, default_use_case)
            skipped += decoded.skipped
            for e in got:
                formats[e.source_format] = formats.get(e.source_format, 0) + 1
        if got:
            events.extend(got)
            sources.extend([source] * len(got))
            run = stamps.get(tp)
            if run is None:
                run = stamps[tp] = []
            run.extend([e.ts for e in got])
        offsets[tp] = r.offset + 1
    batch.taken = taken
    batch.skipped = skipped
    return batch
