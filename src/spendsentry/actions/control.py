"""Old home of the operator control actions: re-exports :mod:`spendsentry.messages.control`."""

from __future__ import annotations

from spendsentry.messages.control import CONTROL_ACTIONS, ControlAction, ControlError

__all__ = ["CONTROL_ACTIONS", "ControlAction", "ControlError"]
