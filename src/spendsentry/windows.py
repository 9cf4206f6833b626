"""Rolling windows by event time: per-minute buckets and the sums over horizons.

Events land in an open :class:`MinuteBucket` of their use case. When the
watermark passes a minute, the bucket is *closed*: merged with the use case's
long-lived state (sessions, embedded content) into an immutable
:class:`MinuteSignals`, and pushed into :class:`CostWindow` horizons (1 min,
5 min, 1 h). Everything downstream (detectors, budgets, the status page) reads
closed minutes only, which is what makes the result independent of arrival
order within the allowed lateness: replay and Kafka give the same alerts.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from spendsentry.drivers import TAG_FIELDS, SpendKey
from spendsentry.events import OutcomeEvent, UsageEvent

MINUTE = 60.0


#: Costs are summed as integer nano-dollars: integer sums do not depend on the
#: order events arrive in, float sums do (in the last bits), and the engine
#: promises the same alerts for any arrival order within the lateness.
NANO = 1_000_000_000
#: Bounds on what an event's extra fields add to the spend by tag (an
#: identifier field is at most 256 characters, a tag value no more).
MAX_TAG_CHARS = 256
MAX_TAGS_PER_EVENT = 8


class ModelStats:
    """Calls, cost (nano-USD) and tokens of one model within one minute."""

    __slots__ = ("calls", "cost", "input_tokens", "output_tokens", "small_calls")

    def __init__(self) -> None:
        self.calls = 0
        self.cost = 0
        self.input_tokens = 0
        self.output_tokens = 0
        #: Routine small requests (the model-oversizing signal).
        self.small_calls = 0

    def __repr__(self) -> str:
        return f"ModelStats(calls={self.calls}, cost={self.cost / NANO:.4f})"


#: A call at or under both sizes is "routine": a small model would do.
SMALL_INPUT_TOKENS = 500
SMALL_OUTPUT_TOKENS = 150


#: Distinct callers (team, agent, service) a bucket counts; further ones count
#: under :data:`OTHER_CALLER`. Who calls a use case is evidence for a person to
#: read (``unowned_spend``), not a statistic: a few names are enough, and event
#: fields must not grow memory without bound.
MAX_CALLERS = 8
#: Where callers beyond :data:`MAX_CALLERS` in one minute are counted.
OTHER_CALLER: tuple[str | None, str | None, str | None] = ("(other)", None, None)

#: Memo of :func:`_log_micro` (prompt sizes repeat; the hot path reads it directly).
_LOG_MICRO: dict[int, int] = {}


def _log_micro(tokens: int, _cache: dict[int, int] = _LOG_MICRO) -> int:
    """ln(1 + tokens) in integer millionths: a sum of these is order-independent.

    The geometric mean of prompt sizes shifts by the inflation factor whatever
    the heavy tail of the size distribution does, unlike the arithmetic mean.
    """
    v = _cache.get(tokens)
    if v is None:
        v = round(math.log1p(tokens) * 1e6)
        if len(_cache) < 100_000:
            _cache[tokens] = v
    return v


class RunTotals(NamedTuple):
    """What a run of usage events adds to its use case's running totals."""

    calls_by_kind: dict[str, int]
    input_tokens: int
    output_tokens: int
    #: Sum of the reported or priced costs, in nano-USD.
    cost_nano: int


def _calls_by_kind(
    llm_calls: int, tool_calls: int, retrievals: int, embeddings: int, other_kinds: dict[str, int]
) -> dict[str, int]:
    """Calls per kind of a run; ``other_kinds`` (hand-built events) counted within embeddings.

    >>> _calls_by_kind(2, 0, 1, 3, {"custom": 1})
    {'llm_call': 2, 'retrieval': 1, 'embedding': 2, 'custom': 1}
    """
    by_kind = {
        kind: n
        for kind, n in (
            ("llm_call", llm_calls),
            ("tool_call", tool_calls),
            ("retrieval", retrievals),
            ("embedding", embeddings - sum(other_kinds.values())),
        )
        if n
    }
    by_kind.update(other_kinds)
    return by_kind


