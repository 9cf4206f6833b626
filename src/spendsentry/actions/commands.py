"""Throttle commands and their scopes (``schemas/throttle-command.json``).

>>> scope = Scope("research_agent", model="o3", agent_id="planner")
>>> scope.key
'research_agent/model=o3/agent=planner'
>>> Scope.parse(scope.key) == scope
True
>>> cmd = ThrottleCommand.build(Scope("support_chat"), "block", {}, version=3,
...     issued_at=1793610000.0, expires_at=1793613600.0,
...     reason=CommandReason(None, None, "manual"))
>>> cmd.command_id, cmd.to_dict()["expires_at"]
('cmd-63c471e90e66f18d', '2026-11-02T10:00:00.000Z')
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from spendsentry.actions.signing import ThrottleKeys
from spendsentry.contracts import THROTTLE_ACTIONS
from spendsentry.timeutil import format_ts

__all__ = ["CommandReason", "Scope", "ThrottleCommand"]

_MODEL = "/model="
_AGENT = "/agent="


@dataclass(frozen=True, slots=True)
class Scope:
    """What a command applies to: a use case, optionally one model and/or agent."""

    use_case: str
    model: str | None = None
    agent_id: str | None = None

    @property
    def key(self) -> str:
        """The Kafka key: ``use_case[/model=M][/agent=A]``."""
        out = self.use_case
        if self.model:
            out += _MODEL + self.model
        if self.agent_id:
            out += _AGENT + self.agent_id
        return out

    def to_dict(self) -> dict[str, str]:
        out = {"use_case": self.use_case}
        if self.model:
            out["model"] = self.model
        if self.agent_id:
            out["agent_id"] = self.agent_id
        return out

    @classmethod
    def parse(cls, key: str) -> Scope:
        """The scope of a scope key; ``ValueError`` with a reason if malformed."""
        if not isinstance(key, str) or not key.strip():
            raise ValueError("a scope key is a non-empty string like support_chat/model=gpt-4o")
        agent = model = None
        rest = key
        if _AGENT in rest:
            rest, agent = rest.split(_AGENT, 1)
        if _MODEL in rest:
            rest, model = rest.split(_MODEL, 1)
        if not rest or model == "" or agent == "" or "/" in rest:
            raise ValueError(f"scope key {key[:100]!r} is not use_case[/model=MODEL][/agent=AGENT]")
        return cls(rest, model, agent)


@dataclass(frozen=True, slots=True)
class CommandReason:
    """Why a command was issued (``alert_id`` and ``kind`` are None for manual ones)."""

    alert_id: str | None
    kind: str | None
    summary: str

    def to_dict(self) -> dict[str, Any]:
        return {"alert_id": self.alert_id, "kind": self.kind, "summary": self.summary}


@dataclass(frozen=True, slots=True)
class ThrottleCommand:
    """One command for the gateways; unsigned (signing happens at the edge).

    Times are epoch seconds. Use :meth:`build` to get the deterministic
    ``command_id``.
    """

    command_id: str
    scope: Scope
    action: str
    params: dict[str, Any]
    reason: CommandReason
    issued_at: float
    expires_at: float
    version: int
    dry_run: bool = False
    #: Not part of the message: which incident owns the command (planner bookkeeping).
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def build(
        cls,
        scope: Scope,
        action: str,
        params: dict[str, Any],
        *,
        version: int,
        issued_at: float,
        expires_at: float,
        reason: CommandReason,
        dry_run: bool = False,
    ) -> ThrottleCommand:
        if action not in THROTTLE_ACTIONS:
            raise ValueError(f"unknown throttle action {action!r}")
        if expires_at <= issued_at:
            raise ValueError("a command must expire after it is issued")
        digest = hashlib.sha256(
            f"{scope.key}\x1f{version}\x1f{format_ts(issued_at)}".encode()
        ).hexdigest()
        return cls(
            f"cmd-{digest[:16]}",
            scope,
            action,
            dict(params),
            reason,
            issued_at,
            expires_at,
            version,
            dry_run,
        )

    @property
    def scope_key(self) -> str:
        return self.scope.key

    def active_at(self, now: float) -> bool:
        """A non-release command that has not expired at ``now``."""
        return self.action != "release" and now < self.expires_at

    def body(self) -> dict[str, Any]:
        """The message without ``signature`` (what is signed)."""
        return {
            "schema_version": 1,
            "command_id": self.command_id,
            "scope": self.scope.to_dict(),
            "scope_key": self.scope.key,
            "action": self.action,
            "params": dict(self.params),
            "reason": self.reason.to_dict(),
            "issued_at": format_ts(self.issued_at),
            "expires_at": format_ts(self.expires_at),
            "version": self.version,
            "dry_run": self.dry_run,
        }

    def to_dict(self, keys: ThrottleKeys | None = None) -> dict[str, Any]:
        """The message, signed with ``keys``' signing key (``""`` without one)."""
        out = self.body()
        out["signature"] = keys.sign(out) if keys is not None else ""
        return out
