"""One engine per input partition number: the unit that moves between workers.

``ai.usage`` and ``ai.outcomes`` are keyed by use case and have the same
partition count, so partition *p* of both carries the same use cases. The
worker keeps one :class:`~spendsentry.worker.pipeline.Pipeline` (one
:class:`~spendsentry.engine.Engine`, its watermarks, offsets and published
alert keys) per partition number it is assigned; a rebalance moves whole
pipelines, through their snapshots, from one worker to another.

All engines of a worker close minutes by one watermark, the least newest event
time over the worker's active partitions, as a single engine for all partitions
did: a slow partition holds back the engines of its worker (not of the group),
and an engine whose partitions are idle still closes minutes with the others, so
a quiet use case's incidents resolve. (A watermark per engine was tried: it
closes a partition as soon as its first batch is in, which turns out-of-order
messages of a backlog read in several batches into late events.)

Operator actions (``ai.control``) go to every pipeline: an action for a use
case an engine does not hold changes nothing there, and this does not depend on
which partitioner the producers of ``ai.usage`` used (Kafka's Java client and
aiokafka hash keys with murmur2, librdkafka with CRC32 by default).

>>> from spendsentry.engine import Engine
>>> parts = PartitionSet(Engine, inputs=("ai.usage", "ai.outcomes"))
>>> parts.fresh(2).partition, sorted(parts)
(2, [2])
>>> parts.owner(("ai.outcomes", 2)) is parts.pipelines[2], parts.owner(("ai.usage", 0))
(True, None)
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from spendsentry.actions import ThrottleCommand
from spendsentry.clock import event_time
from spendsentry.engine import Engine, EngineConfig, EngineStats, UseCaseState, UseCaseTotals
from spendsentry.ingest import Decoder
from spendsentry.worker.accounting import count_output, count_records
from spendsentry.worker.metrics import PartitionCounters, WorkerMetrics
from spendsentry.worker.pipeline import TP, BatchOutput, Pipeline, RecordLike

#: The pipeline whose worker dead-letters a malformed control action (one per group).
CONTROL_REPORTER = 0


@dataclass(slots=True)
class EngineView:
    """The read-only face of several engines, for ``/status`` and the status page."""

    closed_until: int | None
    use_cases: dict[str, UseCaseState]
    #: Summed counters; per-use-case totals are not merged (see :meth:`totals`).
    stats: EngineStats
    firing_incidents: list[tuple[str, str, str]] = field(default_factory=list)
    engines: list[Engine] = field(default_factory=list)

    def firing(self) -> list[tuple[str, str, str]]:
        """(use case, kind, alert_id) of every open incident, sorted."""
        return self.firing_incidents

    def totals(self, name: str) -> UseCaseTotals | None:
        """One use case's totals, summed over the engines that have them."""
        found = [t for e in self.engines if (t := e.stats.use_cases.get(name)) is not None]
        return merge_totals(found) if len(found) > 1 else (found[0] if found else None)

    def use_case_count(self) -> int:
        """Use-case names with totals (a name in two engines counts twice)."""
        return sum(len(e.stats.use_cases) for e in self.engines)

    def top_totals(self, limit: int, offset: int = 0) -> list[tuple[str, UseCaseTotals]]:
        """Use cases by total cost (then name), ``offset`` to ``offset + limit``.

        O(names x log(offset + limit)), no copy of every name's totals: the
        worker's ``/status`` under a flood of names stays a page, not a dump.
        """
        want = max(0, offset) + max(0, limit)
        names = {
            name
            for e in self.engines
            for name, _ in heapq.nsmallest(want, e.stats.use_cases.items(), key=_by_cost)
        }
        found = [(name, t) for name in names if (t := self.totals(name)) is not None]
        return sorted(found, key=_by_cost)[max(0, offset) : want]


def _by_cost(item: tuple[str, UseCaseTotals]) -> tuple[int, str]:
    return (-item[1].cost_nano, item[0])


def top_use_cases(engine: Engine, limit: int) -> list[str]:
    """Names of ``engine``'s ``limit`` costliest use cases (totals), by name."""
    return sorted(
        name for name, _ in heapq.nsmallest(limit, engine.stats.use_cases.items(), key=_by_cost)
    )


