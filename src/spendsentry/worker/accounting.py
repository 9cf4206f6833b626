"""Counting a pipeline's work: engine-work counters (``PartitionAccounting``), batch metrics.

:class:`PartitionAccounting` turns what one pipeline's engine did (totals per
use case, dead letters, alerts) into that state's
:class:`~spendsentry.worker.metrics.PartitionCounters`, which are snapshotted
with the state, and keeps the copy ``/metrics`` shows: the counters of the last
*durable* snapshot, so a crash never shows work twice. :func:`count_records`
and :func:`count_output` count what this process did with a batch (records
read, suppressed repeats, late events, scores) on
:class:`~spendsentry.worker.metrics.WorkerMetrics`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from spendsentry.engine_stats import OTHER_USE_CASES, EngineStats
from spendsentry.ingest.attribution import SOURCE_FIELD
from spendsentry.ingest.deadletter import RejectReason
from spendsentry.worker.metrics import PartitionCounters, WorkerMetrics

if TYPE_CHECKING:
    from spendsentry.events import Event
    from spendsentry.ingest import DeadLetter
    from spendsentry.worker.pipeline import BatchOutput, RecordLike

#: A use case's totals as the engine had them: (events by kind, input tokens,
#: output tokens, cost in nano-USD).
Totals = dict[str, tuple[dict[str, int], int, int, int]]


class PartitionAccounting:
    """The engine-work counters of one pipeline's state, and the copy ``/metrics`` shows.

    Parameters
    ----------
    use_case_labels : int
        ``use_case`` label values of the counters (besides ``other``).

    >>> from spendsentry.engine_stats import EngineStats, UseCaseTotals
    >>> from spendsentry.windows import RunTotals
    >>> stats = EngineStats()
    >>> book = PartitionAccounting()
    >>> before = book.totals_before(["support"], stats)
    >>> stats.use_cases["support"] = UseCaseTotals()
    >>> stats.use_cases["support"].add_usages(2, RunTotals({"llm_call": 2}, 100, 10, 3_000))
    >>> book.count_process(before, stats)
    >>> book.count_alert("cost_spike", "warning", "firing")
    >>> book.committed.events  # nothing durable yet
    {}
    >>> captured = book.capture(duplicates=stats.duplicates, records=2)
    >>> book.commit(captured)
    >>> book.committed.events, book.committed.cost_nano, book.committed.records
    ({('support', 'llm_call'): 2}, {'support': 3000}, 2)
    """

    __slots__ = ("committed", "counters")

    def __init__(self, use_case_labels: int = 50) -> None:
        #: The counters as this state has them (snapshotted with it).
        self.counters = PartitionCounters.empty(use_case_labels)
        #: What ``/metrics`` shows: the counters of the last durable snapshot.
        self.committed = self.counters.frozen()

    # -- counting -------------------------------------------------------------

    @staticmethod
    def totals_before(names: Iterable[str], stats: EngineStats) -> Totals:
        """The engine's totals of ``names`` (and of ``(other)``) before a ``process`` call."""
        found: Totals = {}
        for name in {*names, OTHER_USE_CASES}:
            t = stats.use_cases.get(name)
            found[name] = (
                ({}, 0, 0, 0)
                if t is None
                else (dict(t.events_by_kind), t.input_tokens, t.output_tokens, t.cost_nano)
            )
        return found

    def count_process(self, before: Totals, stats: EngineStats) -> None:
        """Add what one ``process`` call changed in the engine's totals to the counters."""
        counters = self.counters
        for name, (by_kind, input_tokens, output_tokens, cost_nano) in before.items():
            t = stats.use_cases.get(name)
            if t is None:
                continue
            delta = {k: n - by_kind.get(k, 0) for k, n in t.events_by_kind.items()}
            if any(delta.values()):
                counters.add_use_case(
                    name,
                    delta,
                    t.input_tokens - input_tokens,
                    t.output_tokens - output_tokens,
                    t.cost_nano - cost_nano,
                )

    def count_rejected(self, letters: Iterable[DeadLetter]) -> None:
        """Count dead letters by reason."""
        for letter in letters:
            # A summary letter stands for several rejected elements: count those.
            for reason, n in letter.counts().items():
                self.counters.add_rejected(reason, n)

    def count_alert(self, kind: str, severity: str, status: str) -> None:
        """Count an alert the engine emitted (published or suppressed as a repeat)."""
        self.counters.add_alert(kind, severity, status)

    # -- what /metrics shows --------------------------------------------------

    def capture(self, *, duplicates: int, records: int) -> PartitionCounters:
        """Bring the counters up to the state about to be snapshotted; return a frozen copy.

        Once that snapshot is durable, :meth:`commit` with the copy makes
        ``/metrics`` show it.
        """
        counters = self.counters
        counters.rerank()
        counters.duplicates = duplicates
        counters.records = records
        return counters.frozen()

    def commit(self, counters: PartitionCounters) -> None:
        """Show ``counters`` (captured for a snapshot now durable) on ``/metrics``."""
        # Never back: an older write finishing late must not lower a counter.
        if counters.records >= self.committed.records:
            self.committed = counters

    def restore(self, counters: object, stats: EngineStats, records: int) -> None:
        """Continue from a snapshot's counters (rebuilt from ``stats`` for older ones)."""
        if not isinstance(counters, PartitionCounters):
            # A snapshot from before the counters were part of the state.
            counters = PartitionCounters.from_totals(
                stats.use_cases, self.counters.labels.limit, duplicates=stats.duplicates
            )
            counters.records = records
        # The counters continue from the snapshot: what is processed again
        # after a crash was never shown, so it is not counted twice.
        self.counters = counters
        self.committed = counters.frozen()


