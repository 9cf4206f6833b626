"""One engine's share of the worker's batch-shaped hot path, without any I/O.

A :class:`Pipeline` decodes its records with the
:class:`~spendsentry.ingest.Decoder` (the batch loop is
:func:`~spendsentry.worker.intake.decode_records`) and feeds the
:class:`~spendsentry.engine.Engine` in one ``process`` call (:meth:`Pipeline.ingest`),
then closes the minutes event time has passed (:meth:`Pipeline.advance`), and
collects what must be published. The worker runs one pipeline per input
partition number (usage *p* and outcomes *p*), driven by
:class:`~spendsentry.worker.partitions.PartitionSet`, which splits each
``getmany`` between them and decides event time for all; the Kafka shell
(:mod:`spendsentry.worker.service`) only moves bytes, which keeps this part
unit-testable and deterministic. A pipeline is also the unit of a state snapshot.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from spendsentry.actions import ControlError, ThrottleCommand
from spendsentry.actions.planner import MAX_COMMAND_S
from spendsentry.alerts import Alert
from spendsentry.clock import EventClock
from spendsentry.engine import Engine
from spendsentry.events import Event
from spendsentry.feedback import tuned_sensitivities
from spendsentry.focus import FocusLedger, closed_hours
from spendsentry.ingest import DeadLetter, Decoder, SourcePosition
from spendsentry.ingest.deadletter import RejectReason
from spendsentry.worker.accounting import PartitionAccounting, count_input, count_unpriced
from spendsentry.worker.intake import TP, RecordLike, decode_records
from spendsentry.worker.metrics import PartitionCounters, WorkerMetrics
from spendsentry.worker.published import PublishedKeys

#: ``TP`` and ``RecordLike`` live in :mod:`spendsentry.worker.intake`; still importable here.
__all__ = ["TP", "BatchOutput", "Pipeline", "RecordLike", "alerts_offsets_of"]


@dataclass(slots=True)
class BatchOutput:
    """What one batch produced: alerts to publish (already deduplicated), dead
    letters and throttle commands (unsigned)."""

    alerts: list[Alert] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    suppressed: int = 0
    commands: list[ThrottleCommand] = field(default_factory=list)
    #: FOCUS rows of hours just closed: (partition, hour start, rows), when enabled.
    focus: list[tuple[int | None, int, list[dict[str, str]]]] = field(default_factory=list)

    def extend(self, other: BatchOutput) -> BatchOutput:
        """Append ``other`` (another pipeline's share of the same batch)."""
        self.alerts += other.alerts
        self.dead_letters += other.dead_letters
        self.suppressed += other.suppressed
        self.commands += other.commands
        self.focus += other.focus
        return self


class Pipeline:
    """Decoder + Engine + watermarks + offsets: the state a snapshot captures.

    Parameters
    ----------
    engine : Engine
        The engine, fresh or restored from a snapshot.
    decoder : Decoder
        Stateless record decoder.
    metrics : WorkerMetrics, optional
        Where to count; nothing is counted without it.
    idle_after_s : float
        See :class:`~spendsentry.clock.EventClock`.
    partition : int, optional
        The input partition number this pipeline owns (None: all it is given).
    use_case_labels : int
        ``use_case`` label values of this partition's counters (besides ``other``).
    """

    def __init__(
        self,
        engine: Engine,
        decoder: Decoder | None = None,
        metrics: WorkerMetrics | None = None,
        *,
        idle_after_s: float = 30.0,
        partition: int | None = None,
        use_case_labels: int = 50,
        focus: bool = False,
    ) -> None:
        self.engine = engine
        self.partition = partition
        self.decoder = decoder or Decoder()
        self.metrics = metrics
        self.watermarks = EventClock(idle_after_s)
        #: Next offset to consume per partition: what a snapshot's state reflects.
        self.offsets: dict[TP, int] = {}
        #: Partitions that delivered records this state already reflects, and
        #: where they should be (the shell seeks them there).
        self.behind: dict[TP, int] = {}
        #: Next ``ai.control`` offset to apply, per control partition.
        self.control_offsets: dict[int, int] = {}
        #: Dedupe keys of alerts already published (bounded).
        self.published = PublishedKeys()
        #: Input records this state reflects (snapshotted, shown as a counter).
        self.records = 0
        #: Whether the state changed since the last snapshot.
        self.dirty = False
        #: Alerts not republished because they already were (since this start).
        self.suppressed = 0
        self.watermark = -math.inf
        #: The engine-work counters (snapshotted) and what ``/metrics`` shows.
        self.accounting = PartitionAccounting(use_case_labels)
        #: Hourly FOCUS sums of open hours (snapshotted), when the worker exports FOCUS.
        self.focus: FocusLedger | None = None
        if focus:
            self.focus = FocusLedger()
            engine.on_usage = self.focus.add_run

    # -- the hot path ---------------------------------------------------------

    @property
    def closing_started(self) -> bool:
        """Whether the engine has closed a minute (its start can no longer move)."""
        return self.engine.closing_started

    def ingest(self, records: list[RecordLike], *, now: float, out: BatchOutput) -> list[Event]:
        """Decode ``records`` (input records only) and feed the engine; no minute closes.

        Returns the accepted-or-not events.
        """
        letters_before = len(out.dead_letters)
        metrics = self.metrics
        batch = decode_records(
            records,
            self.decoder,
            self.offsets,
            self.behind,
            out.dead_letters,
            now=now,
            metrics=metrics,
        )
        events = batch.events
        self.records += batch.taken
        if batch.taken:
            self.dirty = True
        for tp, run in batch.stamps.items():
            self.watermarks.observe(tp, run, now=now)
            if metrics is not None:
                metrics.processing_lag.observe(max(0.0, now - max(run)))
        if metrics is not None:
            count_input(metrics, batch.formats, batch.skipped)
        if events:
            self._process(events, batch.sources, out)
        self.accounting.count_rejected(out.dead_letters[letters_before:])
        return events

    def _process(
        self, events: list[Event], sources: list[SourcePosition], out: BatchOutput
    ) -> None:
        # The engine owns its clock: until a minute has closed, an older minute
        # from a partition read later moves its start back (Engine._place_start).
        engine = self.engine
        before = self.accounting.totals_before({e.use_case for e in events}, engine.stats)
        unpriced = engine.stats.unpriced
        unpriced_before = dict(engine.stats.unpriced_models) if self.metrics is not None else {}
        result = engine.process(events, sources)
        self.accounting.count_process(before, engine.stats)
        if self.metrics is not None and engine.stats.unpriced != unpriced:
            count_unpriced(self.metrics, unpriced_before, engine.stats.unpriced_models)
        out.dead_letters.extend(result.rejected)
        self._collect_alerts(result.alerts, out)
        out.commands.extend(result.commands)

    def apply_control(
        self, records: Iterable[RecordLike], out: BatchOutput, *, report_bad: bool = True
    ) -> int:
        """Apply operator actions from ``ai.control`` not applied to this state yet.

        Every pipeline sees every action (an action for a use case this engine
        does not hold changes nothing); ``control_offsets`` make each one apply
        once per state, also after a restore. A bad action is dead-lettered with
        the reason when ``report_bad`` (one pipeline per group reports it).
        Returns how many were applied.
        """
        applied = 0
        letters_before = len(out.dead_letters)
        for r in records:
            if r.offset < self.control_offsets.get(r.partition, 0):
                continue
            self.control_offsets[r.partition] = r.offset + 1
            self.dirty = True
            applied += 1
            try:
                result = self.engine.apply_control(r.value or b"")
            except ControlError as exc:
                if report_bad:
                    source = SourcePosition(r.topic, partition=r.partition, offset=r.offset)
                    out.dead_letters.append(
                        DeadLetter(RejectReason.INVALID_VALUE, str(exc), source, r.value or b"")
                    )
                continue
            out.commands.extend(result.commands)
            if self.metrics is not None:
                for taken in result.feedback:
                    assert taken.kind is not None  # feedback names its kind
                    self.metrics.count_feedback(taken.use_case, taken.kind, taken.action)
        self.accounting.count_rejected(out.dead_letters[letters_before:])
        return applied

    def advance(self, *, now: float, out: BatchOutput, event_time: float) -> None:
        """Close the minutes the watermark has passed; results go to ``out``.

        ``event_time`` is the watermark decided for the whole worker (see
        :class:`~spendsentry.worker.partitions.PartitionSet`).
        """
        engine = self.engine
        # Never backwards: minutes already closed stay closed.
        self.watermark = max(self.watermark, event_time)
        if self.watermark == -math.inf or engine.closed_until is None:
            return
        before = engine.closed_until
        feedback_waiting = bool(engine.pending_feedback)
        result = engine.advance(self.watermark)
        if feedback_waiting and self.metrics is not None:
            self.metrics.set_sensitivities(tuned_sensitivities(engine))
        if engine.closed_until != before:
            self.dirty = True
        out.dead_letters.extend(result.rejected)
        self.accounting.count_rejected(result.rejected)
        self._collect_alerts(result.alerts, out)
        out.commands.extend(result.commands)
        if self.focus is not None:
            for hour, rows in closed_hours(self.focus, engine).items():
                out.focus.append((self.partition, hour, rows))
        if self.metrics is not None:
            self.metrics.watermark_lag.set(max(0.0, now - self.watermark))

    def _collect_alerts(self, alerts: Iterable[Alert], out: BatchOutput) -> None:
        for alert in alerts:
            # Counted suppressed or not: an alert this state emits is published
            # once, by this process or by one that crashed after publishing it.
            self.accounting.count_alert(alert.kind, alert.severity, alert.status)
            if self.published.mark(alert.dedupe_key):
                out.alerts.append(alert)
            else:
                out.suppressed += 1
                self.suppressed += 1

    def mark_published(self, key: str) -> bool:
        """Remember ``key`` as published; False if it already was."""
        return self.published.mark(key)

    # -- what the shell changes (through these, never the fields) -----------

    def start_at(self, offsets: Mapping[TP, int]) -> None:
        """Begin a fresh state at these input offsets (committed, or the log's start)."""
        self.offsets.update(offsets)

    def rewind(self, tp: TP, offset: int) -> None:
        """Continue ``tp`` from ``offset``: its log was recreated or truncated
        below what this state reflects, so what it reflected is gone."""
        self.offsets[tp] = offset
        self.dirty = True

    def touch(self) -> None:
        """Count the state as changed, so that the next checkpoint snapshots it."""
        self.dirty = True

    def take_behind(self) -> dict[TP, int]:
        """The partitions that went back behind this state (and where they
        belong); the shell seeks them there, so they are forgotten here."""
        behind, self.behind = self.behind, {}
        return behind

    def assign_inputs(self, tps: Iterable[TP], *, now: float) -> None:
        """Start the event clocks of the input partitions this state now consumes."""
        self.watermarks.assign(list(tps), now=now)

    def observe_throttle_versions(self, versions: Mapping[str, int]) -> None:
        """Continue each scope's command versions from those on ``ai.throttle``
        (a fresh engine, whose snapshot is lost or never was)."""
        observe = self.engine.planner.observe_version
        for scope_key, version in versions.items():
            observe(scope_key, version)

    def recent_commands(self) -> list[ThrottleCommand]:
        """Throttle commands this engine issued that may still be in force."""
        # No command outlives a day: older ones cannot be in force anywhere.
        since = self.watermark - MAX_COMMAND_S
        return list(self.engine.planner.recent(since if math.isfinite(since) else -math.inf))

    # -- counters (kept by ``accounting``) ------------------------------------

    def capture_counters(self) -> PartitionCounters:
        """The counters of the state about to be snapshotted, frozen (call right
        before :meth:`snapshot_state`; :meth:`commit_counters` once it is durable)."""
        stats = self.engine.stats
        return self.accounting.capture(duplicates=stats.duplicates, records=self.records)

    def commit_counters(self, counters: PartitionCounters) -> None:
        """Show ``counters`` (captured for a snapshot now durable) on ``/metrics``."""
        self.accounting.commit(counters)

    # -- snapshots ------------------------------------------------------------

    def snapshot_state(self) -> dict[str, Any]:
        """Everything a restart needs, with the live engine
        (:func:`spendsentry.snapshot.encode_state` makes it a document)."""
        return {
            "engine": self.engine,
            "partition": self.partition,
            "offsets": dict(self.offsets),
            "control_offsets": dict(self.control_offsets),
            "watermarks": self.watermarks.snapshot(),
            "published": list(self.published),
            "records": self.records,
            "counters": self.accounting.counters,
            "focus": self.focus,
        }

    def checkpoint_state(
        self, alerts_offsets: Mapping[int, int]
    ) -> tuple[dict[str, Any], PartitionCounters]:
        """The state to snapshot now and the counters it holds; the state counts as saved.

        ``alerts_offsets`` is where each ``ai.alerts`` partition ended when the
        state was captured: what a restore reads back (:func:`alerts_offsets_of`).
        """
        counters = self.capture_counters()
        state = self.snapshot_state()
        state["alerts_offsets"] = alerts_offsets
        self.dirty = False
        return state, counters

    def restore_state(self, state: Mapping[str, Any], *, now: float | None = None) -> None:
        """Load a decoded snapshot (:func:`spendsentry.snapshot.decode_state`) into this
        pipeline, whose engine this process built (configuration is never restored)."""
        from spendsentry.snapshot.pipeline import restore

        restore(self, state, now=time.time() if now is None else now)


def alerts_offsets_of(state: Mapping[str, Any]) -> dict[int, int]:
    """Where ``ai.alerts`` ended when ``state`` was snapshotted (per partition),
    from :meth:`Pipeline.checkpoint_state`; empty for older snapshots."""
    return {int(n): int(o) for n, o in (state.get("alerts_offsets") or {}).items()}
