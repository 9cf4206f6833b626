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
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from spendsentry.actions import Baseline, ControlAction, ThrottleCommand, ThrottlePlanner
from spendsentry.alerts import Alert, IncidentTracker, severity_rank
from spendsentry.clock import EventClock
from spendsentry.dedupe import EventIdIndex
from spendsentry.detectors import Monitor, PeriodTotals, UseCaseContext, build_monitors
from spendsentry.events import USAGE_KINDS, Event, OutcomeEvent, UsageEvent
from spendsentry.ingest.deadletter import DeadLetter, RejectReason, SourcePosition
from spendsentry.pricing import PriceBook
from spendsentry.shared_content import SharedContentIndex
from spendsentry.stream_start import bulk_start
from spendsentry.windows import (
    MINUTE,
    NANO,
    ContentTracker,
    CostWindow,
    MinuteBucket,
    MinuteSignals,
    ModelMinute,
    RunTotals,
    SessionTracker,
)

if TYPE_CHECKING:
    from spendsentry.policy import Policy, PolicySet


#: Where per-use-case totals go once ``10 x max_use_cases`` names have totals.
OTHER_USE_CASES = "(other)"


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


@dataclass(slots=True)
class UseCaseTotals:
    """Running totals of one use case (the replay summary and the metrics)."""

    events: int = 0
    events_by_kind: dict[str, int] = field(default_factory=dict)
    input_tokens: int = 0
    output_tokens: int = 0
    #: Integer nano-USD, so totals do not depend on arrival order.
    cost_nano: int = 0
    outcomes: int = 0

    @property
    def cost_usd(self) -> float:
        return self.cost_nano / NANO

    def add_usages(self, events: int, added: RunTotals) -> None:
        """Count a run of ``events`` usage events that added ``added`` to a bucket.

        >>> t = UseCaseTotals()
        >>> t.add_usages(3, RunTotals({"llm_call": 2, "tool_call": 1}, 120, 40, 5_000))
        >>> t.add_outcomes(1)
        >>> t.events, t.events_by_kind, t.cost_nano, t.outcomes
        (4, {'llm_call': 2, 'tool_call': 1, 'outcome': 1}, 5000, 1)
        """
        self.events += events
        by_kind = self.events_by_kind
        for kind, n in added.calls_by_kind.items():
            by_kind[kind] = by_kind.get(kind, 0) + n
        self.input_tokens += added.input_tokens
        self.output_tokens += added.output_tokens
        self.cost_nano += added.cost_nano

    def add_outcomes(self, n: int) -> None:
        """Count ``n`` outcome events."""
        self.events += n
        self.events_by_kind["outcome"] = self.events_by_kind.get("outcome", 0) + n
        self.outcomes += n

    def to_dict(self) -> dict[str, object]:
        return {
            "events": self.events,
            "events_by_kind": dict(sorted(self.events_by_kind.items())),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 6),
            "outcomes": self.outcomes,
        }


@dataclass(slots=True)
class EngineStats:
    """Counters over the engine's life (not reset by closing minutes)."""

    accepted: int = 0
    duplicates: int = 0
    late: int = 0
    unpriced: int = 0
    unpriced_models: dict[str, int] = field(default_factory=dict)
    use_cases: dict[str, UseCaseTotals] = field(default_factory=dict)
    alerts: dict[str, int] = field(default_factory=dict)
    evicted_use_cases: int = 0
    evicted_sessions: int = 0
    evicted_dedupe_ids: int = 0

    def count_unpriced(self, model: str | None, max_models: int) -> None:
        """Count an event no price is known for, by model (bounded: names come from producers).

        >>> stats = EngineStats()
        >>> for model in ("a", "b", "c", None):
        ...     stats.count_unpriced(model, max_models=2)
        >>> stats.unpriced, stats.unpriced_models
        (4, {'a': 1, 'b': 1, '(other)': 2})
        """
        self.unpriced += 1
        name = model or "(no model)"
        unpriced = self.unpriced_models
        if name not in unpriced and len(unpriced) >= max_models:
            name = OTHER_USE_CASES
        unpriced[name] = unpriced.get(name, 0) + 1


