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
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from spendsentry.actions.signing import ThrottleKeys
from spendsentry.contracts import THROTTLE_ACTIONS, validate
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

_MODEL = "model="
_AGENT = "agent="
#: The characters a scope key gives a meaning to, and their escapes. ``%`` is
#: escaped too, so that every escape decodes one way only.
_ESCAPES = {"%": "%25", "/": "%2F", "=": "%3D"}
_UNESCAPES = {v: k for k, v in _ESCAPES.items()}
_RESERVED = re.compile("[%/=]")
_ESCAPE_OR_PERCENT = re.compile("%(?:25|2F|3D)|%")
#: The grammar of a scope key, also the ``pattern`` in the schemas.
_COMPONENT = "(?:[^/=%]|%(?:25|2F|3D))+"
SCOPE_KEY_PATTERN = f"^{_COMPONENT}(?:/model={_COMPONENT})?(?:/agent={_COMPONENT})?$"
_SCOPE_KEY = re.compile(SCOPE_KEY_PATTERN.removesuffix("$") + r"\Z")


def escape_component(text: str) -> str:
    """``text`` with ``%``, ``/`` and ``=`` percent-encoded (unchanged without them).

    >>> escape_component("support_chat"), escape_component("a/b=c%")
    ('support_chat', 'a%2Fb%3Dc%25')
    """
    if _RESERVED.search(text) is None:
        return text  # the common case, and old keys stay byte-identical
    return _RESERVED.sub(lambda m: _ESCAPES[m.group()], text)


def _unescape(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group() == "%":
            raise ValueError("a % that is not one of the escapes %25, %2F, %3D")
        return _UNESCAPES[m.group()]

    return _ESCAPE_OR_PERCENT.sub(one, text) if "%" in text else text


@dataclass(frozen=True, slots=True)
class Scope:
    """What a command applies to: a use case, optionally one model and/or agent.

    >>> Scope("support_chat/model=gpt-4o").key
    'support_chat%2Fmodel%3Dgpt-4o'
    >>> Scope.parse("support_chat%2Fmodel%3Dgpt-4o")
    Scope(use_case='support_chat/model=gpt-4o', model=None, agent_id=None)
    """

    use_case: str
    model: str | None = None
    agent_id: str | None = None

    @property
    def key(self) -> str:
        """The Kafka key: ``use_case[/model=M][/agent=A]``, each part escaped.

        Names without ``/``, ``=`` or ``%`` give the same key as before
        escaping existed, so compacted history and running gateways agree.
        """
        return scope_key(self.use_case, self.model, self.agent_id)

    def to_dict(self) -> dict[str, str]:
        out = {"use_case": self.use_case}
        if self.model:
            out["model"] = self.model
        if self.agent_id:
            out["agent_id"] = self.agent_id
        return out

    @classmethod
    def parse(cls, key: str) -> Scope:
        """The scope of a scope key; ``ValueError`` with a reason if malformed.

        Only the keys :attr:`key` makes parse (so parsing inverts formatting,
        and one scope has one key).
        """
        if not isinstance(key, str) or _SCOPE_KEY.match(key) is None:
            shown = key[:100] if isinstance(key, str) else type(key).__name__
            raise ValueError(
                f"scope key {shown!r} is not use_case[/model=MODEL][/agent=AGENT] "
                "with %, / and = in names written %25, %2F and %3D"
            )
        parts = key.split("/")
        model = agent = None
        for part in parts[1:]:
            if part.startswith(_MODEL):
                model = _unescape(part[len(_MODEL) :])
            else:
                agent = _unescape(part[len(_AGENT) :])
        return cls(_unescape(parts[0]), model, agent)


def scope_key(use_case: str, model: str | None = None, agent_id: str | None = None) -> str:
    """The canonical scope key (see :attr:`Scope.key`); the one place it is built.

    >>> scope_key("research_agent", "o3", "planner")
    'research_agent/model=o3/agent=planner'
    """
    out = escape_component(use_case)
    if model:
        out += "/" + _MODEL + escape_component(model)
    if agent_id:
        out += "/" + _AGENT + escape_component(agent_id)
    return out


def scope_keys_of_call(
    use_case: str, model: str | None = None, agent_id: str | None = None
) -> list[str]:
    """The keys of every scope a call matches, the most general first.

    >>> scope_keys_of_call("a/b", "gpt-4o")
    ['a%2Fb', 'a%2Fb/model=gpt-4o']
    """
    keys = [scope_key(use_case)]
    if model:
        keys.append(scope_key(use_case, model))
    if agent_id:
        keys.append(scope_key(use_case, None, agent_id))
    if model and agent_id:
        keys.append(scope_key(use_case, model, agent_id))
    return keys


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
    if doc["scope_key"] != scope_key(scope["use_case"], scope.get("model"), scope.get("agent_id")):
        return Rejection("invalid", "scope_key is not the key of scope", shown)
    return doc
