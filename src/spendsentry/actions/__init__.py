"""What spendsentry does about an alert: throttle commands, signed, and operator control.

* :mod:`~spendsentry.actions.signing`: canonical JSON and the HMAC-SHA256
  signature of a throttle command, with a list of accepted keys (rotation).
* :mod:`~spendsentry.actions.commands`: :class:`ThrottleCommand` and its scope.
* :mod:`~spendsentry.actions.planner`: :class:`ThrottlePlanner`, the action
  ladder with cooldown, maximum duration and release; pure and deterministic,
  owned by the engine.
* :mod:`~spendsentry.actions.control`: operator actions from ``ai.control``
  (ack, release, snooze).
"""

from __future__ import annotations

from spendsentry.actions.commands import Scope, ThrottleCommand
from spendsentry.actions.control import ControlAction, ControlError
from spendsentry.actions.planner import Baseline, ThrottlePlanner
from spendsentry.actions.signing import (
    ThrottleKeys,
    canonical_json,
    sign,
    verify,
)

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