@dataclass(slots=True)
class EngineOutput:
    """What one call into the engine produced, in a deterministic order."""

    alerts: list[Alert] = field(default_factory=list)
    rejected: list[DeadLetter] = field(default_factory=list)
    closed: list[MinuteSignals] = field(default_factory=list)
    #: Throttle commands, unsigned: the shell signs them (keys stay out of snapshots).
    commands: list[ThrottleCommand] = field(default_factory=list)

    def extend(self, other: EngineOutput) -> EngineOutput:
        self.alerts.extend(other.alerts)
        self.rejected.extend(other.rejected)
        self.closed.extend(other.closed)
        self.commands.extend(other.commands)
        return self


class UseCaseState:
    """Everything the engine keeps for one use case."""

    #: Whether its monitors see every closed minute yet. A new use case starts
    #: at its first event's minute, not at whatever minute the watermark had
    #: reached when that event was ingested: otherwise a backlog (a restart, a
    #: lagging partition) would show its monitors hours of empty minutes that
    #: a live run never shows, and the alerts would differ. The class default
    #: covers states restored from snapshots taken before this attribute.
    observing = True
    #: The last minute that closed with data in it (None: none yet, or a
    #: state restored from a snapshot taken before dormancy existed).
    last_data_minute: int | None = None

    def __init__(
        self, use_case: str, policy: Policy, monitors: list[Monitor], config: EngineConfig
    ) -> None:
        self.use_case = use_case
        self.policy = policy
        self.open: dict[int, MinuteBucket] = {}
        self.sessions = SessionTracker(
            config.session_idle_minutes, config.max_sessions_per_use_case
        )
        self.content = ContentTracker(max_hashes=config.max_content_hashes_per_use_case)
        self.ctx = UseCaseContext(
            use_case, policy, CostWindow(1), CostWindow(5), CostWindow(60), PeriodTotals()
        )
        self.monitors = monitors
        self.trackers = {
            m.kind: IncidentTracker(use_case, m.kind, resolve_after=config.resolve_after_minutes)
            for m in monitors
        }
        self.last_active_minute = -1
        self.last_signals: MinuteSignals | None = None
        self.observing = False
        self.last_data_minute = None

    def due(self, minute: int, dormant_after: int) -> bool:
        """Whether closing ``minute`` shows it to the monitors (starts observing if so)."""
        if not self.observing:
            if not self.open or minute < min(self.open):
                return False  # before its first event: the use case did not exist yet
            self.observing = True
            return True
        # A day of silence is as long as silence gets.
        return not self.dormant(minute, dormant_after)

    def open_incidents(self) -> list[tuple[str, str, str]]:
        """(use case, kind, alert_id) of its open incidents, by kind."""
        return [
            (self.use_case, kind, tracker.open_alert_id)
            for kind, tracker in sorted(self.trackers.items())
            if tracker.open_alert_id
        ]

    def dormant(self, minute: int, after_minutes: int) -> bool:
        """Silent for more than ``after_minutes`` with nothing open at ``minute``."""
        last = self.last_data_minute
        return last is not None and minute - last > after_minutes and minute not in self.open

    def close(self, minute: int, shared: SharedContentIndex | None = None) -> MinuteSignals:
        """Close ``minute``: its signals, pushed into the windows.

        ``shared`` is the engine's cross-use-case content index (None: not consulted).
        """
        bucket = self.open.pop(minute, None)
        if bucket is None:
            bucket = MinuteBucket(minute)
        else:
            self.last_data_minute = minute
        counts, top_id, top, ended = self.sessions.close_minute(minute, bucket.session_calls)
        duplicates = (
            self.content.close_minute(minute, bucket.embed_hashes) if bucket.embed_hashes else 0
        )
        shared_embeddings, shared_with = (
            shared.close_minute(self.use_case, minute, bucket.embed_hashes)
            if shared is not None and bucket.embed_hashes
            else (0, ())
        )
        signals = MinuteSignals(
            use_case=self.use_case,
            minute=minute,
            llm_calls=bucket.llm_calls,
            tool_calls=bucket.tool_calls,
            retrievals=bucket.retrievals,
            embeddings=bucket.embeddings,
            input_tokens=bucket.input_tokens,
            llm_input_tokens=bucket.llm_input_tokens,
            llm_log_input=bucket.llm_log_input,
            output_tokens=bucket.output_tokens,
            cached_input_tokens=bucket.cached_input_tokens,
            cost=bucket.cost / NANO,
            embedding_cost=bucket.embedding_cost / NANO,
            unpriced=bucket.unpriced,
            fallback_calls=bucket.fallback_calls,
            rerouted_calls=bucket.rerouted_calls,
            models={
                name: ModelMinute(
                    s.calls, s.cost / NANO, s.input_tokens, s.output_tokens, s.small_calls
                )
                for name, s in sorted(bucket.models.items())
            },
            retrieval_requests=len(bucket.retrieval_requests),
            embedding_duplicates=duplicates,
            shared_embeddings=shared_embeddings,
            shared_with=shared_with,
            # The policy names the outcome that counts (a support desk also
            # publishes escalations, which are not what a ticket's spend buys).
            outcomes=(
                bucket.outcomes_by_name.get(self.policy.outcome, 0)
                if self.policy.outcome
                else bucket.outcomes
            ),
            active_sessions=len(counts),
            max_session_calls=top,
            max_session_id=top_id,
            session_call_counts=counts,
            ended_session_calls=ended,
        )
        ctx = self.ctx
        ctx.last_1m.push(signals)
        ctx.last_5m.push(signals)
        ctx.last_1h.push(signals)
        ctx.periods.push(signals)
        self.last_signals = signals
        return signals

    def detect(
        self, signals: MinuteSignals, planner: ThrottlePlanner, out: EngineOutput
    ) -> list[Alert]:
        """Show a closed minute to the monitors; alerts and commands go to ``out``.

        Returns the alerts added, in order.
        """
        at = signals.end
        policy = self.policy
        ceiling = policy.max_severity  # experiments: info, never paged or throttled
        added: list[Alert] = []
        for monitor in self.monitors:
            finding = monitor.observe(signals, self.ctx)
            if finding is not None and severity_rank(finding.severity) > severity_rank(ceiling):
                finding.severity = ceiling
            for alert in self.trackers[monitor.kind].observe(finding, at):
                alert.owner = policy.owner
                alert.tier = policy.tier
                if alert.status != "resolved" and planner.snoozed(alert.use_case, alert.kind, at):
                    continue  # an operator snoozed it: no alert, no throttle
                command = planner.plan(alert, policy, _baseline(self))
                if command is not None:
                    out.commands.append(command)
                out.alerts.append(alert)
                added.append(alert)
        return added


