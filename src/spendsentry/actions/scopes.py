"""The throttle planner's books per scope: version, latest command, its owner, when it changed.

:class:`ScopeBook` is what :class:`~spendsentry.actions.planner.ThrottlePlanner`
remembers about each scope it commands, and the only code that issues a
:class:`~spendsentry.actions.commands.ThrottleCommand`: versions grow by one per
command and stay within 1..:data:`MAX_VERSION`, a command lasts at most
:data:`MAX_COMMAND_S`, and beyond ``max_scopes`` the scope changed longest ago
is forgotten. The planner decides *whether* to issue; the book records it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spendsentry.actions.commands import MAX_VERSION, CommandReason, ThrottleCommand
from spendsentry.messages.scope import Scope

if TYPE_CHECKING:
    from spendsentry.policy import Policy

__all__ = [
    "MAX_COMMAND_S",
    "MAX_CONTROL_VERSION_STEP",
    "ScopeBook",
    "ScopeState",
    "plausible",
]

#: No command lasts longer than a day, whatever a policy says.
MAX_COMMAND_S = 24 * 3600.0
#: How far ahead of the version held a release from ``spendsentry throttle
#: release`` may be (it publishes latest + 1): ai.control is not signed, and a
#: forged version near :data:`MAX_VERSION` would end throttling on the scope.
MAX_CONTROL_VERSION_STEP = 1000


@dataclass(slots=True)
class ScopeState:
    version: int = 0
    #: issued_at of the last command (cooldown counts from here).
    changed_at: float = -math.inf
    #: The latest command (a release too); None after a release from the CLI.
    current: ThrottleCommand | None = None
    #: alert_id of the incident that set ``current`` (it may release it).
    owner: str | None = None
    #: Severity rank of that alert.
    severity: int = -1


def plausible(version: int, held: int) -> bool:
    """Whether a version from ``ai.control`` (not signed) may follow ``held``.

    >>> plausible(2, 1), plausible(0, 1), plausible(1 + MAX_CONTROL_VERSION_STEP + 1, 1)
    (True, False, False)
    """
    return 0 < version <= min(MAX_VERSION, held + MAX_CONTROL_VERSION_STEP)


class ScopeBook:
    """Each scope's :class:`ScopeState`, bounded to ``max_scopes``, and the counters.

    >>> book = ScopeBook(max_scopes=1)
    >>> book.observe_version("a", 7); book.version("a")
    7
    >>> book.observe_version("b", 2); book.version("a"), book.version("b")
    (0, 2)
    """

    def __init__(self, max_scopes: int = 50_000) -> None:
        self.max_scopes = max_scopes
        self.states: dict[str, ScopeState] = {}
        #: Commands issued (releases too).
        self.issued = 0
        #: Versions not taken (out of range, implausible, unknown scope) and
        #: commands not issued because the scope's version is at the bound.
        self.ignored_versions = 0

    def get(self, key: str) -> ScopeState | None:
        return self.states.get(key)

    def owned_by(self, alert_id: str, use_case: str) -> Scope | None:
        """The scope of ``use_case`` whose command in force ``alert_id``'s incident set."""
        state = self.states.get(Scope(use_case).key)
        if state is not None and state.owner == alert_id:
            return Scope(use_case)
        # A narrowed scope (actions.cause): escalations and resolutions are rare
        # next to minutes and the books are bounded, so a scan keeps the
        # snapshot free of an index.
        for state in self.states.values():
            cmd = state.current
            if state.owner == alert_id and cmd is not None and cmd.scope.use_case == use_case:
                return cmd.scope
        return None

    def in_force_on(self, use_case: str, at: float) -> ThrottleCommand | None:
        """The command in force on ``use_case`` itself, else the newest on one of its
        narrowed scopes (what a symptom of its incident points at)."""
        state = self.states.get(Scope(use_case).key)
        if state is not None and state.current is not None and state.current.active_at(at):
            return state.current
        held = [
            s.current
            for s in self.states.values()
            if s.current is not None
            and s.current.scope.use_case == use_case
            and s.current.action != "release"
            and s.current.active_at(at)
        ]
        return max(held, key=lambda c: (c.issued_at, c.scope.key), default=None)

    def new(self, key: str) -> ScopeState:
        """A fresh state for ``key``, forgetting the oldest scope when full."""
        if len(self.states) >= self.max_scopes:
            # Forget the scope changed longest ago; a version restarting from
            # zero there is harmless once its last command has expired.
            victim = min(self.states, key=lambda k: self.states[k].changed_at)
            del self.states[victim]
        state = self.states[key] = ScopeState()
        return state

    def issue(
        self,
        state: ScopeState,
        scope: Scope,
        action: str,
        params: dict[str, Any],
        at: float,
        policy: Policy,
        reason: CommandReason,
        *,
        dry_run: bool,
        owner: str | None,
        severity: int,
    ) -> ThrottleCommand | None:
        """Build the scope's next command and make it the one in force (None at the bound)."""
        if state.version >= MAX_VERSION:
            # No newer version can be written: gateways would ignore it.
            self.ignored_versions += 1
            return None
        state.version += 1
        duration = min(policy.max_duration_s, MAX_COMMAND_S)
        cmd = ThrottleCommand.build(
            scope,
            action,
            params,
            version=state.version,
            issued_at=at,
            expires_at=at + duration,
            reason=reason,
            dry_run=dry_run,
        )
        state.current, state.owner, state.severity, state.changed_at = cmd, owner, severity, at
        self.issued += 1
        return cmd

    def observe_version(self, scope_key: str, version: int) -> None:
        """A verified command with ``version`` exists on ai.throttle (seen at start-up).

        Keeps versions monotonic when the engine starts without its snapshot.
        The caller passes only commands that verify (see
        :func:`~spendsentry.actions.commands.trusted_command`); a version
        outside 1..:data:`MAX_VERSION` is ignored all the same.
        """
        if type(version) is not int or not 0 < version <= MAX_VERSION:
            self.ignored_versions += 1
            return
        state = self.states.get(scope_key)
        if state is None:
            state = self.new(scope_key)
        state.version = max(state.version, version)

    def test_version(self, key: str, state: ScopeState | None, version: int) -> None:
        """Record the version of a test command (``spendsentry throttle test``).

        Only the version moves on: a test is no release and no incident, so the
        command in force, the cooldown and the choices stay. A test may be the
        first command on a scope, so an unknown scope is learnt, but only while
        there is room (ai.control is not signed: a flood of made-up scopes must
        not push real ones out) and with no cooldown time, so made-up scopes are
        the first forgotten.
        """
        known = 0 if state is None else state.version
        if not plausible(version, known) or (state is None and len(self.states) >= self.max_scopes):
            self.ignored_versions += 1
            return
        if state is None:
            state = self.new(key)
        state.version = max(state.version, version)

    def active(self, now: float) -> list[ThrottleCommand]:
        """Commands in force at ``now`` (not expired, not released), by scope key."""
        return [
            s.current
            for _, s in sorted(self.states.items())
            if s.current is not None and s.current.active_at(now)
        ]

    def latest(self, scope_key: str) -> ThrottleCommand | None:
        """The last command issued on ``scope_key`` (a release too); None if none
        is held (unknown scope, or released from the command line)."""
        state = self.states.get(scope_key)
        return None if state is None else state.current

    def recent(self, since: float) -> list[ThrottleCommand]:
        """The latest command of every scope changed at or after ``since``."""
        return [
            s.current
            for _, s in sorted(self.states.items())
            if s.current is not None and s.changed_at >= since
        ]

    def version(self, scope_key: str) -> int:
        """The last version issued (or seen) for ``scope_key``; 0 if none."""
        state = self.states.get(scope_key)
        return 0 if state is None else state.version