class PartitionSet:
    """The pipelines of the input partitions this worker owns right now.

    Parameters
    ----------
    make_engine : callable
        Returns a fresh :class:`Engine` (policies, prices and config of this run).
    metrics : WorkerMetrics, optional
        Where to count.
    inputs : sequence of str
        The co-partitioned input topics (usage, outcomes).
    idle_after_s : float
        See :class:`~spendsentry.clock.EventClock`.
    use_case_labels : int
        ``use_case`` label values per partition (the worker's cap divided by the
        partition count: see :func:`~spendsentry.worker.metrics.label_share`).
    """

    def __init__(
        self,
        make_engine: Callable[[], Engine],
        metrics: WorkerMetrics | None = None,
        *,
        inputs: Sequence[str],
        idle_after_s: float = 30.0,
        decoder: Decoder | None = None,
        use_case_labels: int = 50,
        focus: bool = False,
    ) -> None:
        self.make_engine = make_engine
        #: Whether pipelines keep FOCUS sums (``worker --focus-dir``).
        self.focus = focus
        self.metrics = metrics
        self.use_case_labels = use_case_labels
        if metrics is not None:
            metrics.committed.source = self.committed_counters
        self.inputs = frozenset(inputs)
        self.idle_after_s = idle_after_s
        self.decoder = decoder or Decoder()
        self.pipelines: dict[int, Pipeline] = {}
        #: Records of partitions this worker does not own (in flight across a rebalance).
        self.dropped = 0
        #: Wall time of the last batch with records (None: none yet).
        self._last_data: float | None = None

    # -- membership -----------------------------------------------------------

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self.pipelines))

    def __len__(self) -> int:
        return len(self.pipelines)

    def __contains__(self, partition: object) -> bool:
        return partition in self.pipelines

    def new_pipeline(self, partition: int) -> Pipeline:
        """A pipeline around a fresh engine, not added yet."""
        return Pipeline(
            self.make_engine(),
            self.decoder,
            self.metrics,
            idle_after_s=self.idle_after_s,
            partition=partition,
            use_case_labels=self.use_case_labels,
            focus=self.focus,
        )

    def fresh(self, partition: int) -> Pipeline:
        """Add (and return) a pipeline with a fresh engine."""
        pipeline = self.new_pipeline(partition)
        self.pipelines[partition] = pipeline
        return pipeline

    def add(self, pipeline: Pipeline) -> None:
        """Add a restored (or kept) pipeline."""
        assert pipeline.partition is not None
        self.pipelines[pipeline.partition] = pipeline

    def remove(self, partition: int) -> Pipeline | None:
        """Drop a partition's pipeline (revoked); returns it."""
        return self.pipelines.pop(partition, None)

    def owner(self, tp: TP) -> Pipeline | None:
        """The pipeline that consumes input partition ``tp``, if this worker owns it."""
        if tp[0] not in self.inputs:
            return None
        return self.pipelines.get(tp[1])

    def position(self, tp: TP) -> int | None:
        """Next offset of ``tp`` the owning pipeline's state reflects."""
        pipeline = self.owner(tp)
        return None if pipeline is None else pipeline.offsets.get(tp)

    # -- the hot path ---------------------------------------------------------

    def handle(
        self,
        batch: Mapping[Any, Sequence[RecordLike]],
        *,
        now: float | None = None,
        pending: Collection[TP] = (),
    ) -> BatchOutput:
        """Split one ``getmany`` result by partition number, process, advance."""
        started = time.perf_counter()
        now = time.time() if now is None else now
        shares: dict[int, list[RecordLike]] = {}
        kept: list[RecordLike] = []
        for records in batch.values():
            for r in records:
                if r.topic in self.inputs and r.partition in self.pipelines:
                    shares.setdefault(r.partition, []).append(r)
                    kept.append(r)
                else:
                    self.dropped += 1
        if kept:
            if self._last_data is not None and now - self._last_data >= self.idle_after_s:
                # The whole worker heard nothing for a while (a broker outage, a
                # paused producer, a restart): silence says nothing about any one
                # partition then. "Idle" means silent while the others deliver,
                # so the idle clocks start again now; otherwise the first
                # partition to resume would close minutes that the others'
                # (already produced, not yet fetched) records still belong to.
                for pipeline in self.pipelines.values():
                    pipeline.watermarks.touch(now=now)
            self._last_data = now
        out = BatchOutput()
        for p in sorted(shares):
            self.pipelines[p].ingest(shares[p], now=now, out=out)
        self._advance(now, pending, out)
        metrics = self.metrics
        if metrics is not None:
            count_records(metrics, kept)
            count_output(metrics, out)
            metrics.batch_latency.observe(time.perf_counter() - started)
        return out

    def tick(self, *, now: float | None = None, pending: Collection[TP] = ()) -> BatchOutput:
        """No new records: idle partitions still move event time."""
        now = time.time() if now is None else now
        out = BatchOutput()
        self._advance(now, pending, out)
        if self.metrics is not None and (out.alerts or out.dead_letters):
            count_output(self.metrics, out)
        return out

    def apply_control(self, records: Iterable[RecordLike], out: BatchOutput) -> None:
        """Give every pipeline the operator actions its state has not applied."""
        ordered = sorted(records, key=lambda r: (r.partition, r.offset))
        if not ordered:
            return
        for p in self:
            share = BatchOutput()
            self.pipelines[p].apply_control(ordered, share, report_bad=p == CONTROL_REPORTER)
            out.extend(share)

    def committed_counters(self) -> list[tuple[int, PartitionCounters]]:
        """Each owned partition's counters as of its last durable snapshot (``/metrics``)."""
        return [(p, pl.accounting.committed) for p, pl in self.pipelines.items()]

    def control_start(self, control_partition: int) -> int | None:
        """The oldest ``ai.control`` offset some pipeline still has to apply."""
        starts = [pl.control_offsets.get(control_partition, 0) for pl in self.pipelines.values()]
        return min(starts, default=None)

    def event_time(self, now: float, pending: Collection[TP] = ()) -> float:
        """The worker's event time (before lateness) over every partition of every
        engine here (:func:`spendsentry.clock.event_time`). This is what one engine
        for all partitions did: a partition whose messages are not in event-time
        order (big arrays, a backlog read in several batches) is not closed behind
        by the others."""
        return event_time(
            (pl.watermarks for pl in self.pipelines.values()), now=now, pending=pending
        )

    def _advance(self, now: float, pending: Collection[TP], out: BatchOutput) -> None:
        event_time = self.event_time(now, pending)
        self._share_watching_since()
        for p in self:
            self.pipelines[p].advance(now=now, out=out, event_time=event_time)
        if self.metrics is not None:
            self.metrics.open_incidents.set(sum(len(pl.engine.firing()) for pl in self.values()))
            watermark = self.watermark
            if watermark != -math.inf:
                self.metrics.watermark_lag.set(max(0.0, now - watermark))

    def _share_watching_since(self) -> None:
        """Every engine here has watched since the earliest start among them, as
        one engine for all partitions would have: a partition whose first
        events come hours in (a new use case alone on it) is not a new stream."""
        starts = [
            pl.engine.watching_since
            if pl.engine.watching_since is not None
            else pl.engine.closed_until
            for pl in self.pipelines.values()
        ]
        first = min((s for s in starts if s is not None), default=None)
        if first is None:
            return
        for pl in self.pipelines.values():
            since = pl.engine.watching_since
            if since is None or since > first:
                pl.engine.watching_since = first

    # -- merged views ---------------------------------------------------------

    def values(self) -> list[Pipeline]:
        """The pipelines, by partition number."""
        return [self.pipelines[p] for p in self]

    @property
    def watermark(self) -> float:
        """The least advanced event time over pipelines that have data (``-inf``: none)."""
        marks = [
            pl.watermark
            for pl in self.values()
            if pl.engine.closed_until is not None and pl.watermark != -math.inf
        ]
        return min(marks, default=-math.inf)

    @property
    def closed_until(self) -> int | None:
        """Every minute before this one is closed in every engine that has data."""
        closed = [pl.engine.closed_until for pl in self.values()]
        return min((c for c in closed if c is not None), default=None)

    @property
    def records(self) -> int:
        """Input records reflected by the owned states (also those read by other workers)."""
        return sum(pl.records for pl in self.values())

    @property
    def suppressed(self) -> int:
        return sum(pl.suppressed for pl in self.values())

    @property
    def published_keys(self) -> int:
        return sum(len(pl.published) for pl in self.values())

    def offsets(self) -> dict[TP, int]:
        """Next offset per input partition, over all owned states."""
        merged: dict[TP, int] = {}
        for pl in self.values():
            merged.update(pl.offsets)
        return merged

    def changed(self) -> list[int]:
        """The partitions whose state changed since its last snapshot."""
        return [p for p in self if self.pipelines[p].dirty]

    def latest_command(self, scope_key: str) -> ThrottleCommand | None:
        """The latest command on ``scope_key`` of the engine here that holds it."""
        for pipeline in self.values():
            command = pipeline.engine.planner.latest(scope_key)
            if command is not None:
                return command
        return None

    def active_commands(self, now: float) -> list[ThrottleCommand]:
        """Throttle commands in force (a scope lives in one engine), by scope key."""
        commands = [c for pl in self.values() for c in pl.engine.planner.active(now)]
        return sorted(commands, key=lambda c: c.scope_key)

    def view(self) -> EngineView:
        """The engines merged: totals summed, use cases side by side."""
        engines = [pl.engine for pl in self.values()]
        use_cases: dict[str, UseCaseState] = {}
        firing: list[tuple[str, str, str]] = []
        for engine in engines:
            use_cases.update(engine.use_cases)
            firing += engine.firing()
        return EngineView(
            self.closed_until,
            use_cases,
            merge_stats(engines, use_cases=False),
            sorted(firing),
            engines,
        )


