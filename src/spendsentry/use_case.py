"""``UseCaseState``: what the engine keeps for one use case; it closes and judges its minutes.

Pickled inside worker snapshots under its old home, ``spendsentry.engine``
(which re-exports it), so old snapshots still load.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from spendsentry.actions import Baseline, ThrottlePlanner
from spendsentry.alerts import Alert, IncidentTracker, severity_rank
from spendsentry.budget_periods import PERIOD_KINDS, PeriodTracker
from spendsentry.detectors import Monitor, PeriodTotals, UseCaseContext
from spendsentry.drivers import SpendDrivers, headline
from spendsentry.feedback import Feedback, tuned_policy
from spendsentry.feedback import sensitivity as tuned_sensitivity
from spendsentry.incidents import IncidentGroup
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
    from spendsentry.actions import ControlAction
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
            m.kind: (PeriodTracker if m.kind in PERIOD_KINDS else IncidentTracker)(
                use_case, m.kind, resolve_after=config.resolve_after_minutes
            )
            for m in monitors
        }
        #: Its alerts grouped into incidents, each naming its root cause.
        self.incidents = IncidentGroup(
            use_case, {m.kind: getattr(m, "explains", ()) for m in monitors}
        )
        #: Its spend by dimension value, recent and learned (what drives an alert).
        self.drivers = SpendDrivers(config.max_driver_values)
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
        #: What operators said about its alerts (false alarms tune its kinds down).
        self.feedback = Feedback()

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
        # Learned spend by dimension pauses while an incident is open.
        self.drivers.close_minute(bucket.spend, bucket.tag_spend, not self.incidents.open)
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
                added.append(alert)
        self._publish(added, planner, out)
        return added

    def _publish(self, added: list[Alert], planner: ThrottlePlanner, out: EngineOutput) -> None:
        """Group the minute's alerts into the incident, explain them, plan commands."""
        policy = self.policy
        # The minute's alerts join their incident together, so kinds that fire in
        # one minute agree on the cause before any command is planned. A budget
        # threshold is its period's own incident, and throttles nothing
        # (spendsentry.budget_periods).
        self.incidents.assign([a for a in added if a.kind not in PERIOD_KINDS])
        for alert in added:
            if alert.kind in PERIOD_KINDS:
                out.alerts.append(alert)
                continue
            if alert.status != "resolved":
                _explain(alert, self)
            command = planner.plan(alert, policy, _baseline(self))
            if command is not None:
                out.commands.append(command)
            out.alerts.append(alert)

    # -- operator feedback (spendsentry.feedback) ------------------------------

    def apply_feedback(
        self,
        action: ControlAction,
        at: float,
        rebuild: Callable[[Policy], list[Monitor]],
        planner: ThrottlePlanner,
        out: EngineOutput,
    ) -> None:
        """Apply one feedback action at event time ``at`` (a minute's start).

        ``rebuild(policy)`` builds the use case's monitors for a tuned policy
        (the engine's monitor factory). An expected change rebases the kind and
        resolves its open incident (the resolution goes to ``out`` like any
        other, so the incident closes and a throttle it caused is released); a
        false alarm rebuilds the kind at its lowered sensitivity, keeping what
        it learned.
        """
        kind = action.kind
        assert kind is not None  # ControlAction.parse checks it
        self.feedback.count(action.action, kind)
        index = next((i for i, m in enumerate(self.monitors) if m.kind == kind), None)
        if action.action == "false_alarm":
            if index is not None:
                self._retune(index, rebuild)
            return
        tracker = self.trackers.get(kind)
        if action.alert_id is not None and (
            tracker is None or tracker.open_alert_id != action.alert_id
        ):
            # A click on an older alert's message: what the level was then is
            # not what it is now, so only the verdict is counted.
            return
        if index is not None:
            accept = getattr(self.monitors[index], "accept_level", None)
            if callable(accept):
                accept(self.ctx)
        resolved = None
        if tracker is not None:
            resolved = tracker.resolve(
                at,
                f"Resolved: {self.use_case} {kind.replace('_', ' ')} is an expected change "
                f"(said {action.user}); its new level is the baseline now.",
                resolution="expected_change",
                resolved_by=action.user,
            )
        if resolved is not None:
            resolved.owner = self.policy.owner
            resolved.tier = self.policy.tier
            self._publish([resolved], planner, out)

    def sensitivity(self, kind: str) -> float:
        """The kind's sensitivity for this use case, after operators' false alarms."""
        setting = self.policy.detector(kind)
        return tuned_sensitivity(setting, self.feedback.false_alarms.get(kind, 0))

    def _retune(self, index: int, rebuild: Callable[[Policy], list[Monitor]]) -> None:
        """Rebuild monitor ``index`` from the tuned policy; it keeps what it learned."""
        # Imported here: the snapshot package imports the engine's modules.
        from spendsentry.snapshot.detectors import dump_monitor, load_monitor
        from spendsentry.snapshot.fields import Fields

        old = self.monitors[index]
        fresh = next(
            (m for m in rebuild(tuned_policy(self.policy, self.feedback)) if m.kind == old.kind),
            None,
        )
        if fresh is None:
            return
        load_monitor(fresh, Fields(dump_monitor(old), "$"))
        self.monitors[index] = fresh


