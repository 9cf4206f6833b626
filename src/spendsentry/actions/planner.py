"""The action ladder: from alerts to throttle commands, with hysteresis.

:class:`ThrottlePlanner` is pure and deterministic (event time only, no I/O):
the engine owns one (snapshotted by :mod:`spendsentry.snapshot.incidents`),
and replay gets the same commands as the worker. Rules, per scope (the alert's use case,
or the session, agent or model that drives its excess: :mod:`spendsentry.actions.cause`):

* Nothing when the use case is an experiment, its ``auto_throttle`` is "off",
  its ladder step for the alert's severity is "none" or missing, or the alert's
  (use case, kind) is snoozed.
* ``dry_run`` marks the command when ``auto_throttle`` is "dry_run".
* ``issued_at`` is the alert's ``detected_at``; ``expires_at`` is ``issued_at``
  plus the policy's ``max_duration_s`` (at most :data:`MAX_COMMAND_S`).
* ``version`` grows by one per command on a scope.
* Cooldown: no new command on a scope within ``cooldown_s`` of its last change
  (a release is always allowed). A command identical to the one in force is
  not repeated, and an alert of lower severity than the one that set the
  command in force does not replace it.
* An escalation never loosens (:func:`~spendsentry.actions.strictness.tightened`):
  a step that would lift a restriction of the enforced command in force (a
  ``route_model`` in place of a rate limit) leaves that command in force
  (counted in ``kept_stricter``); two rate limits or two caps merge to the lower.
* The incident that set the command in force releases it when it resolves.
* A ``limit_rate`` step without numbers limits to the scope's baseline rate.
* One decision per incident, taken from its root cause: an alert that is a
  symptom of another kind's incident (``role == "symptom"``) issues nothing of
  its own; its ``action`` points at the command in force, if any.

>>> from spendsentry.alerts import Alert
>>> from spendsentry.policy import LadderStep, Policy
>>> policy = Policy("support_chat", auto_throttle="on",
...                 ladder=(LadderStep("critical", "block"),))
>>> alert = Alert("ab" * 8, "cost_spike", "support_chat", "critical", "firing",
...               1793610000.0, 1793609700.0, "cost x9", {}, 4.0)
>>> planner = ThrottlePlanner()
>>> cmd = planner.plan(alert, policy)
>>> cmd.action, cmd.version, alert.action["type"], alert.action["command_id"] == cmd.command_id
('block', 1, 'throttle', True)
>>> alert.status, alert.detected_at = "resolved", 1793610600.0
>>> planner.plan(alert, policy).action
'release'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spendsentry.actions.cause import cause_scope, cause_usual_share
from spendsentry.actions.commands import CommandReason, ThrottleCommand
from spendsentry.actions.scopes import (
    MAX_COMMAND_S,
    MAX_CONTROL_VERSION_STEP,
    ScopeBook,
    ScopeState,
    plausible,
)
from spendsentry.actions.strictness import tightened
from spendsentry.messages.control import ControlAction, ControlError
from spendsentry.messages.scope import Scope
from spendsentry.messages.severity import SEVERITY_RANK

if TYPE_CHECKING:
    from spendsentry.alerts import Alert
    from spendsentry.policy import Policy

__all__ = [
    "MAX_COMMAND_S",
    "MAX_CONTROL_VERSION_STEP",
    "Baseline",
    "ThrottlePlanner",
    "action_of",
]

#: The per-scope state moved to :mod:`spendsentry.actions.scopes`; pickled
#: snapshots (version 2) name it here.
_ScopeState = ScopeState
_SUMMARY_CHARS = 300


@dataclass(frozen=True, slots=True)
class Baseline:
    """A scope's normal rate, per minute (what a numberless ``limit_rate`` means).

    >>> Baseline(41.2, 90_000.4).limits()
    {'requests_per_minute': 42, 'tokens_per_minute': 90001}
    >>> Baseline(0.0, 0.0).limits()
    {}
    """

    calls_per_minute: float
    tokens_per_minute: float

    def scaled(self, share: float) -> Baseline:
        """The normal rate of a part of the scope that usually carries ``share`` of it.

        At least one usual call a minute (and its tokens): a part that was
        not there before (a runaway session) is slowed to a crawl, not left
        without a limit.

        >>> Baseline(40.0, 80_000.0).scaled(0.25).limits()
        {'requests_per_minute': 10, 'tokens_per_minute': 20000}
        >>> Baseline(40.0, 80_000.0).scaled(0.0).limits()
        {'requests_per_minute': 1, 'tokens_per_minute': 2000}
        """
        if self.calls_per_minute <= 0:
            return self
        share = min(1.0, max(share, 1.0 / self.calls_per_minute))
        return Baseline(self.calls_per_minute * share, self.tokens_per_minute * share)

    def limits(self) -> dict[str, int]:
        out: dict[str, int] = {}
        if self.calls_per_minute > 0:
            out["requests_per_minute"] = max(1, math.ceil(self.calls_per_minute))
            if self.tokens_per_minute > 0:
                out["tokens_per_minute"] = max(1, math.ceil(self.tokens_per_minute))
        return out


def scale_limits(params: dict[str, Any], share: float, calls_per_minute: float) -> dict[str, Any]:
    """A rate limit's numbers for a part of the scope that usually has ``share`` of it.

    Never under one usual call a minute (``calls_per_minute`` is the whole
    scope's usual rate, 0 when unknown) and never under 1.

    >>> scale_limits({"requests_per_minute": 120, "tokens_per_minute": 240_000}, 0.1, 40.0)
    {'requests_per_minute': 12, 'tokens_per_minute': 24000}
    >>> scale_limits({"requests_per_minute": 120}, 0.0, 40.0)
    {'requests_per_minute': 3}
    """
    floor = 1.0 / calls_per_minute if calls_per_minute > 0 else 0.0
    share = min(1.0, max(share, floor))
    return {
        name: max(1, math.ceil(value * share)) if name in _RATE_LIMITS else value
        for name, value in params.items()
    }


#: The parameters of ``limit_rate`` that are rates (scaled for a narrowed scope).
_RATE_LIMITS = frozenset({"requests_per_minute", "tokens_per_minute"})


def action_of(cmd: ThrottleCommand | None) -> dict[str, Any]:
    """The ``action`` object of an alert that issued (or points at) ``cmd``."""
    if cmd is None:
        return {"type": "none"}
    return {
        "type": "dry_run" if cmd.dry_run else "throttle",
        "command_id": cmd.command_id,
        "throttle_action": cmd.action,
    }


class ThrottlePlanner:
    """Turns alerts and operator actions into throttle commands (see the module doc).

    What it remembers per scope (versions, the command in force, who set it)
    is its :class:`~spendsentry.actions.scopes.ScopeBook`, ``scopes``, which
    also issues the commands: versions stay within 1..``MAX_VERSION``, and at
    the bound a scope gets no further command (counted in
    :attr:`ignored_versions`) rather than one that cannot be serialized.

    Parameters
    ----------
    max_scopes, max_snoozes, max_acks
        Memory bounds; beyond them the oldest inactive entries are forgotten.
    """

    def __init__(
        self, *, max_scopes: int = 50_000, max_snoozes: int = 10_000, max_acks: int = 10_000
    ) -> None:
        self.max_snoozes = max_snoozes
        self.max_acks = max_acks
        #: Per scope: version, command in force, its owner (snapshotted).
        self.scopes = ScopeBook(max_scopes)
        #: (use_case, kind or "*") -> snoozed until (epoch seconds).
        self.snoozes: dict[tuple[str, str], float] = {}
        #: alert_id -> who acknowledged it and when.
        self.acks: dict[str, dict[str, Any]] = {}
        #: Escalations not issued because they would have loosened the
        #: enforced command in force (not in snapshots: a count since start).
        self.kept_stricter = 0

    # -- alerts ---------------------------------------------------------------

    def plan(
        self, alert: Alert, policy: Policy, baseline: Baseline | None = None
    ) -> ThrottleCommand | None:
        """The command ``alert`` causes, if any; sets ``alert.action`` either way."""
        alert.action = {"type": "none"}
        at = alert.detected_at
        scope = self._scope_for(alert)
        state = self.scopes.get(scope.key)
        if alert.status == "resolved":
            return self._release(alert, scope, state, policy)
        if policy.tier == "experiment" or policy.auto_throttle == "off":
            return None
        if alert.role == "symptom":
            alert.action = action_of(self.scopes.in_force_on(alert.use_case, at))
            return None
        if self.snoozed(alert.use_case, alert.kind, at):
            return None
        step = policy.step_for(alert.severity)
        if step is None or not step.throttles:
            return None
        params = step.params()
        if step.action == "limit_rate":
            params = self._limits(alert, scope, params, baseline)
            if not params:
                return None  # no traffic learned yet: no defensible number
        dry_run = policy.auto_throttle == "dry_run"
        severity = SEVERITY_RANK.get(alert.severity, 0)
        current = state.current if state is not None else None
        in_force = current if current is not None and current.active_at(at) else None
        if state is not None:
            wanted = self._replacing(state, in_force, (step.action, params), dry_run, severity)
            if wanted is None or at - state.changed_at < policy.cooldown_s:
                alert.action = action_of(in_force)
                return None
            action, params = wanted
        else:
            action = step.action
        if state is None:
            state = self.scopes.new(scope.key)
        reason = CommandReason(alert.alert_id, alert.kind, _short(alert.summary))
        cmd = self.scopes.issue(
            state,
            scope,
            action,
            params,
            at,
            policy,
            reason,
            dry_run=dry_run,
            owner=alert.alert_id,
            severity=severity,
        )
        alert.action = action_of(cmd)
        return cmd

    def _scope_for(self, alert: Alert) -> Scope:
        """Where ``alert`` acts: the scope its incident already holds (an escalation
        or a resolution acts where its firing did), else the narrowest that holds
        the cause (:func:`~spendsentry.actions.cause.cause_scope`)."""
        if alert.status == "firing":
            return cause_scope(alert)
        return self.scopes.owned_by(alert.alert_id, alert.use_case) or Scope(alert.use_case)

    def _release(
        self, alert: Alert, scope: Scope, state: ScopeState | None, policy: Policy
    ) -> ThrottleCommand | None:
        """The release of the command in force that ``alert``'s incident set, if any."""
        at = alert.detected_at
        if (
            state is None
            or state.current is None
            or state.owner != alert.alert_id
            or not state.current.active_at(at)
        ):
            return None
        reason = CommandReason(alert.alert_id, alert.kind, _short(alert.summary))
        cmd = self.scopes.issue(
            state,
            scope,
            "release",
            {},
            at,
            policy,
            reason,
            dry_run=state.current.dry_run,
            owner=None,
            severity=-1,
        )
        alert.action = action_of(cmd)
        return cmd

    @staticmethod
    def _limits(
        alert: Alert, scope: Scope, params: dict[str, Any], baseline: Baseline | None
    ) -> dict[str, Any]:
        """A rate limit's numbers on ``scope``: the step's, or the usual rate when it
        has none; on a narrowed scope, its usual part of the use case's
        (:func:`~spendsentry.actions.cause.cause_usual_share`): the ladder's numbers
        are the use case's allowance, and a runaway session within it gets its share."""
        share = cause_usual_share(alert) if scope.key != Scope(alert.use_case).key else None
        if not params:
            if baseline is None:
                return {}
            return (baseline if share is None else baseline.scaled(share)).limits()
        if share is None:
            return params
        calls = baseline.calls_per_minute if baseline is not None else 0.0
        return scale_limits(params, share, calls)

    def snoozed(self, use_case: str, kind: str, at: float) -> bool:
        """Whether alerts of (``use_case``, ``kind``) are snoozed at ``at``."""
        if not self.snoozes:
            return False
        for key in ((use_case, kind), (use_case, "*")):
            until = self.snoozes.get(key)
            if until is None:
                continue
            if at < until:
                return True
            del self.snoozes[key]
        return False

    # -- operators ------------------------------------------------------------

    def apply_control(self, action: ControlAction, policy: Policy) -> list[ThrottleCommand]:
        """Apply one operator action; the commands it causes (a release, or none).

        Raises
        ------
        ControlError
            A release whose scope_key is malformed.
        """
        if action.action == "ack":
            if action.alert_id:
                self.acks[action.alert_id] = {"user": action.user, "at": action.at}
                _trim(self.acks, self.max_acks)
            return []
        if action.action == "snooze":
            assert action.until is not None  # ControlAction.parse checks it
            self.snoozes[(action.use_case, action.kind or "*")] = action.until
            _trim(self.snoozes, self.max_snoozes)
            return []
        try:
            scope = action.scope
        except ValueError as exc:
            raise ControlError(f"cannot release: {exc}") from None
        state = self.scopes.get(scope.key)
        if action.version is not None:
            # The release is already on ai.throttle (the CLI published it):
            # remember its version so the next command here is newer. Only for
            # a scope this planner knows (it issued or saw a verified command
            # there), and only a plausible step ahead: ai.control is not signed.
            if action.test:
                self.scopes.test_version(scope.key, state, action.version)
                return []
            if state is None or not plausible(action.version, state.version):
                self.scopes.ignored_versions += 1
                return []
            state.version = max(state.version, action.version)
            state.current, state.owner, state.severity = None, None, -1
            state.changed_at = max(state.changed_at, action.at)
            return []
        if state is None or state.current is None or not state.current.active_at(action.at):
            return []
        summary = _short(f"released by {action.user}")
        reason = CommandReason(action.alert_id, action.kind, summary)
        cmd = self.scopes.issue(
            state,
            scope,
            "release",
            {},
            action.at,
            policy,
            reason,
            dry_run=state.current.dry_run,
            owner=None,
            severity=-1,
        )
        return [] if cmd is None else [cmd]

    def observe_version(self, scope_key: str, version: int) -> None:
        """A verified command with ``version`` exists on ai.throttle (seen at start-up).

        See :meth:`spendsentry.actions.scopes.ScopeBook.observe_version`.
        """
        self.scopes.observe_version(scope_key, version)

    # -- queries (the scope book's) ---------------------------------------------

    def active(self, now: float) -> list[ThrottleCommand]:
        """Commands in force at ``now`` (not expired, not released), by scope key."""
        return self.scopes.active(now)

    def latest(self, scope_key: str) -> ThrottleCommand | None:
        """The last command issued on ``scope_key`` (a release too), if held."""
        return self.scopes.latest(scope_key)

    def recent(self, since: float) -> list[ThrottleCommand]:
        """The latest command of every scope changed at or after ``since``."""
        return self.scopes.recent(since)

    def version(self, scope_key: str) -> int:
        """The last version issued (or seen) for ``scope_key``; 0 if none."""
        return self.scopes.version(scope_key)

    @property
    def issued(self) -> int:
        """Commands issued (releases too)."""
        return self.scopes.issued

    @property
    def ignored_versions(self) -> int:
        """Versions not taken and commands not issued at the version bound."""
        return self.scopes.ignored_versions

    # -- internals ------------------------------------------------------------

    def _replacing(
        self,
        state: ScopeState,
        in_force: ThrottleCommand | None,
        wanted: tuple[str, dict[str, Any]],
        dry_run: bool,
        severity: int,
    ) -> tuple[str, dict[str, Any]] | None:
        """The (action, params) to issue over ``in_force`` when a step asks for
        ``wanted``; None when the command in force stays (the same command, a
        lower severity, or a step that would loosen it)."""
        if in_force is None:
            return wanted
        if (in_force.action, in_force.params, in_force.dry_run) == (*wanted, dry_run):
            return None
        if severity < state.severity:
            return None
        if in_force.dry_run:
            return wanted  # enforces nothing: nothing to loosen
        replacement = _no_looser(in_force, *wanted, dry_run=dry_run)
        if replacement is None:
            self.kept_stricter += 1
        return replacement


def _no_looser(
    in_force: ThrottleCommand, action: str, params: dict[str, Any], *, dry_run: bool
) -> tuple[str, dict[str, Any]] | None:
    """What replaces the enforced ``in_force`` when a step asks for ``action``:
    None when that would loosen it (a dry run in place of an enforced command
    lifts everything), or when the merge changes nothing."""
    if dry_run:
        return None
    out = tightened(in_force.action, in_force.params, action, params)
    if out is None or out == (in_force.action, in_force.params):
        return None
    return out


def _short(text: str) -> str:
    return text if len(text) <= _SUMMARY_CHARS else text[: _SUMMARY_CHARS - 3] + "..."


def _trim(mapping: dict[Any, Any], limit: int) -> None:
    while len(mapping) > limit:
        del mapping[next(iter(mapping))]