#: The ``source`` label values of ``spendsentry_unattributed_events`` (others: ``other``).
UNATTRIBUTED_SOURCES = frozenset({"otlp", "litellm", "otlp_http", "litellm_callback", "native"})


def count_unattributed(metrics: WorkerMetrics, events: Iterable[Event], default: str) -> None:
    """Events of the default use case, by the adapter that gave it (decoded the slow way).

    Foreign shapes name their format; events an adapter republished name it in
    their ``source`` field. The label takes known names only (it is input).
    """
    for event in events:
        if event.use_case != default:
            continue
        named = event.extra.get(SOURCE_FIELD) if event.extra else None
        source = named if isinstance(named, str) else event.source_format
        metrics.unattributed.labels(source if source in UNATTRIBUTED_SOURCES else "other").inc()


def count_records(metrics: WorkerMetrics, records: Iterable[RecordLike]) -> None:
    """Records consumed per topic."""
    by_topic: dict[str, int] = {}
    for r in records:
        by_topic[r.topic] = by_topic.get(r.topic, 0) + 1
    for topic, n in by_topic.items():
        metrics.batch_records.labels(topic).inc(n)


def count_output(metrics: WorkerMetrics, out: BatchOutput) -> None:
    """Suppressed repeats, dead letters and late events per use case, and detector
    scores of one batch (this process's work; the durable counts of dead letters
    and alerts are engine work, in :class:`PartitionCounters`)."""
    late: dict[str | None, int] = {}
    rejected: dict[tuple[str, str | None], int] = {}
    for letter in out.dead_letters:
        for reason, n in letter.counts().items():
            key = (reason, letter.use_case)
            rejected[key] = rejected.get(key, 0) + n
            if reason == RejectReason.LATE.value:
                late[letter.use_case] = late.get(letter.use_case, 0) + n
    for use_case, n in late.items():
        metrics.count_late(use_case, n)
    if rejected:
        metrics.count_dead_letters(rejected)
    if out.suppressed:
        metrics.alerts_suppressed.inc(out.suppressed)
    for alert in out.alerts:
        score = 0.0 if alert.status == "resolved" else alert.evidence.get("score", 0.0)
        metrics.set_score(alert.use_case, alert.kind, float(score or 0.0))


def count_input(metrics: WorkerMetrics, formats: Mapping[str, int], skipped: int) -> None:
    """Events decoded per input format, and elements skipped as no LLM usage."""
    for fmt, n in formats.items():
        metrics.input_events.labels(fmt).inc(n)
    if skipped:
        metrics.input_skipped.inc(skipped)


def count_unpriced(
    metrics: WorkerMetrics, before: Mapping[str, int], after: Mapping[str, int]
) -> None:
    """What one ``process`` call added to the engine's unpriced events by model.

    >>> from prometheus_client import CollectorRegistry
    >>> m = WorkerMetrics.create(CollectorRegistry())
    >>> count_unpriced(m, {"a": 2}, {"a": 5, "b": 1})
    >>> m.unpriced.labels("a")._value.get(), m.unpriced.labels("b")._value.get()
    (3.0, 1.0)
    """
    grown = {m: n - before.get(m, 0) for m, n in after.items() if n > before.get(m, 0)}
    if grown:
        metrics.count_unpriced(grown)


__all__ = [
    "PartitionAccounting",
    "Totals",
    "count_input",
    "count_output",
    "count_records",
    "count_unattributed",
    "count_unpriced",
]
