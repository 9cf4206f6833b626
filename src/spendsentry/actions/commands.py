"""Throttle commands (``schemas/throttle-command.json``) and which of them to trust.

Scopes and their keys belong to the message vocabulary
(:mod:`spendsentry.messages.scope`); they are re-exported here for old imports.

>>> cmd = ThrottleCommand.build(Scope("support_chat"), "block", {}, version=3,
...     issued_at=1793610000.0, expires_at=1793613600.0,
...     reason=CommandReason(None, None, "manual"))
>>> cmd.command_id, cmd.to_dict()["expires_at"]
('cmd-63c471e90e66f18d', '2026-11-02T10:00:00.000Z')
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import orjson

from spendsentry.actions.signing import ThrottleKeys
from spendsentry.contracts import THROTTLE_ACTIONS, validate
from spendsentry.messages.scope import (
    SCOPE_KEY_PATTERN,
    Scope,
    escape_component,
    scope_key,
    scope_keys_of_call,
)
from spendsentry.timeutil import format_ts

__all__ = [
    "MAX_VERSION",
    "REJECTIONS",
    "SCOPE_KEY_PATTERN",
    "CommandReason",
    "Rejection",
    "Scope",
    "ThrottleCommand",
    "escape_component",
    "scope_key",
    "scope_keys_of_call",
    "trusted_command",
]

#: The largest version a command may carry: 2^53 - 1, an integer every JSON
#: implementation holds exactly (also the schema's ``maximum``).
MAX_VERSION = 2**53 - 1
#: Why a record on ai.throttle is not trusted (also verdicts of the guard).
REJECTIONS = ("invalid", "unsigned", "bad_signature")


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
    #: A test command (``spendsentry throttle test``): enforced like any other,
    #: marked so a gateway can say a decision came from a test. Last, so the
    #: positional fields (snapshots build commands with them) stay as they were.
    test: bool = False

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        # Engines pickled before ``test`` existed hold one value fewer: no test.
        for name, value in zip(_COMMAND_FIELDS, (*state, False), strict=False):
            object.__setattr__(self, name, value)

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
        test: bool = False,
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
            test=test,
        )

    @property
    def scope_key(self) -> str:
        return self.scope.key

    def active_at(self, now: float) -> bool:
        """A non-release command that has not expired at ``now``."""
        return self.action != "release" and now < self.expires_at

    def body(self) -> dict[str, Any]:
        """The message without ``signature`` (what is signed)."""
        out: dict[str, Any] = {
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
        if self.test:
            # Written only when set: other commands, their signatures and ids stay as they were.
            out["test"] = True
        return out

    def to_dict(self, keys: ThrottleKeys | None = None) -> dict[str, Any]:
        """The message, signed with ``keys``' signing key (``""`` without one)."""
        out = self.body()
        out["signature"] = keys.sign(out) if keys is not None else ""
        return out


#: The fields of a command in pickling order (see ``ThrottleCommand.__setstate__``).
_COMMAND_FIELDS = tuple(f.name for f in fields(ThrottleCommand))


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one record on ai.throttle is not a command to act on."""

    #: One of :data:`REJECTIONS`.
    reason: str
    #: What is wrong, for the log (never a key).
    detail: str
    #: The record's own ``scope_key``, shortened (only for the log: not trusted).
    scope_key: str


def trusted_command(
    message: bytes | str | Mapping[str, Any], keys: ThrottleKeys
) -> dict[str, Any] | Rejection:
    """The command in ``message`` if it is one that ``keys`` signed, else why not.

    Every reader of ai.throttle (the worker at start, ``spendsentry throttle``,
    :class:`~spendsentry.client.ThrottleGuard`) goes through here: a record
    counts only if it is a valid command (schema, version at most
    :data:`MAX_VERSION`, ``scope_key`` the key of its ``scope``) and its
    signature verifies with one of the accepted keys (rotation: any of them).
    """
    doc: Any = message
    if isinstance(message, bytes | str):
        try:
            doc = orjson.loads(message)
        except orjson.JSONDecodeError:
            return Rejection("invalid", "not JSON", "?")
    if not isinstance(doc, dict):
        return Rejection("invalid", "not a JSON object", "?")
    shown = str(doc.get("scope_key", "?"))[:200]
    if not doc.get("signature"):
        return Rejection("unsigned", "no signature", shown)
    version = doc.get("version")
    if type(version) is not int or not 0 < version <= MAX_VERSION:
        return Rejection("invalid", f"version is not an integer in 1..{MAX_VERSION}", shown)
    # The signature before the schema: a flood of forged records then costs
    # an HMAC each, not a schema validation (~25x dearer).
    if not keys.verify(doc):
        return Rejection(
            "bad_signature", "signature does not verify with the configured keys", shown
        )
    problems = validate("throttle-command", doc)
    if problems:
        return Rejection("invalid", problems[0][:300], shown)
    scope = doc["scope"]
    key = scope_key(
        scope["use_case"], scope.get("model"), scope.get("agent_id"), scope.get("session_id")
    )
    if doc["scope_key"] != key:
        return Rejection("invalid", "scope_key is not the key of scope", shown)
    return doc