class MinuteBucket:
    """Everything one use case did in one event-time minute (still open)."""

    __slots__ = (
        "cached_input_tokens",
        "callers",
        "cost",
        "embed_hashes",
        "embedding_cost",
        "embeddings",
        "fallback_calls",
        "input_tokens",
        "llm_calls",
        "llm_input_tokens",
        "llm_log_input",
        "minute",
        "models",
        "outcomes",
        "outcomes_by_name",
        "output_tokens",
        "reasoning_tokens",
        "rerouted_calls",
        "retrieval_requests",
        "retrievals",
        "session_calls",
        "spend",
        "tag_spend",
        "tool_calls",
        "unpriced",
    )

    def __init__(self, minute: int) -> None:
        self.minute = minute
        self.llm_calls = 0
        self.tool_calls = 0
        self.retrievals = 0
        self.embeddings = 0
        self.input_tokens = 0
        self.llm_input_tokens = 0
        self.llm_log_input = 0
        self.output_tokens = 0
        self.cached_input_tokens = 0
        self.reasoning_tokens = 0
        self.cost = 0  # nano-USD
        self.embedding_cost = 0  # nano-USD, embeddings only
        self.unpriced = 0
        self.fallback_calls = 0
        self.rerouted_calls = 0
        self.models: dict[str, ModelStats] = {}
        self.retrieval_requests: set[str] = set()
        self.session_calls: dict[str, int] = {}
        self.embed_hashes: dict[str, int] = {}
        self.outcomes = 0
        self.outcomes_by_name: dict[str, int] = {}
        #: Cost (nano-USD) by (model, agent, tool, session, team, environment):
        #: what :class:`spendsentry.drivers.SpendDrivers` splits by dimension.
        self.spend: dict[SpendKey, int] = {}
        #: Cost (nano-USD) by (extra field, value) for the fields in TAG_FIELDS.
        self.tag_spend: dict[tuple[str, str], int] = {}
        #: Calls per (team, agent_id, service): who calls the use case.
        self.callers: dict[tuple[str | None, str | None, str | None], int] = {}

    def add_usage(self, e: UsageEvent) -> None:
        """Add one usage event (see :meth:`add_usages`)."""
        self.add_usages((e,))

    def add_usages(self, events: Iterable[UsageEvent]) -> RunTotals:  # noqa: C901 - hot loop
        """Add a run of usage events of this bucket's use case and minute.

        The engine's hot path: sums accumulate in locals and land on the
        bucket once per run. All sums are integers (costs in nano-USD), so
        how a batch is split into runs cannot change any result.

        >>> b = MinuteBucket(29893500)
        >>> b.add_usages([UsageEvent("e1", 0.0, "uc", input_tokens=10, cost_usd=0.5),
        ...               UsageEvent("e2", 1.0, "uc", kind="tool_call")])
        RunTotals(calls_by_kind={'llm_call': 1, 'tool_call': 1}, input_tokens=10, \
output_tokens=0, cost_nano=500000000)
        >>> b.llm_calls, b.tool_calls, b.unpriced, b.models["unknown"].calls
        (1, 1, 1, 1)
        """
        # Complexity 17 on purpose: one loop over the run with every kind's
        # branch inline. A helper call per event costs measurable throughput
        # (~100k events/s; benchmarks/bench_replay.py); what is once per run
        # (the calls by kind) is a function.
        cost_sum = unpriced = input_sum = output_sum = cached_sum = reasoning_sum = 0
        llm_calls = tool_calls = retrievals = embeddings = 0
        llm_input = llm_log = fallbacks = rerouted = embed_cost = 0
        other_kinds: dict[str, int] = {}
        models = self.models
        sessions = self.session_calls
        spend = self.spend
        callers = self.callers
        log_micro = _LOG_MICRO.get
        for e in events:
            extra = e.extra
            caller = (e.team, e.agent_id, extra.get("service") if extra else None)
            seen = callers.get(caller)
            if seen is not None:
                callers[caller] = seen + 1
            elif len(callers) < MAX_CALLERS:
                callers[caller] = 1
            else:
                callers[OTHER_CALLER] = callers.get(OTHER_CALLER, 0) + 1
            usd = e.cost_usd
            if usd is None:
                cost = 0  # adds nothing to its model's cost
                unpriced += 1
            else:
                cost = round(usd * NANO)
                cost_sum += cost
                key = (e.model, e.agent_id, e.tool_name, e.session_id, e.team, e.environment)
                spend[key] = spend.get(key, 0) + cost
                if e.extra:
                    self._add_tags(e.extra, cost)
            input_tokens = e.input_tokens
            output_tokens = e.output_tokens
            input_sum += input_tokens
            output_sum += output_tokens
            cached_sum += e.cached_input_tokens
            reasoning_sum += e.reasoning_tokens
            kind = e.kind
            if kind == "llm_call":
                llm_calls += 1
                llm_input += input_tokens
                log_input = log_micro(input_tokens)
                llm_log += _log_micro(input_tokens) if log_input is None else log_input
                fallback = e.fallback
                if fallback:
                    fallbacks += 1
                model = e.model
                requested = e.requested_model
                if requested and requested != model:
                    rerouted += 1
                    if not fallback:
                        fallbacks += 1
                name = model or "unknown"
                stats = models.get(name)
                if stats is None:
                    stats = models[name] = ModelStats()
                stats.calls += 1
                stats.cost += cost
                stats.input_tokens += input_tokens
                stats.output_tokens += output_tokens
                if input_tokens <= SMALL_INPUT_TOKENS and output_tokens <= SMALL_OUTPUT_TOKENS:
                    stats.small_calls += 1
            elif kind == "tool_call":
                tool_calls += 1
            elif kind == "retrieval":
                retrievals += 1
                self.retrieval_requests.add(e.request_id or e.session_id or e.event_id)
                continue  # retrievals do not count as session calls
            else:
                embeddings += 1
                embed_cost += cost
                if kind != "embedding":
                    # Only hand-built events get here (the decoder checks kinds);
                    # they count as embeddings, as they always have.
                    other_kinds[kind] = other_kinds.get(kind, 0) + 1
                content = e.content_hash
                if content:
                    self.embed_hashes[content] = self.embed_hashes.get(content, 0) + 1
                continue  # embeddings neither
            session = e.session_id
            if session:
                sessions[session] = sessions.get(session, 0) + 1
        self.cost += cost_sum
        self.embedding_cost += embed_cost
        self.unpriced += unpriced
        self.input_tokens += input_sum
        self.output_tokens += output_sum
        self.cached_input_tokens += cached_sum
        self.reasoning_tokens += reasoning_sum
        self.llm_calls += llm_calls
        self.llm_input_tokens += llm_input
        self.llm_log_input += llm_log
        self.fallback_calls += fallbacks
        self.rerouted_calls += rerouted
        self.tool_calls += tool_calls
        self.retrievals += retrievals
        self.embeddings += embeddings
        by_kind = _calls_by_kind(llm_calls, tool_calls, retrievals, embeddings, other_kinds)
        return RunTotals(by_kind, input_sum, output_sum, cost_sum)

    def _add_tags(self, extra: dict[str, Any], cost: int) -> None:
        """Add ``cost`` to the customer / tenant / ... and tag values an event's extra names."""
        tags = self.tag_spend
        for field_name in TAG_FIELDS:
            value = extra.get(field_name)
            if isinstance(value, str) and 0 < len(value) <= MAX_TAG_CHARS:
                tags[field_name, value] = tags.get((field_name, value), 0) + cost
        labels = extra.get("tags")
        if isinstance(labels, dict):
            for name, value in list(labels.items())[:MAX_TAGS_PER_EVENT]:
                if isinstance(value, str) and 0 < len(value) <= MAX_TAG_CHARS:
                    key = (f"tag:{name}"[:MAX_TAG_CHARS], value)
                    tags[key] = tags.get(key, 0) + cost

    def add_outcome(self, e: OutcomeEvent) -> None:
        if e.success is False:
            return
        self.outcomes += 1
        self.outcomes_by_name[e.outcome] = self.outcomes_by_name.get(e.outcome, 0) + 1

    @property
    def calls(self) -> int:
        return self.llm_calls + self.tool_calls + self.retrievals + self.embeddings


