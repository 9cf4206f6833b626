"""Prometheus metrics of the worker, in one typed container.

Like Faust's ``sensors/prometheus.py``, every metric is created against an
injected :class:`~prometheus_client.CollectorRegistry`, so tests use a fresh
registry and a process can run two workers without name clashes.

The ``use_case`` label is capped: a use-case name is producer-controlled, and an
unbounded label would let one misbehaving gateway blow up Prometheus. The
:class:`UseCaseLabels` cap gives the busiest ``limit`` use cases their own label
and folds the rest into ``"other"``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

OTHER = "other"

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
            keep = sorted(self.volume, key=self.volume.__getitem__, reverse=True)
            keep = keep[: self.max_tracked // 2]
            self.volume = {u: self.volume[u] for u in keep}
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


@dataclass(slots=True)
class WorkerMetrics:
    """Every metric the worker exports (names prefixed ``spendsentry_``).

    Create with :meth:`create`; label values for ``use_case`` go through
    :attr:`use_cases` (the cardinality cap).
    """

    events: Counter
    tokens: Counter
    cost: Counter
    rejected: Counter
    duplicates: Counter
    late: Counter
    alerts: Counter
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
    use_cases: UseCaseLabels
    #: (metric, label values) series created per use-case label, for eviction.
    _series: dict[str, set[tuple[str, tuple[str, ...]]]] = field(default_factory=dict)

    @classmethod
    def create(cls, registry: CollectorRegistry, *, use_case_limit: int = 50) -> WorkerMetrics:
        """Register every metric in ``registry``.

        Parameters
        ----------
        registry : CollectorRegistry
            Where the metrics live (a fresh one per worker or per test).
        use_case_limit : int
            Cap on distinct ``use_case`` label values (plus ``"other"``).
        """
        r = registry
        return cls(
            events=Counter(
                "spendsentry_events", "Accepted events", ["use_case", "kind"], registry=r
            ),
            tokens=Counter(
                "spendsentry_tokens",
                "Tokens of accepted usage events",
                ["use_case", "direction"],
                registry=r,
            ),
            cost=Counter(
                "spendsentry_cost_usd",
                "Cost of accepted usage events (reported or priced)",
                ["use_case"],
                registry=r,
            ),
            rejected=Counter(
                "spendsentry_rejected",
                "Records dead-lettered, by reason",
                ["reason"],
                registry=r,
            ),
            duplicates=Counter(
                "spendsentry_duplicates", "Events dropped as duplicates", registry=r
            ),
            late=Counter(
                "spendsentry_late_events",
                "Events dead-lettered as late (behind the watermark), by use case: history "
                "produced into a live topic shows here (it goes through `spendsentry replay`)",
                ["use_case"],
                registry=r,
            ),
            alerts=Counter(
                "spendsentry_alerts",
                "Alert records published",
                ["kind", "severity", "status"],
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
                "spendsentry_records", "Kafka records consumed", ["topic"], registry=r
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
            use_cases=UseCaseLabels(use_case_limit),
        )

    def _track(self, label: str, metric: str, values: tuple[str, ...]) -> None:
        if label != OTHER:
            self._series.setdefault(label, set()).add((metric, values))

    def count_use_case(
        self,
        use_case: str,
        events_by_kind: dict[str, int],
        input_tokens: int,
        output_tokens: int,
        cost_usd: float,
    ) -> None:
        """Add one batch's increments for one use case."""
        cap = self.use_cases
        cap.count(use_case, sum(events_by_kind.values()))
        label = cap.label(use_case)
        for kind, n in events_by_kind.items():
            if n:
                self.events.labels(label, kind).inc(n)
                self._track(label, "events", (label, kind))
        if input_tokens:
            self.tokens.labels(label, "input").inc(input_tokens)
            self._track(label, "tokens", (label, "input"))
        if output_tokens:
            self.tokens.labels(label, "output").inc(output_tokens)
            self._track(label, "tokens", (label, "output"))
        if cost_usd:
            self.cost.labels(label).inc(cost_usd)
            self._track(label, "cost", (label,))

    def count_late(self, use_case: str | None, n: int = 1) -> None:
        """Count late events of ``use_case`` (the label is capped like the others)."""
        label = self.use_cases.label(use_case) if use_case else OTHER
        self.late.labels(label).inc(n)
        self._track(label, "late", (label,))

    def set_score(self, use_case: str, detector: str, score: float) -> None:
        """Record a detector's latest score for a use case."""
        label = self.use_cases.label(use_case)
        self.detector_score.labels(label, detector).set(score)
        self._track(label, "detector_score", (label, detector))

    def rerank_use_cases(self) -> list[str]:
        """Apply :meth:`UseCaseLabels.rerank`; drop the evicted labels' series."""
        evicted = self.use_cases.rerank()
        for label in evicted:
            for metric, values in self._series.pop(label, set()):
                family = getattr(self, metric)
                with contextlib.suppress(KeyError):
                    family.remove(*values)
        return evicted

    def set_consumer_lag(self, lags: Iterable[tuple[str, int, int]]) -> None:
        """Set ``(topic, partition, lag)`` gauges."""
        for topic, partition, lag in lags:
            self.consumer_lag.labels(topic, str(partition)).set(lag)
