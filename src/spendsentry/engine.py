"""The engine: events in, alerts (and throttle commands) out, by event time.

Pure and deterministic: no I/O, no wall clock. The Faust worker and offline
``replay`` drive this same class, which is what makes a backtest trustworthy.

Shape of a run::

    engine = Engine(policies)
    out = engine.process(batch)          # ingest a batch (dedupe, late check, price)
    out += engine.advance(event_time)    # close what the allowed lateness behind it allows
    ...
    out += engine.flush()                # end of input: close what is still open

Events are bucketed per use case and event-time minute. A minute is closed
once the watermark (by default: the newest event time seen minus the allowed
lateness) passes its end; only closed minutes reach the detectors. An event
for an already-closed minute is *late* and dead-lettered with reason ``late``.
So within the allowed lateness, arrival order does not change any result.

This module holds the engine's front (``Engine``: ingest, event time,
operator actions) with its config and output; a use case's state and its
minute are :mod:`spendsentry.use_case`, closing minutes is
:mod:`spendsentry.minutes`, the counters are :mod:`spendsentry.engine_stats`.
Worker snapshots pickle ``UseCaseState``, ``EngineStats`` and
``UseCaseTotals`` under ``spendsentry.engine``: they stay importable from here.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from spendsentry.actions import ControlAction, ThrottleCommand, ThrottlePlanner
from spendsentry.alerts import Alert, severity_rank
from spendsentry.clock import EventClock
from spendsentry.dedupe import EventIdIndex
from spendsentry.detectors import Monitor, build_monitors
from spendsentry.engine_stats import OTHER_USE_CASES, EngineStats, UseCaseTotals
from spendsentry.events import USAGE_KINDS, Event, OutcomeEvent, UsageEvent
from spendsentry.ingest.deadletter import DeadLetter, RejectReason, SourcePosition
from spendsentry.minutes import close_until, evict_idle
from spendsentry.pricing import PriceBook
from spendsentry.shared_content import SharedContentIndex
from spendsentry.stream_start import bulk_start
from spendsentry.use_case import UseCaseState, evict_least_active
from spendsentry.windows import MINUTE, MinuteBucket, MinuteSignals

if TYPE_CHECKING:
    from spendsentry.policy import Policy, PolicySet


#: Feedback actions waiting for their event time at most (``ai.control`` is not
#: signed: a flood of actions dated far ahead cannot grow the engine without bound).
MAX_PENDING = 10_000


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Tuning knobs of the engine; the defaults suit production traffic."""

    #: Events up to this much older than the newest event still count.
    allowed_lateness_s: float = 120.0
    #: Event ids are remembered this many minutes behind the watermark.
    dedupe_minutes: int = 5
    #: Hard cap on remembered event ids (memory bound under floods).
    max_dedupe_ids: int = 2_000_000
    session_idle_minutes: int = 30
    max_sessions_per_use_case: int = 50_000
    max_content_hashes_per_use_case: int = 200_000
    #: Content hashes remembered across use cases (cross-use-case duplicates).
    max_shared_content_hashes: int = 500_000
    #: A use case silent this long has its state dropped (counted).
    use_case_idle_minutes: int = 7 * 24 * 60
    #: Hard cap on tracked use cases; beyond it, the least recently active is evicted.
    max_use_cases: int = 10_000
    #: Distinct model names counted in ``EngineStats.unpriced_models``; further
    #: names count under ``(other)`` (model names come from producers).
    max_unpriced_models: int = 1_000
    #: Quiet minutes before an incident resolves.
    resolve_after_minutes: int = 10
    #: Values tracked per dimension per use case for what drives an alert's spend.
    max_driver_values: int = 16
    #: A use case silent this many minutes is *dormant*: its monitors stop
    #: seeing empty minutes until it has data again (a day of silence is as
    #: long as silence gets). This is what makes a jump of event time over
    #: idle minutes cost O(use cases), not O(minutes): when every use case is
    #: dormant, the clock moves to the next minute holding data at once.
    dormant_after_minutes: int = 24 * 60
    #: A record this far (seconds) ahead of the newest event time moves the
    #: clock only once a second record confirms the jump: one producer with a
    #: broken clock cannot make everybody else's events late.
    confirm_jump_s: float = 3_600.0
    #: Before the first minute closes, a record separated from the bulk of
    #: the stream by more than this many minutes is an outlier (``late``), not
    #: the start of the stream: one absurd first record cannot pin the clock.
    start_gap_minutes: int = 7 * 24 * 60
    #: A use case is *new* (judged against the fleet while its own baseline
    #: warms up, :mod:`spendsentry.detectors.fleet_prior`) only when it first
    #: appears after the engine has watched the stream this many minutes: one
    #: seen in the first hour was most likely there all along (the stream, not
    #: the use case, began), and a fleet prior would page an established large
    #: use case at every fresh start.
    new_use_case_after_minutes: int = 60