def evict_least_active(use_cases: dict[str, UseCaseState], n: int) -> int:
    """Drop the ``n`` least recently active use cases; returns how many went.

    The engine evicts a tenth at once: one sort per many new names, so a flood
    of names costs O(log n) each, not O(n).
    """
    victims = sorted(use_cases.values(), key=lambda s: (s.last_active_minute, s.use_case))[:n]
    for victim in victims:
        del use_cases[victim.use_case]
    return len(victims)


def _explain(alert: Alert, state: UseCaseState) -> None:
    """Say what drives the alert: the dimension values behind the excess spend, and for
    cost per outcome whether outcomes fell or each call costs more."""
    alert.drivers = state.drivers.drivers()
    said = [headline(alert.drivers)]
    if alert.kind == "cost_per_outcome":
        said.insert(0, _outcome_driver(alert, state))
    for sentence in said:
        if sentence:
            alert.summary = f"{alert.summary} {sentence}."


def _outcome_driver(alert: Alert, state: UseCaseState) -> str | None:
    """Outcomes per minute and cost per call, the last 5 minutes against the hour before."""
    hour, recent = state.ctx.last_1h, state.ctx.last_5m
    minutes = hour.minutes_filled - recent.minutes_filled
    if minutes <= 0 or recent.minutes_filled <= 0:
        return None
    calls, cost = hour.calls - recent.calls, hour.cost - recent.cost
    outcomes = hour.outcomes - recent.outcomes
    if calls <= 0 or recent.calls <= 0 or outcomes <= 0:
        return None
    per_call, per_call_now = cost / calls, recent.cost / recent.calls
    rate, rate_now = outcomes / minutes, recent.outcomes / recent.minutes_filled
    calls_per_min, calls_now = calls / minutes, recent.calls / recent.minutes_filled
    # Outcomes per call fell (the calls go on, the results do not) against
    # each call costing more: the larger factor is what moved.
    yield_drop = (rate / calls_per_min) / max(rate_now / calls_now, 1e-9)
    call_rise = per_call_now / per_call if per_call > 0 else 1.0
    # A copy: the evidence's details are the finding's own (kept in the tracker).
    details = alert.evidence["details"] = dict(alert.evidence.get("details") or {})
    details["outcomes_per_min"] = [round(rate, 3), round(rate_now, 3)]
    details["cost_per_call_usd"] = [round(per_call, 6), round(per_call_now, 6)]
    if yield_drop >= call_rise:
        details["driver"] = "outcomes_fell"
        return (
            f"Outcomes fell: {rate_now:.1f} a minute against {rate:.1f} usual "
            f"while calls went on ({calls_now:.0f} a minute)"
        )
    details["driver"] = "cost_per_call_rose"
    return f"Each call costs more: ${per_call_now:.4f} against ${per_call:.4f} usual"


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
