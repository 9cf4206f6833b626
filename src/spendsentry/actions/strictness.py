"""Whether a throttle command keeps every restriction of the one it replaces.

A scope holds one command at a time (gateways keep the latest per scope), so a
new command *replaces* the one in force. An escalation must never loosen: a
``route_model`` that replaces an enforced 600 rpm limit lifts the limit, and if
the target model already serves nearly every call it does nothing at all. So
the throttle planner asks :func:`tightened` before it replaces a command:

* ``block`` replaces anything; nothing but ``block`` replaces a ``block``.
* Two ``limit_rate`` commands merge: every limit either has, the lower of two
  (a new tokens limit keeps the old requests limit).
* Two ``cap_input_tokens`` commands keep the lower cap.
* A ``route_model`` replaces a ``route_model`` (a re-route is no lifted limit).
* Any other change of action lifts what the command in force restricts: it is
  refused (None), and the command in force stays.

>>> tightened("limit_rate", {"requests_per_minute": 600}, "route_model",
...           {"target_model": "gpt-4o-mini"}) is None
True
>>> tightened("limit_rate", {"requests_per_minute": 600}, "limit_rate",
...           {"requests_per_minute": 900, "tokens_per_minute": 50_000})
('limit_rate', {'requests_per_minute': 600, 'tokens_per_minute': 50000})
>>> tightened("cap_input_tokens", {"max_input_tokens": 8000}, "block", {})
('block', {})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["MERGED_LIMITS", "tightened"]

#: The numeric limits that merge by their minimum when an action meets itself.
MERGED_LIMITS = {
    "limit_rate": ("requests_per_minute", "tokens_per_minute"),
    "cap_input_tokens": ("max_input_tokens",),
}


def tightened(
    held_action: str, held_params: Mapping[str, Any], action: str, params: Mapping[str, Any]
) -> tuple[str, dict[str, Any]] | None:
    """The command that replaces (``held_action``, ``held_params``) when a step asks
    for (``action``, ``params``), keeping every restriction in force; None when the
    step would lift one (the command in force should stay)."""
    if action == "block":
        return action, dict(params)
    if held_action == "block":
        return None
    if action != held_action:
        return None
    names = MERGED_LIMITS.get(action)
    if names is None:  # route_model: the newer target
        return action, dict(params)
    merged: dict[str, Any] = {}
    for name in names:
        values = [int(p[name]) for p in (held_params, params) if name in p]
        if values:
            merged[name] = min(values)
    return action, merged
