"""What spendsentry does about an alert: throttle commands, signed, and operator control.

* :mod:`~spendsentry.actions.signing`: canonical JSON and the HMAC-SHA256
  signature of a throttle command, with a list of accepted keys (rotation).
* :mod:`~spendsentry.actions.commands`: :class:`ThrottleCommand` and which
  records on ``ai.throttle`` to trust.
* :mod:`~spendsentry.actions.planner`: :class:`ThrottlePlanner`, the action
  ladder with cooldown, maximum duration and release; pure and deterministic,
  owned by the engine.

The message vocabulary they speak (:class:`Scope`, :class:`ControlAction`,
severities) belongs to :mod:`spendsentry.messages`; it is re-exported here.
"""

from __future__ import annotations

from spendsentry.actions.commands import ThrottleCommand
from spendsentry.actions.planner import Baseline, ThrottlePlanner
from spendsentry.actions.signing import (
    ThrottleKeys,
    canonical_json,
    sign,
    verify,
)
from spendsentry.messages.control import ControlAction, ControlError
from spendsentry.messages.scope import Scope

__all__ = [
    "Baseline",
    "ControlAction",
    "ControlError",
    "Scope",
    "ThrottleCommand",
    "ThrottleKeys",
    "ThrottlePlanner",
    "canonical_json",
    "sign",
    "verify",
]
