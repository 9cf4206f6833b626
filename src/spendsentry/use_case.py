"""``UseCaseState``: what the engine keeps for one use case; it closes and judges its minutes.

Pickled inside worker snapshots under its old home, ``spendsentry.engine``
(which re-exports it), so old snapshots still load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spendsentry.actions import Baseline, ThrottlePlanner
from spendsentry.alerts import Alert, IncidentTracker, severity_rank
from spendsentry.detectors import Monitor, PeriodTotals, UseCaseContext
from spendsentry.windows import (
    NANO,
    ContentTracker,
    CostWindow,
    MinuteBucket,
    MinuteSignals,
    ModelMinute,
    SessionTracker,
)

if TYPE_CHECKING:
    from spendsentry.engine import EngineConfig, EngineOutput
    from spendsentry.policy import Policy
    from spendsentry.shared_content import SharedContentIndex


class UseCaseState:
    """Everything the engine keeps for one use case."""

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
        #: Whether its monitors see every closed minute yet. A new use case starts
        #: at its first event's minute, not at whatever minute the watermark had
        #: reached when that event was ingested: otherwise a backlog (a restart, a
        #: lagging partition) would show its monitors hours of empty minutes that
        #: a live run never shows, and the alerts would differ.
        self.observing = False
        #: The last minute that closed with data in it (None: none yet).
        self.last_data_minute: int | None = None

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
            callers=_callers(bucket),
        )
        ctx = self.ctx
        ctx.last_1m.push(signals)
        ctx.last_5m.push(signals)
        ctx.last_1h.push(signals)
        ctx.periods.push(signals)
        ctx.daily.learn_one(signals.cost, minute)
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


def _callers(bucket: MinuteBucket) -> tuple[tuple[str | None, str | None, str | None, int], ...]:
    """The bucket's callers as sorted rows (names that are absent sort first)."""
    rows = [(*caller, n) for caller, n in bucket.callers.items()]
    return tuple(sorted(rows, key=lambda r: tuple(v or "" for v in r[:3])))


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


__all__ = ["UseCaseState", "evict_least_active"]
