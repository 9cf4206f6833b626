"""Throttle scopes and their keys: what a command applies to, as the Kafka key spells it.

A scope is a use case, optionally narrowed to one model, one agent and/or one
agent session. Its key (``use_case[/model=M][/agent=A][/session=S]``, with
``%``, ``/`` and ``=`` in names percent-encoded) is the key of ``ai.throttle``
records, so compaction keeps the latest command per scope; the worker builds
it, the guard looks calls up by it.

>>> scope = Scope("research_agent", model="o3", agent_id="planner")
>>> scope.key
'research_agent/model=o3/agent=planner'
>>> Scope.parse(scope.key) == scope
True
>>> Scope("research_agent", session_id="s-42").key
'research_agent/session=s-42'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "SCOPE_KEY_PATTERN",
    "Scope",
    "escape_component",
    "scope_key",
    "scope_keys_of_call",
]

_MODEL = "model="
_AGENT = "agent="
_SESSION = "session="
#: The characters a scope key gives a meaning to, and their escapes. ``%`` is
#: escaped too, so that every escape decodes one way only.
_ESCAPES = {"%": "%25", "/": "%2F", "=": "%3D"}
_UNESCAPES = {v: k for k, v in _ESCAPES.items()}
_RESERVED = re.compile("[%/=]")
_ESCAPE_OR_PERCENT = re.compile("%(?:25|2F|3D)|%")
#: The grammar of a scope key, also the ``pattern`` in the schemas.
_COMPONENT = "(?:[^/=%]|%(?:25|2F|3D))+"
SCOPE_KEY_PATTERN = (
    f"^{_COMPONENT}(?:/model={_COMPONENT})?(?:/agent={_COMPONENT})?(?:/session={_COMPONENT})?$"
)
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
    """What a command applies to: a use case, optionally one model, agent and/or session.

    ``session_id`` narrows the scope to the calls of one agent session (a
    runaway loop), so the rest of the use case goes on.

    >>> Scope("support_chat/model=gpt-4o").key
    'support_chat%2Fmodel%3Dgpt-4o'
    >>> Scope.parse("support_chat%2Fmodel%3Dgpt-4o")
    Scope(use_case='support_chat/model=gpt-4o', model=None, agent_id=None, session_id=None)
    """

    use_case: str
    model: str | None = None
    agent_id: str | None = None
    session_id: str | None = None

    def __setstate__(self, state: tuple[str | None, ...]) -> None:
        # Engines pickled before session_id existed hold three values: their
        # scopes have no session.
        names = ("use_case", "model", "agent_id", "session_id")
        for name, value in zip(names, (*state, None, None, None), strict=False):
            object.__setattr__(self, name, value)

    @property
    def key(self) -> str:
        """The Kafka key: ``use_case[/model=M][/agent=A][/session=S]``, each part escaped.

        Names without ``/``, ``=`` or ``%`` give the same key as before
        escaping existed, so compacted history and running gateways agree.
        """
        return scope_key(self.use_case, self.model, self.agent_id, self.session_id)

    def to_dict(self) -> dict[str, str]:
        out = {"use_case": self.use_case}
        if self.model:
            out["model"] = self.model
        if self.agent_id:
            out["agent_id"] = self.agent_id
        if self.session_id:
            out["session_id"] = self.session_id
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
                f"scope key {shown!r} is not use_case[/model=MODEL][/agent=AGENT][/session=ID] "
                "with %, / and = in names written %25, %2F and %3D"
            )
        parts = key.split("/")
        found: dict[str, str] = {}
        for part in parts[1:]:
            name, _, value = part.partition("=")
            found[name] = _unescape(value)
        return cls(
            _unescape(parts[0]), found.get("model"), found.get("agent"), found.get("session")
        )


def scope_key(
    use_case: str,
    model: str | None = None,
    agent_id: str | None = None,
    session_id: str | None = None,
) -> str:
    """The canonical scope key (see :attr:`Scope.key`); the one place it is built.

    >>> scope_key("research_agent", "o3", "planner")
    'research_agent/model=o3/agent=planner'
    >>> scope_key("research_agent", None, "planner", "s/1")
    'research_agent/agent=planner/session=s%2F1'
    """
    out = escape_component(use_case)
    if model:
        out += "/" + _MODEL + escape_component(model)
    if agent_id:
        out += "/" + _AGENT + escape_component(agent_id)
    if session_id:
        out += "/" + _SESSION + escape_component(session_id)
    return out


def scope_keys_of_call(
    use_case: str,
    model: str | None = None,
    agent_id: str | None = None,
    session_id: str | None = None,
) -> list[str]:
    """The keys of every scope a call matches, the most general first.

    Each of model, agent and session narrows the use case on its own and
    together, so a command on any combination of them reaches the call; the
    session's scopes come last (the most specific).

    >>> scope_keys_of_call("a/b", "gpt-4o")
    ['a%2Fb', 'a%2Fb/model=gpt-4o']
    >>> scope_keys_of_call("a", None, "planner", "s1")
    ['a', 'a/agent=planner', 'a/session=s1', 'a/agent=planner/session=s1']
    """
    sessions = [None, session_id] if session_id else [None]
    keys = []
    for session in sessions:
        keys.append(scope_key(use_case, None, None, session))
        if model:
            keys.append(scope_key(use_case, model, None, session))
        if agent_id:
            keys.append(scope_key(use_case, None, agent_id, session))
        if model and agent_id:
            keys.append(scope_key(use_case, model, agent_id, session))
    return keys
