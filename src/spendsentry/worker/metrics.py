"""Prometheus metrics of the worker, in one typed container.

Like Faust's ``sensors/prometheus.py``, every metric is created against an
injected :class:`~prometheus_client.CollectorRegistry`, so tests use a fresh
registry and a process can run two workers without name clashes.

Two kinds of metric live here:

* **Engine work** (events accepted, tokens, cost, dead letters, duplicates,
  alerts): :class:`PartitionCounters`, one per input partition, kept in the
  partition's state and snapshotted with it. ``/metrics`` shows the copy held by
  the partition's last *durable* snapshot (:class:`CommittedCounters`, a
  custom collector), with a ``partition`` label. A worker that is killed and
  restarted restores that snapshot, so the counters continue from what was
  shown, and what is processed again after the restore is not counted twice
  (docs/reliability.md, "Metrics across restarts").
* **Process work** (records read, batch and snapshot latency, lags, gauges):
  ordinary ``prometheus_client`` metrics that count what this process did.

The ``use_case`` label is capped: a use-case name is producer-controlled, and an
unbounded label would let one misbehaving gateway blow up Prometheus. The
:class:`UseCaseLabels` cap gives the busiest use cases their own label and
folds the rest into ``"other"``; the worker's limit is divided across the input
partitions, so it holds per worker however many partitions it owns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

OTHER = "other"
#: The ``use_case`` label of dead letters whose use case could not be read.
UNKNOWN = "unknown"
#: ``model`` label values of unpriced events (a handful is normal: new models).
MODEL_LABELS = 20

#: Event time behind the wall clock: from "live" to "replaying last week".
LAG_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 6 * 3600, 24 * 3600)
#: Seconds to decode, process and advance one batch.
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class UseCaseLabels:
    """Caps the cardinality of the ``use_case`` label.

    A use case gets its own label while fewer than ``limit`` have one; later
    ones are counted under ``"other"``. :meth:`rerank` (called now and then)
    hands a label to an unlabelled use case that has become clearly busier
    (``swap_factor`` times) than the quietest labelled one, so over time the
    labels follow the top ``limit`` use cases by volume without flapping.

    Parameters
    ----------
    limit : int
        Maximum number of distinct ``use_case`` label values besides ``"other"``.
    swap_factor : float
        How much busier a challenger must be to take a label over.
    max_tracked : int
        Bound on remembered volumes (the quietest are forgotten beyond it).

    Examples
    --------
    >>> cap = UseCaseLabels(limit=2)
    >>> [cap.label(u) for u in ("a", "b", "c", "a")]
    ['a', 'b', 'other', 'a']
    """

    def __init__(self, limit: int = 50, *, swap_factor: float = 2.0, max_tracked: int = 100_000):
        self.limit = limit
        self.swap_factor = swap_factor
        self.max_tracked = max_tracked
        self.volume: dict[str, int] = {}
        self.labelled: set[str] = set()

    def count(self, use_case: str, n: int) -> None:
        """Add ``n`` events to ``use_case``'s volume (the ranking key)."""
        self.volume[use_case] = self.volume.get(use_case, 0) + n
        if len(self.volume) > 2 * self.max_tracked:
            # Trimmed here too, not only at rerank: a flood of new names
            # between two reranks must not grow the dict without bound.
            self._forget_quietest()

    def _forget_quietest(self) -> None:
        keep = sorted(self.volume, key=self.volume.__getitem__, reverse=True)
        keep = keep[: self.max_tracked // 2]
        self.volume = {u: self.volume[u] for u in keep}

    def label(self, use_case: str) -> str:
        """The label value to use for ``use_case``."""
        if use_case in self.labelled:
            return use_case
        if len(self.labelled) < self.limit:
            self.labelled.add(use_case)
            return use_case
        return OTHER

    def rerank(self) -> list[str]:
        """Swap labels towards the busiest use cases; return the evicted names."""
        evicted: list[str] = []
        if len(self.volume) > self.max_tracked:
            self._forget_quietest()
        if len(self.labelled) < self.limit:
            return evicted
        challengers = sorted(
            (u for u in self.volume if u not in self.labelled),
            key=lambda u: (-self.volume[u], u),
        )
        for challenger in challengers:
            weakest = min(self.labelled, key=lambda u: (self.volume.get(u, 0), u))
            if self.volume[challenger] < self.swap_factor * max(1, self.volume.get(weakest, 0)):
                break
            self.labelled.discard(weakest)
            self.labelled.add(challenger)
            evicted.append(weakest)
        return evicted


#: The engine's bucket for totals beyond its cap on named totals (engine.OTHER_USE_CASES).
ENGINE_OTHER = "(other)"
NANO = 1_000_000_000


def label_share(worker_limit: int, partitions: int) -> int:
    """Labels per partition so that a worker owning every partition stays in ``worker_limit``.

    >>> label_share(50, 3), label_share(50, 64), label_share(50, 1)
    (16, 1, 50)
    """
    return max(1, worker_limit // max(1, partitions))


@dataclass(slots=True)
class PartitionCounters:
    """The engine-work counters of one input partition, ``use_case`` label capped.

    Part of the partition's state: snapshotted and restored with the engine, so
    every process that owns the partition in turn continues the same values.
    Values only grow, except that a use case losing its label to a busier one
    (:meth:`rerank`) loses its series (its later events count under ``other``).

    Examples
    --------
    >>> c = PartitionCounters.empty(label_limit=1)
    >>> c.add_use_case("a", {"llm_call": 2}, 10, 1, 500_000_000)
    >>> c.add_use_case("b", {"llm_call": 1}, 5, 1, 0)
    >>> sorted(c.events.items()), c.cost_nano
    ([(('a', 'llm_call'), 2), (('other', 'llm_call'), 1)], {'a': 500000000})
    """

    labels: UseCaseLabels
    #: (use_case label, kind) -> events accepted.
    events: dict[tuple[str, str], int] = field(default_factory=dict)
    #: (use_case label, direction) -> tokens.
    tokens: dict[tuple[str, str], int] = field(default_factory=dict)
    #: use_case label -> cost in integer nano-USD (sums do not depend on order).
    cost_nano: dict[str, int] = field(default_factory=dict)
    #: reason -> dead letters.
    rejected: dict[str, int] = field(default_factory=dict)
    #: (kind, severity, status) -> alert records the engine emitted (each published once).
    alerts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    duplicates: int = 0
    #: Input records the state reflects (``/status`` shows the committed value).
    records: int = 0

    @classmethod
    def empty(cls, label_limit: int) -> PartitionCounters:
        # Ranking memory per partition: enough to find the busy names, bounded.
        return cls(UseCaseLabels(label_limit, max_tracked=max(1_000, 20 * label_limit)))

    @classmethod
    def from_totals(
        cls, totals: Mapping[str, object], label_limit: int, *, duplicates: int = 0
    ) -> PartitionCounters:
        """Counters for a state snapshotted before they existed (engine totals by name)."""
        counters = cls.empty(label_limit)
        for name, t in sorted(totals.items()):
            counters.add_use_case(
                name,
                dict(getattr(t, "events_by_kind", {})),
                int(getattr(t, "input_tokens", 0)),
                int(getattr(t, "output_tokens", 0)),
                int(getattr(t, "cost_nano", 0)),
            )
        counters.duplicates = duplicates
        return counters

    def add_use_case(
        self,
        use_case: str,
        events_by_kind: Mapping[str, int],
        input_tokens: int,
        output_tokens: int,
        cost_nano: int,
    ) -> None:
        """Add one batch's increments of one use case."""
        labels = self.labels
        if use_case == ENGINE_OTHER:
            label = OTHER
        else:
            labels.count(use_case, sum(events_by_kind.values()))
            label = labels.label(use_case)
        events = self.events
        for kind, n in events_by_kind.items():
            if n:
                events[(label, kind)] = events.get((label, kind), 0) + n
        if input_tokens:
            key = (label, "input")
            self.tokens[key] = self.tokens.get(key, 0) + input_tokens
        if output_tokens:
            key = (label, "output")
            self.tokens[key] = self.tokens.get(key, 0) + output_tokens
        if cost_nano:
            self.cost_nano[label] = self.cost_nano.get(label, 0) + cost_nano

    def add_rejected(self, reason: str, n: int = 1) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + n

    def add_alert(self, kind: str, severity: str, status: str) -> None:
        key = (kind, severity, status)
        self.alerts[key] = self.alerts.get(key, 0) + 1

    def rerank(self) -> list[str]:
        """Move labels towards the busiest use cases; drop the evicted labels' series."""
        evicted = self.labels.rerank()
        for label in evicted:
            self.events = {k: n for k, n in self.events.items() if k[0] != label}
            self.tokens = {k: n for k, n in self.tokens.items() if k[0] != label}
            self.cost_nano.pop(label, None)
        return evicted

    def frozen(self) -> PartitionCounters:
        """A copy of the values (not the ranking) to show while this one moves on."""
        return PartitionCounters(
            self.labels,
            dict(self.events),
            dict(self.tokens),
            dict(self.cost_nano),
            dict(self.rejected),
            dict(self.alerts),
            self.duplicates,
            self.records,
        )


#: Owned partitions and the counters their last durable snapshot holds.
CountersSource = Callable[[], Iterable[tuple[int, PartitionCounters]]]


class CommittedCounters(Collector):
    """The engine-work counter families, read from each partition's committed counters.

    Read at scrape time from :attr:`source` (set by the worker's partition set):
    rendering costs O(series), bounded by the label caps, never O(use cases).
    """

    def __init__(self) -> None:
        self.source: CountersSource = lambda: ()

    def describe(self) -> Iterator[Metric]:
        # Names only, so the registry refuses a clash without calling collect().
        yield from self._families()

    def _families(self) -> tuple[CounterMetricFamily, ...]:
        return (
            CounterMetricFamily(
                "spendsentry_events",
                "Accepted events, as of the partition's last durable snapshot",
                labels=["use_case", "kind", "partition"],
            ),
            CounterMetricFamily(
                "spendsentry_tokens",
                "Tokens of accepted usage events, as of the last durable snapshot",
                labels=["use_case", "direction", "partition"],
            ),
            CounterMetricFamily(
                "spendsentry_cost_usd",
                "Cost of accepted usage events (reported or priced), as of the last durable "
                "snapshot",
                labels=["use_case", "partition"],
            ),
            CounterMetricFamily(
                "spendsentry_rejected",
                "Records dead-lettered, by reason, as of the last durable snapshot",
                labels=["reason", "partition"],
            ),
            CounterMetricFamily(
                "spendsentry_duplicates",
                "Events dropped as duplicates, as of the last durable snapshot",
                labels=["partition"],
            ),
            CounterMetricFamily(
                "spendsentry_alerts",
                "Alert records emitted (each published once), as of the last durable snapshot",
                labels=["kind", "severity", "status", "partition"],
            ),
        )

    def collect(self) -> Iterator[Metric]:
        events, tokens, cost, rejected, duplicates, alerts = self._families()
        for partition, c in sorted(self.source(), key=lambda pc: pc[0]):
            part = str(partition)
            for (label, kind), n in sorted(c.events.items()):
                events.add_metric([label, kind, part], n)
            for (label, direction), n in sorted(c.tokens.items()):
                tokens.add_metric([label, direction, part], n)
            for label, nano in sorted(c.cost_nano.items()):
                cost.add_metric([label, part], nano / NANO)
            for reason, n in sorted(c.rejected.items()):
                rejected.add_metric([reason, part], n)
            duplicates.add_metric([part], c.duplicates)
            for (kind, severity, status), n in sorted(c.alerts.items()):
                alerts.add_metric([kind, severity, status, part], n)
        yield from (events, tokens, cost, rejected, duplicates, alerts)


@dataclass(slots=True)
class WorkerMetrics:
    """Every metric the worker exports (names prefixed ``spendsentry_``).

    Create with :meth:`create`. The engine-work counters are in
    :attr:`committed` (see :class:`CommittedCounters`); label values of
    ``detector_score`` go through :attr:`use_cases` (the cardinality cap).
    """

    committed: CommittedCounters
    late: Counter
    alerts_suppressed: Counter
    active_throttles: Gauge
    throttle_records_rejected: Counter
    open_incidents: Gauge
    detector_score: Gauge
    processing_lag: Histogram
    watermark_lag: Gauge
    batch_latency: Histogram
    batch_records: Counter
    consumer_lag: Gauge
    snapshots: Counter
    snapshot_latency: Histogram
    deadletter_failures: Counter
    deadletters_unwritten: Gauge
    input_events: Counter
    input_skipped: Counter
    unpriced: Counter
    dead_letters: Counter
    use_cases: UseCaseLabels
    #: Operator feedback (expected_change, false_alarm) the engine holding the
    #: use case took, by use case, kind and verdict (this process's count).
    feedback: Counter
    #: Sensitivity of a kind for a use case after operators' false alarms.
    detector_sensitivity: Gauge
    #: Events an adapter gave the default use case, by source (this process's reads).
    unattributed: Counter
    #: POST /v1/traces: spans by outcome, requests by HTTP status.
    otlp_http_spans: Counter
    otlp_http_requests: Counter
    #: Cap on ``model`` label values of :attr:`unpriced` (model names come from producers).
    models: UseCaseLabels
    #: Worker-wide cap on ``use_case`` label values (divided across partitions).
    use_case_limit: int = 50

    @classmethod
    def create(cls, registry: CollectorRegistry, *, use_case_limit: int = 50) -> WorkerMetrics:
        """Register every metric in ``registry``.

        Parameters
        ----------
        registry : CollectorRegistry
            Where the metrics live (a fresh one per worker or per test).
        use_case_limit : int
            Cap on distinct ``use_case`` label values per worker (plus ``"other"``).
        """
        r = registry
        committed = CommittedCounters()
        r.register(committed)
        return cls(
            committed=committed,
            late=Counter(
                "spendsentry_late_events",
                "Events dead-lettered as late (behind the watermark), by use case: history "
                "produced into a live topic shows here (it goes through `spendsentry replay`)",
                ["use_case"],
                registry=r,
            ),
            alerts_suppressed=Counter(
                "spendsentry_alerts_suppressed",
                "Alert records not republished because they already were (after a restart)",
                registry=r,
            ),
            active_throttles=Gauge(
                "spendsentry_active_throttles", "Throttle commands in force", registry=r
            ),
            throttle_records_rejected=Counter(
                "spendsentry_throttle_records_rejected",
                "Records on the throttle topic ignored because they are not verified commands",
                ["reason"],
                registry=r,
            ),
            open_incidents=Gauge(
                "spendsentry_open_incidents", "Incidents currently firing", registry=r
            ),
            detector_score=Gauge(
                "spendsentry_detector_score",
                "Latest detector score reported with an alert (0 once resolved)",
                ["use_case", "detector"],
                registry=r,
            ),
            processing_lag=Histogram(
                "spendsentry_processing_lag_seconds",
                "Wall clock minus the newest event time of a partition's batch",
                buckets=LAG_BUCKETS,
                registry=r,
            ),
            watermark_lag=Gauge(
                "spendsentry_watermark_lag_seconds",
                "Wall clock minus the engine watermark",
                registry=r,
            ),
            batch_latency=Histogram(
                "spendsentry_batch_seconds",
                "Time to decode, process and advance one batch",
                buckets=BATCH_BUCKETS,
                registry=r,
            ),
            batch_records=Counter(
                "spendsentry_records",
                "Kafka records read by this process (read again after a restart included)",
                ["topic"],
                registry=r,
            ),
            unattributed=Counter(
                "spendsentry_unattributed_events",
                "Events an adapter found no use case for and gave the default one "
                "(SPENDSENTRY_DEFAULT_USE_CASE), by source: otlp, litellm (payloads on the "
                "usage topic), otlp_http (POST /v1/traces), litellm_callback (read again "
                "after a restart included)",
                ["source"],
                registry=r,
            ),
            otlp_http_spans=Counter(
                "spendsentry_otlp_http_spans",
                "Spans received on POST /v1/traces, by outcome: published (as usage events), "
                "rejected (in the answer's partial_success), skipped (not GenAI calls)",
                ["outcome"],
                registry=r,
            ),
            otlp_http_requests=Counter(
                "spendsentry_otlp_http_requests",
                "Requests to POST /v1/traces, by HTTP status of the answer",
                ["status"],
                registry=r,
            ),
            consumer_lag=Gauge(
                "spendsentry_consumer_lag",
                "Records on the broker not consumed yet",
                ["topic", "partition"],
                registry=r,
            ),
            snapshots=Counter("spendsentry_snapshots", "State snapshots written", registry=r),
            snapshot_latency=Histogram(
                "spendsentry_snapshot_seconds",
                "Time to write a snapshot and commit its offsets",
                buckets=BATCH_BUCKETS,
                registry=r,
            ),
            deadletter_failures=Counter(
                "spendsentry_deadletter_publish_failures",
                "Dead letters the broker did not take, by error and by where they went "
                "instead (file: the local dead-letter file; held: nowhere yet, retried)",
                ["error", "outcome"],
                registry=r,
            ),
            deadletters_unwritten=Gauge(
                "spendsentry_deadletters_unwritten",
                "Dead letters neither on the topic nor in the local file: their "
                "partitions' snapshots and commits wait for them",
                registry=r,
            ),
            input_events=Counter(
                "spendsentry_input_events",
                "Events decoded from input records, by input format (native, otlp, litellm)",
                ["format"],
                registry=r,
            ),
            input_skipped=Counter(
                "spendsentry_input_skipped",
                "Input elements skipped as no LLM usage, not errors (OTLP spans without GenAI "
                "attributes, LiteLLM file and batch calls)",
                registry=r,
            ),
            unpriced=Counter(
                "spendsentry_unpriced_events",
                "Usage events without a reported cost whose model has no known price (counted "
                "at zero cost: add the model to streams/prices.toml), by model",
                ["model"],
                registry=r,
            ),
            dead_letters=Counter(
                "spendsentry_dead_letters",
                "Rejected records or elements, by reason and use case (unknown: none could be "
                "read), counted by this process (spendsentry_rejected_total is the durable "
                "count by reason)",
                ["reason", "use_case"],
                registry=r,
            ),
            feedback=Counter(
                "spendsentry_feedback",
                "Operator feedback on alerts taken by the engine that holds the use case, by "
                "use case, kind and verdict (expected_change: rebaselined and resolved; "
                "false_alarm: the kind's sensitivity lowered one step within the policy's "
                "floor); counted by this process",
                ["use_case", "kind", "verdict"],
                registry=r,
            ),
            detector_sensitivity=Gauge(
                "spendsentry_detector_sensitivity",
                "Sensitivity of a detector for a use case after operators' false alarms "
                "(only kinds that had one; the policy's sensitivity otherwise)",
                ["use_case", "detector"],
                registry=r,
            ),
            use_cases=UseCaseLabels(use_case_limit),
            models=UseCaseLabels(MODEL_LABELS),
            use_case_limit=use_case_limit,
        )

    def count_dead_letters(self, by_reason_use_case: Mapping[tuple[str, str | None], int]) -> None:
        """Count rejected elements by (reason, use case); use cases capped like the others."""
        for (reason, use_case), n in by_reason_use_case.items():
            label = UNKNOWN if use_case is None else self.use_cases.label(use_case)
            self.dead_letters.labels(reason, label).inc(n)

    def count_unpriced(self, by_model: Mapping[str, int]) -> None:
        """Count unpriced events by model (the first :data:`MODEL_LABELS` names labelled)."""
        for model, n in by_model.items():
            label = OTHER if model == ENGINE_OTHER else self.models.label(model)
            self.unpriced.labels(label).inc(n)

    def count_late(self, use_case: str | None, n: int = 1) -> None:
        """Count late events of ``use_case`` (the label is capped like the others)."""
        label = self.use_cases.label(use_case) if use_case else OTHER
        self.late.labels(label).inc(n)

    def set_score(self, use_case: str, detector: str, score: float) -> None:
        """Record a detector's latest score for a use case (first ``limit`` names labelled)."""
        self.detector_score.labels(self.use_cases.label(use_case), detector).set(score)

    def count_feedback(self, use_case: str, kind: str, verdict: str) -> None:
        """Count one feedback action (the use case label is capped like the others)."""
        self.feedback.labels(self.use_cases.label(use_case), kind, verdict).inc()

    def set_sensitivities(self, tuned: Mapping[tuple[str, str], float]) -> None:
        """Set ``(use case, kind) -> sensitivity`` gauges."""
        for (use_case, kind), value in tuned.items():
            self.detector_sensitivity.labels(self.use_cases.label(use_case), kind).set(value)

    def set_consumer_lag(self, lags: Iterable[tuple[str, int, int]]) -> None:
        """Set ``(topic, partition, lag)`` gauges."""
        for topic, partition, lag in lags:
            self.consumer_lag.labels(topic, str(partition)).set(lag)