def evict_least_active(use_cases: dict[str, UseCaseState], n: int) -> int:
    """Drop the ``n`` least recently active use cases; returns how many went.

    The engine evicts a tenth at once: one sort per many new names, so a flood
    of names costs O(log n) each, not O(n).
    """
    victims = sorted(use_cases.values(), key=lambda s: (s.last_active_minute, s.use_case))[:n]
    for victim in victims:
        del use_cases[victim.use_case]
    return len(victims)


def evict_idle(use_cases: dict[str, UseCaseState], horizon: int) -> int:
    """Drop use cases last active before minute ``horizon`` with nothing open."""
    evicted = 0
    for name in sorted(use_cases):
        state = use_cases[name]
        if state.last_active_minute < horizon and not state.open:
            del use_cases[name]
            evicted += 1
    return evicted


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
        self._seen_ids = EventIdIndex(self.config.max_dedupe_ids)
        #: Who first embedded each content hash, across use cases (one owner:
        #: the engine; use cases only see their own minutes).
        self.shared_content = SharedContentIndex(max_hashes=self.config.max_shared_content_hashes)
        #: The action ladder, operator actions and command versions.
        self.planner = ThrottlePlanner()

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
        for bucket, run in runs.items():
            totals_of(owners[bucket]).add_usages(len(run), bucket.add_usages(run))
        # Late and duplicate events never move it: they are behind, or seen.
        self.clock.observe(self.STREAM, [e.ts for e in events], now=0.0)
        self.stats.evicted_dedupe_ids += self._seen_ids.evicted - evicted_before
        return out

    def _ingest(
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
        weights.update(self._open_minutes())
        start = bulk_start(weights, self.config.start_gap_minutes)
        assert start is not None
        if self.closed_until is None or start < self.closed_until:
            self.closed_until = start

    def _open_minutes(self) -> Iterable[int]:
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
        self._close_until(int((reached - self.config.allowed_lateness_s) // MINUTE), out)
        return out

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        _upgrade_pre_clock(self.__dict__, self.STREAM)
        if "shared_content" not in state:  # snapshots before the cross-use-case index
            self.shared_content = SharedContentIndex(
                max_hashes=self.config.max_shared_content_hashes
            )

    def flush(self) -> EngineOutput:
        """End of input: close every open minute."""
        out = EngineOutput()
        if self.closed_until is None:
            return out
        last = max(self._open_minutes(), default=self.closed_until - 1)
        self._close_until(last + 1, out)
        return out

    def _close_until(self, target: int, out: EngineOutput) -> None:
        """Close every minute before ``target``, jumping over minutes nobody needs."""
        assert self.closed_until is not None
        while self.closed_until < target:
            busy = self._close_minute(self.closed_until, out)
            self.closed_until += 1
            self.closing_started = True
            if not busy:
                self._skip_idle(target)

    def _skip_idle(self, target: int) -> None:
        """Every use case is dormant or not started: move to the next minute with data.

        Exact: until that minute no use case would be closed, so all the
        skipped minutes could do is evict idle use cases and forget event ids,
        which is done here once, as of the last skipped minute.
        """
        assert self.closed_until is not None
        to = min(min(self._open_minutes(), default=target), target)
        if to <= self.closed_until:
            return
        last = to - 1
        self._evict_idle(last)
        self._seen_ids.expire(last - self.config.dedupe_minutes)
        self.closed_until = to

    def _evict_idle(self, minute: int) -> None:
        horizon = minute - self.config.use_case_idle_minutes
        self.stats.evicted_use_cases += evict_idle(self.use_cases, horizon)

    def _close_minute(self, minute: int, out: EngineOutput) -> bool:
        """Close ``minute`` for every live use case; False if none needed it."""
        self._evict_idle(minute)
        dormant_after = self.config.dormant_after_minutes
        busy = False
        for name in sorted(self.use_cases):
            state = self.use_cases[name]
            if not state.due(minute, dormant_after):
                continue
            busy = True
            sessions_evicted = state.sessions.evicted
            signals = state.close(minute, self.shared_content)
            self.stats.evicted_sessions += state.sessions.evicted - sessions_evicted
            out.closed.append(signals)
            for alert in state.detect(signals, self.planner, out):
                if alert.status == "firing":
                    self.stats.alerts[alert.kind] = self.stats.alerts.get(alert.kind, 0) + 1
        self._seen_ids.expire(minute - self.config.dedupe_minutes)
        return busy

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
        policy = self.policies.for_use_case(action.use_case)
        return EngineOutput(commands=self.planner.apply_control(action, policy))

    # -- introspection ------------------------------------------------------

    def firing(self) -> list[tuple[str, str, str]]:
        """(use case, kind, alert_id) of every open incident, sorted."""
        return [
            found for _, state in sorted(self.use_cases.items()) for found in state.open_incidents()
        ]


def _upgrade_pre_clock(state: dict[str, Any], stream: str) -> None:
    """Engines pickled before the engine had its own clock kept ``max_ts``."""
    if "clock" not in state:
        clock = state["clock"] = EventClock(math.inf, EngineConfig().confirm_jump_s)
        newest = state.get("max_ts", -math.inf)
        if newest > -math.inf:
            clock.max_ts[stream] = newest
    state.pop("max_ts", None)
    state.pop("_jump_candidate", None)


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


def _baseline(state: UseCaseState) -> Baseline | None:
    """Calls and tokens per minute over the hour before the last 5 minutes.

    The last 5 minutes are left out: they are usually the anomaly itself.
    """
    hour, recent = state.ctx.last_1h, state.ctx.last_5m
    minutes = hour.minutes_filled - recent.minutes_filled
    if minutes <= 0:
        return None
    calls = hour.calls - recent.calls
    tokens = hour.input_tokens + hour.output_tokens - recent.input_tokens - recent.output_tokens
    return Baseline(calls / minutes, tokens / minutes)


__all__ = [
    "USAGE_KINDS",
    "Engine",
    "EngineConfig",
    "EngineOutput",
    "EngineStats",
    "OutcomeEvent",
    "UseCaseState",
    "severity_rank",
]