@dataclass(slots=True)
class EngineOutput:
    """What one call into the engine produced, in a deterministic order."""

    alerts: list[Alert] = field(default_factory=list)
    rejected: list[DeadLetter] = field(default_factory=list)
    closed: list[MinuteSignals] = field(default_factory=list)
    #: Throttle commands, unsigned: the shell signs them (keys stay out of snapshots).
    commands: list[ThrottleCommand] = field(default_factory=list)
    #: Operator feedback taken for a use case this engine holds (counted once,
    #: by the engine that holds it: ``spendsentry_feedback_total``).
    feedback: list[ControlAction] = field(default_factory=list)

    def extend(self, other: EngineOutput) -> EngineOutput:
        self.alerts.extend(other.alerts)
        self.rejected.extend(other.rejected)
        self.closed.extend(other.closed)
        self.commands.extend(other.commands)
        self.feedback.extend(other.feedback)
        return self


#: (use case, its policy, the engine's price book) -> the use case's monitors.
MonitorFactory = Callable[[str, "Policy", PriceBook], list[Monitor]]


class Engine:
    """Deterministic event-time core shared by the worker and replay.

    Event time is the engine's own: ``closed_until`` (every minute before it is
    closed) only moves forward, by :meth:`advance` and :meth:`flush`. Its cost
    is O(records + use-case minutes that hold data): a use case silent for
    :attr:`EngineConfig.dormant_after_minutes` stops being shown empty minutes,
    and when every use case is dormant the clock jumps to the next minute that
    holds data. Absurd event time cannot steer it (see :meth:`process`).
    """

    #: Defaults for engines restored from snapshots taken before these existed.
    closing_started = True
    #: Called with (use case, run of usage events) for every run the engine
    #: accepted, after pricing (the FOCUS export's tap; None: nobody listens).
    on_usage: Callable[[str, list[UsageEvent]], None] | None = None

    #: Where its events come from, for its own clock (replay: one stream).
    STREAM = "stream"

    def __init__(
        self,
        policies: PolicySet | None = None,
        *,
        config: EngineConfig | None = None,
        prices: PriceBook | None = None,
        monitor_factory: MonitorFactory = build_monitors,
    ) -> None:
        if policies is None:
            from spendsentry.policy import PolicySet

            policies = PolicySet.empty()
        self.policies = policies
        self.config = config or EngineConfig()
        self.prices = prices or PriceBook()
        self.monitor_factory = monitor_factory
        self.stats = EngineStats()
        self.use_cases: dict[str, UseCaseState] = {}
        #: Every minute before this one is closed (None until the first event).
        self.closed_until: int | None = None
        #: How far its own input has got (what :meth:`advance` uses by default;
        #: the worker passes the event time of all its partitions instead).
        self.clock = EventClock(math.inf, self.config.confirm_jump_s)
        #: Whether a minute has been closed yet: until then the start may move
        #: back (partitions arrive one after another; nothing was emitted).
        self.closing_started = False
        #: The first minute the engine closed (None before), or the first of the
        #: worker's engines (``PartitionSet``): how long the stream has been
        #: watched, which says whether a use case met now is new.
        self.watching_since: int | None = None
        self._seen_ids = EventIdIndex(self.config.max_dedupe_ids)
        #: Who first embedded each content hash, across use cases (one owner:
        #: the engine; use cases only see their own minutes).
        self.shared_content = SharedContentIndex(max_hashes=self.config.max_shared_content_hashes)
        #: The action ladder, operator actions and command versions.
        self.planner = ThrottlePlanner()
        #: Operator feedback waiting for its point in event time, in arrival order
        #: (:func:`spendsentry.feedback.apply_due`).
        self.pending_feedback: list[ControlAction] = []

    # -- ingest -------------------------------------------------------------

    def process(
        self, events: Iterable[Event], sources: Iterable[SourcePosition] | None = None
    ) -> EngineOutput:
        """Ingest a batch; does not close minutes (call :meth:`advance`).

        ``sources`` runs parallel to ``events`` (where each came from, for the
        dead letters of late events). A :class:`~collections.abc.Sequence` is
        only indexed for late events, so it can build its items lazily.
        """
        out = EngineOutput()
        if sources is not None and not isinstance(sources, Sequence):
            sources = list(sources)
        if not isinstance(events, Sequence):
            events = list(events)
        if not self.closing_started or self.closed_until is None:
            self._place_start(events)
        evicted_before = self._seen_ids.evicted
        runs, owners, outcomes = self._ingest(events, sources, out)
        totals_of = self._totals_of
        # Outcomes first: their kind was counted in the loop before, so the
        # key order of ``events_by_kind`` stays what it was.
        for use_case, n in outcomes.items():
            totals_of(use_case).add_outcomes(n)
        on_usage = self.on_usage
        for bucket, run in runs.items():
            totals_of(owners[bucket]).add_usages(len(run), bucket.add_usages(run))
            if on_usage is not None:
                on_usage(owners[bucket], run)
        # Late and duplicate events never move it: they are behind, or seen.
        self.clock.observe(self.STREAM, [e.ts for e in events], now=0.0)
        self.stats.evicted_dedupe_ids += self._seen_ids.evicted - evicted_before
        return out

    def _ingest(  # noqa: C901 - the per-event hot loop, inline for speed (see below)
        self,
        events: Sequence[Event],
        sources: Sequence[SourcePosition] | None,
        out: EngineOutput,
    ) -> tuple[dict[MinuteBucket, list[UsageEvent]], dict[MinuteBucket, str], dict[str, int]]:
        """Decide each event (duplicate, late, price) and group usage events per bucket.

        Returns the usage events per open bucket in arrival order, each bucket's
        use case, and the outcomes counted per use case.
        """
        # The hot loop: ~100k events/s. Complexity 13 on purpose: one branchy loop, a helper
        # call per event costs measurable throughput (benchmarks/bench_replay.py),
        # so only what is rare (late events, unpriced models) is a call. Locals
        # instead of attribute lookups; totals are summed once per batch, and
        # usage events are added per bucket in runs (sums are integers, so
        # grouping cannot change a result).
        stats = self.stats
        closed_until = self.closed_until
        is_duplicate = self._seen_ids.seen
        use_cases = self.use_cases
        price = self.prices.cost
        max_unpriced = self.config.max_unpriced_models
        accepted = duplicates = 0
        runs: dict[MinuteBucket, list[UsageEvent]] = {}
        owners: dict[MinuteBucket, str] = {}
        outcomes: dict[str, int] = {}
        for index, e in enumerate(events):
            ts = e.ts
            minute = int(ts // MINUTE)
            if is_duplicate(e.event_id, minute):
                duplicates += 1
                continue
            if closed_until is not None and minute < closed_until:
                out.rejected.append(self._late(e, sources, index, closed_until))
                continue
            use_case = e.use_case
            state = use_cases.get(use_case)
            if state is None:
                state = self._new_use_case(use_case)
            if minute > state.last_active_minute:
                state.last_active_minute = minute
            bucket = state.open.get(minute)
            if bucket is None:
                bucket = state.open[minute] = MinuteBucket(minute)
            accepted += 1
            if type(e) is UsageEvent:
                if e.cost_usd is None:
                    cost = price(
                        e.model, e.provider, e.input_tokens, e.output_tokens, e.cached_input_tokens
                    )
                    if cost is not None:
                        e.cost_usd = cost
                        e.cost_estimated = True
                    elif e.kind in ("llm_call", "embedding"):
                        stats.count_unpriced(e.model, max_unpriced)  # rare: a call is fine
                    else:
                        e.cost_usd = 0.0  # tool calls and retrievals carry no model price
                run = runs.get(bucket)
                if run is None:
                    run = runs[bucket] = []
                    owners[bucket] = use_case
                run.append(e)
            elif isinstance(e, OutcomeEvent):
                bucket.add_outcome(e)
                outcomes[use_case] = outcomes.get(use_case, 0) + 1
        stats.accepted += accepted
        stats.duplicates += duplicates
        return runs, owners, outcomes

    def _place_start(self, events: Sequence[Event]) -> None:
        """Decide where the stream starts, before any minute has closed.

        The start is the first minute of the bulk of the stream (this batch and
        the open buckets; :func:`spendsentry.stream_start.bulk_start`). Records
        before it are ``late``. Until a minute closes, the start only moves
        back (a partition read later may hold older minutes; nothing was
        emitted yet).
        """
        if not events:
            return
        weights = Counter(int(e.ts // MINUTE) for e in events)
        weights.update(self.open_minutes())
        start = bulk_start(weights, self.config.start_gap_minutes)
        assert start is not None
        if self.closed_until is None or start < self.closed_until:
            self.closed_until = start

    def open_minutes(self) -> Iterable[int]:
        """The minutes some use case has open (unordered, with repeats)."""
        for state in self.use_cases.values():
            yield from state.open

    def _late(
        self,
        e: Event,
        sources: Sequence[SourcePosition] | None,
        index: int,
        closed_until: int,
    ) -> DeadLetter:
        self.stats.late += 1
        source = sources[index] if sources is not None else None
        return late_dead_letter(e, source, self.config.allowed_lateness_s)

    def _new_use_case(self, use_case: str) -> UseCaseState:
        if len(self.use_cases) >= self.config.max_use_cases:
            self.stats.evicted_use_cases += evict_least_active(
                self.use_cases, max(1, self.config.max_use_cases // 10)
            )
        policy = self.policies.for_use_case(use_case)
        monitors = self.monitor_factory(use_case, policy, self.prices)
        state = UseCaseState(use_case, policy, monitors, self.config)
        self.use_cases[use_case] = state
        totals = self.stats.use_cases
        if use_case not in totals and len(totals) < self.config.max_use_cases * 10:
            totals[use_case] = UseCaseTotals()
        return state

    def _totals_of(self, use_case: str) -> UseCaseTotals:
        """A use case's totals, or those of use cases beyond the cap on named totals."""
        totals = self.stats.use_cases.get(use_case)
        if totals is None:
            totals = self.stats.use_cases.setdefault(OTHER_USE_CASES, UseCaseTotals())
        return totals

    # -- event time ---------------------------------------------------------

    @property
    def max_ts(self) -> float:
        """The newest (confirmed) event time of this engine's own input."""
        return self.clock.newest()

    def advance(self, event_time: float | None = None) -> EngineOutput:
        """Close every minute that ends at or before ``event_time`` minus the lateness.

        ``event_time`` is how far the stream has got (see
        :func:`spendsentry.clock.event_time`); by default, how far this engine's
        own input has got. The allowed lateness is applied here, and only here.
        """
        out = EngineOutput()
        if self.closed_until is None:
            return out
        reached = self.clock.newest() if event_time is None else event_time
        if reached == -math.inf:
            return out
        close_until(self, int((reached - self.config.allowed_lateness_s) // MINUTE), out)
        return out

    def flush(self) -> EngineOutput:
        """End of input: close every open minute."""
        out = EngineOutput()
        if self.closed_until is None:
            return out
        last = max(self.open_minutes(), default=self.closed_until - 1)
        close_until(self, last + 1, out)
        return out

    def forget_event_ids(self, minute: int) -> None:
        """Forget the event ids of minutes more than ``dedupe_minutes`` before ``minute``."""
        self._seen_ids.expire(minute - self.config.dedupe_minutes)

    # -- operators ----------------------------------------------------------

    def apply_control(self, action: ControlAction | Mapping[str, Any] | bytes) -> EngineOutput:
        """Apply an operator action from ``ai.control`` (ack, release, snooze).

        Raises
        ------
        spendsentry.actions.ControlError
            The message is not a valid control action (the reason says why).
        """
        if not isinstance(action, ControlAction):
            action = ControlAction.parse(action)
        if action.is_feedback:
            return self._take_feedback(action)
        policy = self.policies.for_use_case(action.use_case)
        return EngineOutput(commands=self.planner.apply_control(action, policy))

    def _take_feedback(self, action: ControlAction) -> EngineOutput:
        """Queue feedback for a use case this engine holds (others: not ours).

        It is applied at event time, not now (:func:`spendsentry.feedback.apply_due`): the
        worker reads ``ai.control`` between batches, at no fixed point of the
        stream, and a replay given the same actions must do the same.
        """
        if action.use_case not in self.use_cases or len(self.pending_feedback) >= MAX_PENDING:
            return EngineOutput()
        self.pending_feedback.append(action)
        return EngineOutput(feedback=[action])

    # -- introspection ------------------------------------------------------

    def firing(self) -> list[tuple[str, str, str]]:
        """(use case, kind, alert_id) of every open incident, sorted."""
        return [
            found for _, state in sorted(self.use_cases.items()) for found in state.open_incidents()
        ]


def late_dead_letter(e: Event, source: SourcePosition | None, lateness_s: float) -> DeadLetter:
    """The dead letter of an event for a minute that was already closed."""
    import orjson

    return DeadLetter(
        RejectReason.LATE,
        f"event time is before the watermark: minute {e.ts // MINUTE:.0f} was closed "
        f"(allowed lateness {lateness_s:.0f} s)",
        source or SourcePosition("engine"),
        orjson.dumps(e.to_dict()),
        event_id=e.event_id,
        use_case=e.use_case,
        field="ts",
    )


__all__ = [
    "OTHER_USE_CASES",
    "USAGE_KINDS",
    "Engine",
    "EngineConfig",
    "EngineOutput",
    "EngineStats",
    "MonitorFactory",
    "OutcomeEvent",
    "UseCaseState",
    "UseCaseTotals",
    "evict_idle",
    "evict_least_active",
    "late_dead_letter",
    "severity_rank",
]
