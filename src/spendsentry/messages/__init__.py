"""The message vocabulary: the names, rankings and keys every topic's messages are spelled with.

Each concept has one owner here, and every other module imports it from
that owner:

* :mod:`~spendsentry.messages.severity`: ``SEVERITIES``, lowest first, and
  :func:`severity_rank`;
* :mod:`~spendsentry.messages.alert`: ``ALERT_STATUSES``, the alert
  :func:`dedupe_key` and :class:`AlertView`, a typed view of an alert read back;
* :mod:`~spendsentry.messages.scope`: the throttle :class:`Scope` and its key;
* :mod:`~spendsentry.messages.control`: the operator :class:`ControlAction`;
* :mod:`~spendsentry.messages.topics`: the default topic names.

Nothing here does I/O or imports the engine, so the gateway client, the
notifier and the worker can all depend on it.

>>> from spendsentry.messages import Scope, dedupe_key, severity_rank, USAGE_TOPIC
>>> Scope("a/b", "gpt-4o").key, dedupe_key("ab", "firing", "info", 1), USAGE_TOPIC
('a%2Fb/model=gpt-4o', 'ab:firing:info:1', 'ai.usage')
"""

from __future__ import annotations

from spendsentry.messages.alert import ALERT_STATUSES, AlertView, dedupe_key, dedupe_key_of
from spendsentry.messages.control import CONTROL_ACTIONS, ControlAction, ControlError
from spendsentry.messages.scope import (
    SCOPE_KEY_PATTERN,
    Scope,
    escape_component,
    scope_key,
    scope_keys_of_call,
)
from spendsentry.messages.severity import SEVERITIES, SEVERITY_RANK, severity_rank
from spendsentry.messages.topics import (
    ALERTS_TOPIC,
    CONTROL_TOPIC,
    DEADLETTER_TOPIC,
    DEFAULT_TOPICS,
    OUTCOMES_TOPIC,
    STATE_TOPIC,
    THROTTLE_TOPIC,
    USAGE_TOPIC,
)

__all__ = [
    "ALERTS_TOPIC",
    "ALERT_STATUSES",
    "CONTROL_ACTIONS",
    "CONTROL_TOPIC",
    "DEADLETTER_TOPIC",
    "DEFAULT_TOPICS",
    "OUTCOMES_TOPIC",
    "SCOPE_KEY_PATTERN",
    "SEVERITIES",
    "SEVERITY_RANK",
    "STATE_TOPIC",
    "THROTTLE_TOPIC",
    "USAGE_TOPIC",
    "AlertView",
    "ControlAction",
    "ControlError",
    "Scope",
    "dedupe_key",
    "dedupe_key_of",
    "escape_component",
    "scope_key",
    "scope_keys_of_call",
    "severity_rank",
]