@dataclass(frozen=True, slots=True)
class ModelMinute:
    """One model's share of a closed minute."""

    calls: int
    cost: float
    input_tokens: int
    output_tokens: int
    small_calls: int


@dataclass(frozen=True, slots=True)
class MinuteSignals:
    """A closed minute of one use case: what detectors, budgets and views read."""

    use_case: str
    minute: int
    llm_calls: int = 0
    tool_calls: int = 0
    retrievals: int = 0
    embeddings: int = 0
    input_tokens: int = 0
    llm_input_tokens: int = 0
    #: Sum over LLM calls of ln(1 + input tokens), in millionths (see _log_micro).
    llm_log_input: int = 0
    output_tokens: int = 0
    #: Input tokens the provider served from its prompt cache.
    cached_input_tokens: int = 0
    cost: float = 0.0
    #: What the minute's embeddings cost (USD).
    embedding_cost: float = 0.0
    unpriced: int = 0
    fallback_calls: int = 0
    rerouted_calls: int = 0
    models: dict[str, ModelMinute] = field(default_factory=dict)
    retrieval_requests: int = 0
    embedding_duplicates: int = 0
    #: Embeddings of content another use case embedded first within a day
    #: (:class:`spendsentry.shared_content.SharedContentIndex`), and those use cases.
    shared_embeddings: int = 0
    shared_with: tuple[str, ...] = ()
    outcomes: int = 0
    #: Sessions that made calls this minute, and the largest one so far.
    active_sessions: int = 0
    max_session_calls: int = 0
    max_session_id: str | None = None
    #: Cumulative call counts of the sessions that made calls this minute.
    session_call_counts: tuple[int, ...] = ()
    #: Sessions that went idle (ended) this minute, with their total calls.
    ended_session_calls: tuple[int, ...] = ()
    #: Who called: (team, agent_id, service, calls), sorted (see MAX_CALLERS).
    callers: tuple[tuple[str | None, str | None, str | None, int], ...] = ()

    @property
    def start(self) -> float:
        """Event time of the minute's start, epoch seconds."""
        return self.minute * MINUTE

    @property
    def end(self) -> float:
        return (self.minute + 1) * MINUTE

    @property
    def calls(self) -> int:
        return self.llm_calls + self.tool_calls + self.retrievals + self.embeddings

    @property
    def input_tokens_per_llm_call(self) -> float | None:
        return self.llm_input_tokens / self.llm_calls if self.llm_calls else None