def engine_share(config: EngineConfig, partitions: int) -> EngineConfig:
    """The config of one of a worker's engines: the worker-wide name caps divided
    by the input partition count, so a worker that owns every partition holds at
    most what ``config`` allows one worker (not that much per engine).

    Use-case names hash evenly over partitions, so a flood of names fills each
    engine's share alike; a partition holding far more than its share of real
    use cases would evict the least recently active earlier.

    >>> engine_share(EngineConfig(max_use_cases=10_000), 6).max_use_cases
    1666
    """
    n = max(1, partitions)
    return dataclasses.replace(
        config,
        max_use_cases=max(1, config.max_use_cases // n),
        max_unpriced_models=max(1, config.max_unpriced_models // n),
    )


def merge_totals(totals: Iterable[UseCaseTotals]) -> UseCaseTotals:
    """One use case's totals from several engines, summed."""
    mine = UseCaseTotals()
    for t in totals:
        mine.events += t.events
        for kind, n in t.events_by_kind.items():
            mine.events_by_kind[kind] = mine.events_by_kind.get(kind, 0) + n
        mine.input_tokens += t.input_tokens
        mine.output_tokens += t.output_tokens
        mine.cost_nano += t.cost_nano
        mine.outcomes += t.outcomes
    return mine


def merge_stats(engines: Iterable[Engine], *, use_cases: bool = True) -> EngineStats:
    """Sum the counters of several engines (use cases are disjoint between them).

    ``use_cases=False`` leaves the per-use-case totals out (O(names) to merge;
    :class:`EngineView` reads them per name instead).

    >>> a, b = Engine(), Engine()
    >>> a.stats.accepted, b.stats.accepted = 2, 3
    >>> merge_stats([a, b]).accepted
    5
    """
    merged = EngineStats()
    for engine in engines:
        s = engine.stats
        merged.accepted += s.accepted
        merged.duplicates += s.duplicates
        merged.late += s.late
        merged.unpriced += s.unpriced
        merged.evicted_use_cases += s.evicted_use_cases
        merged.evicted_sessions += s.evicted_sessions
        merged.evicted_dedupe_ids += s.evicted_dedupe_ids
        for model, n in s.unpriced_models.items():
            merged.unpriced_models[model] = merged.unpriced_models.get(model, 0) + n
        for kind, n in s.alerts.items():
            merged.alerts[kind] = merged.alerts.get(kind, 0) + n
        if not use_cases:
            continue
        for name, totals in s.use_cases.items():
            # A use case seen by two engines (producers that did not key by use
            # case) is summed rather than hidden.
            mine = merged.use_cases.get(name)
            merged.use_cases[name] = (
                merge_totals([totals]) if mine is None else merge_totals([mine, totals])
            )
    return merged
