"""Operator actions on the ``ai.control`` topic (``schemas/control-action.json``).

The Slack interaction endpoint and ``spendsentry throttle release`` build the
message with :meth:`ControlAction.to_dict`; the engine reads it with
:meth:`ControlAction.parse` and applies it
(:meth:`spendsentry.engine.Engine.apply_control`).

>>> a = ControlAction.parse({"action": "snooze", "alert_id": "ab12", "use_case": "support_chat",
...     "kind": "cost_spike", "scope_key": None, "until": "2026-11-02T10:00:00Z",
...     "user": "U123", "at": "2026-11-02T09:00:00Z"})
>>> a.action, a.until - a.at, a.target_scope
('snooze', 3600.0, 'support_chat')
>>> try:
...     ControlAction.parse({**a.to_dict(), "action": "pause", "until": None})
... except ControlError as exc:
...     print(exc)  # doctest: +ELLIPSIS
invalid control action: $.action: 'pause' is not one of ['ack', 'release', 'snooze', ...]

Operator feedback on an alert names its use case and kind (the detector it teaches):

>>> f = ControlAction.parse({**a.to_dict(), "action": "false_alarm", "until": None})
>>> f.action, f.is_feedback
('false_alarm', True)
>>> try:
...     ControlAction.parse({**f.to_dict(), "kind": None})
... except ControlError as exc:
...     print(exc)
invalid control action: $.kind: None is not of type 'string'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from spendsentry.errors import SpendSentryError
from spendsentry.messages.scope import Scope
from spendsentry.timeutil import format_ts, parse_ts

__all__ = ["CONTROL_ACTIONS", "FEEDBACK_ACTIONS", "ControlAction", "ControlError"]

#: Operator feedback that teaches the detectors: ``expected_change`` (the new
#: level is the baseline from now on; the incident resolves) and
#: ``false_alarm`` (counted; the kind gets less sensitive for the use case,
#: within the policy's floor). Applied by the engine at event time.
FEEDBACK_ACTIONS: tuple[str, ...] = ("expected_change", "false_alarm")

CONTROL_ACTIONS: tuple[str, ...] = ("ack", "release", "snooze", *FEEDBACK_ACTIONS)


class ControlError(SpendSentryError, ValueError):
    """A control message that cannot be applied; the message says why."""


@dataclass(frozen=True, slots=True)
class ControlAction:
    """One operator action; times are epoch seconds."""

    action: str
    alert_id: str | None
    use_case: str
    kind: str | None
    scope_key: str | None
    until: float | None
    user: str
    at: float
    #: Set by ``spendsentry throttle release``: the version of the release it
    #: already published, so the engine records it instead of publishing another.
    version: int | None = None
    #: Set by ``spendsentry throttle test`` with ``version``: the command at that
    #: version is a test, so the engine only records the version.
    test: bool = False

    @property
    def is_feedback(self) -> bool:
        """Whether this is feedback on a detector (:data:`FEEDBACK_ACTIONS`)."""
        return self.action in FEEDBACK_ACTIONS

    @property
    def scope(self) -> Scope:
        """The scope a release applies to: ``scope_key``, else the whole use case.

        Raises ``ValueError`` for a malformed ``scope_key``. A use case is never
        parsed as a key: its name may hold ``/`` or ``=``.
        """
        if self.scope_key is not None:
            return Scope.parse(self.scope_key)
        return Scope(self.use_case)

    @property
    def target_scope(self) -> str:
        """The key of :attr:`scope` (the use case's key when no scope_key is given)."""
        return self.scope_key if self.scope_key is not None else Scope(self.use_case).key

    @classmethod
    def parse(cls, raw: bytes | str | Mapping[str, Any]) -> ControlAction:
        """Parse and check one message (bytes, text or a decoded object).

        Raises
        ------
        ControlError
            Not JSON, or not a valid control action (the reason names the field).
        """
        doc: Any = raw
        if isinstance(raw, bytes | str):
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise ControlError(f"control message is not JSON: {exc}") from None
        # Imported here: the contracts load the JSON Schemas (and jsonschema),
        # which the light vocabulary modules must not pull in on import.
        from spendsentry.contracts import validate

        problems = validate("control-action", doc)
        if problems:
            raise ControlError("invalid control action: " + "; ".join(problems[:5]))
        until = doc.get("until")
        if doc["action"] == "snooze" and until is None:
            raise ControlError("invalid control action: $.until: a snooze needs until")
        return cls(
            action=doc["action"],
            alert_id=doc.get("alert_id"),
            use_case=doc["use_case"],
            kind=doc.get("kind"),
            scope_key=doc.get("scope_key"),
            until=None if until is None else parse_ts(until),
            user=doc["user"],
            at=parse_ts(doc["at"]),
            version=doc.get("version"),
            test=doc.get("test") is True,
        )

    def to_dict(self) -> dict[str, Any]:
        """The message, as :meth:`parse` reads it (``version`` only when set)."""
        out: dict[str, Any] = {
            "action": self.action,
            "alert_id": self.alert_id,
            "use_case": self.use_case,
            "kind": self.kind,
            "scope_key": self.scope_key,
            "until": None if self.until is None else format_ts(self.until),
            "user": self.user,
            "at": format_ts(self.at),
        }
        if self.version is not None:
            out["version"] = self.version
        if self.test:
            out["test"] = True
        return out