@dataclass(slots=True)
class SessionState:
    calls: int
    last_minute: int
    first_minute: int


class SessionTracker:
    """Per-session call counts with idle expiry and a hard cap on live sessions.

    Memory stays bounded under a flood of session ids: beyond ``max_sessions``
    the least recently active session is evicted (and counted).
    """

    def __init__(self, idle_minutes: int = 30, max_sessions: int = 50_000) -> None:
        self.idle_minutes = idle_minutes
        self.max_sessions = max_sessions
        # Recency order: touched sessions move to the end. An OrderedDict, not
        # a dict: next(iter(d)) on a dict whose front was deleted rescans the
        # deleted slots, which made expiry quadratic under churn.
        self._sessions: OrderedDict[str, SessionState] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def close_minute(
        self, minute: int, calls: dict[str, int]
    ) -> tuple[tuple[int, ...], str | None, int, tuple[int, ...]]:
        """Merge one minute's per-session calls; expire idle sessions.

        Returns the cumulative counts of sessions active this minute, the
        largest one's id and count, and the totals of sessions that ended.
        """
        sessions = self._sessions
        counts = []
        top_id, top = None, 0
        for sid in sorted(calls):  # sorted: ties resolve the same way everywhere
            state = sessions.get(sid)
            if state is None:
                state = sessions[sid] = SessionState(0, minute, minute)
            else:
                sessions.move_to_end(sid)
            state.calls += calls[sid]
            state.last_minute = minute
            counts.append(state.calls)
            if state.calls > top:
                top_id, top = sid, state.calls
        ended = []
        horizon = minute - self.idle_minutes
        while sessions:
            sid, state = next(iter(sessions.items()))
            if state.last_minute > horizon and len(sessions) <= self.max_sessions:
                break
            sessions.popitem(last=False)
            if state.last_minute > horizon:
                self.evicted += 1
            else:
                ended.append(state.calls)
        return tuple(counts), top_id, top, tuple(ended)


class ContentTracker:
    """Which content hashes were embedded recently (embedding duplication)."""

    def __init__(self, ttl_minutes: int = 24 * 60, max_hashes: int = 200_000) -> None:
        self.ttl_minutes = ttl_minutes
        self.max_hashes = max_hashes
        self._seen: OrderedDict[str, int] = OrderedDict()  # recency order, see SessionTracker
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._seen)

    def close_minute(self, minute: int, hashes: dict[str, int]) -> int:
        """Merge one minute of embedded hashes; return how many were repeats."""
        seen = self._seen
        duplicates = 0
        for h in sorted(hashes):
            n = hashes[h]
            if h in seen:
                duplicates += n
                seen.move_to_end(h)
            else:
                duplicates += n - 1
            seen[h] = minute
        horizon = minute - self.ttl_minutes
        while seen:
            h, last = next(iter(seen.items()))
            if last > horizon and len(seen) <= self.max_hashes:
                break
            seen.popitem(last=False)
            if last > horizon:
                self.evicted += 1
        return duplicates


class CostWindow:
    """Sums of cost, tokens, calls and outcomes over the last ``minutes`` closed minutes.

    >>> w = CostWindow(5)
    >>> for m in range(10):
    ...     w.push(MinuteSignals("u", m, llm_calls=1, cost=1.0))
    >>> w.cost, w.calls, w.minutes_filled
    (5.0, 5, 5)
    """

    __slots__ = (
        "_ring",
        "calls",
        "cost",
        "input_tokens",
        "minutes",
        "outcomes",
        "output_tokens",
    )

    def __init__(self, minutes: int) -> None:
        self.minutes = minutes
        self._ring: deque[tuple[float, int, int, int, int]] = deque()
        self.cost = 0.0
        self.input_tokens = 0
        self.output_tokens = 0
        self.calls = 0
        self.outcomes = 0

    def push(self, s: MinuteSignals) -> None:
        item = (s.cost, s.input_tokens, s.output_tokens, s.calls, s.outcomes)
        self._ring.append(item)
        self._add(item, 1)
        if len(self._ring) > self.minutes:
            self._add(self._ring.popleft(), -1)

    def _add(self, item: tuple[float, int, int, int, int], sign: int) -> None:
        self.cost += sign * item[0]
        self.input_tokens += sign * item[1]
        self.output_tokens += sign * item[2]
        self.calls += sign * item[3]
        self.outcomes += sign * item[4]
        if not self._ring:
            self.cost = 0.0  # no float residue once empty

    @property
    def minutes_filled(self) -> int:
        return len(self._ring)

    @property
    def cost_per_outcome(self) -> float | None:
        return self.cost / self.outcomes if self.outcomes else None
