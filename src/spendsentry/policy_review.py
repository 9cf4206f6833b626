"""Warnings about valid policies whose ladder would do less than it says.

Two cases, both legal in a policy file and both surprising in an incident:

* a step that would *loosen* the lower step's command, which the throttle
  planner therefore never issues over it (see
  :mod:`spendsentry.actions.strictness`): ``route_model`` above ``limit_rate``;
* a ``route_model`` step whose target already serves most of the use case's
  calls (the model that dominates its traffic): routing there changes almost
  nothing. This needs traffic, so it is checked only against events given
  (``spendsentry policy check --events FILE``).

``spendsentry policy check`` prints these as ``warning:`` lines (exit status
0: the files are valid); the worker logs the first kind at start.

>>> from spendsentry.policy import LadderStep, Policy
>>> p = Policy("support_chat", ladder=(
...     LadderStep("warning", "limit_rate", requests_per_minute=600),
...     LadderStep("critical", "route_model", target_model="gpt-4o-mini")))
>>> ladder_warnings([p])[0].split("; ")[0]
"support_chat: the critical step (route_model) would lift the warning step's limit_rate"
>>> served = {"support_chat": Counter({"gpt-4o-mini": 99, "gpt-4o": 1})}
>>> routing_warnings([p], served)[0].split("; ")[0]
'support_chat: the critical step routes to gpt-4o-mini, which already serves 99 of its 100 calls'
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Mapping

from spendsentry.actions.strictness import tightened
from spendsentry.messages.severity import SEVERITY_RANK
from spendsentry.policy import Policy

__all__ = ["DOMINANT_SHARE", "ladder_warnings", "model_counts", "routing_warnings"]

#: A route target that serves more than this share of a use case's calls
#: "dominates" it: rerouting moves less than the rest, at most this much less.
DOMINANT_SHARE = 0.5


def ladder_warnings(policies: Iterable[Policy]) -> list[str]:
    """One line per ladder step the planner would hold back over a lower step."""
    out: list[str] = []
    for policy in policies:
        steps = sorted((s for s in policy.ladder if s.throttles), key=lambda s: SEVERITY_RANK[s.at])
        for lower, higher in itertools.pairwise(steps):
            if tightened(lower.action, lower.params(), higher.action, higher.params()) is None:
                out.append(
                    f"{policy.use_case}: the {higher.at} step ({higher.action}) would lift the "
                    f"{lower.at} step's {lower.action}; the planner keeps the {lower.action} "
                    "in force instead"
                )
    return out


def routing_warnings(policies: Iterable[Policy], served: Mapping[str, Counter[str]]) -> list[str]:
    """One line per ``route_model`` step whose target serves most of its use case's
    calls in ``served`` (use case -> calls per model served)."""
    out: list[str] = []
    for policy in policies:
        counts = served.get(policy.use_case)
        total = sum(counts.values()) if counts else 0
        if not counts or total == 0:
            continue
        for step in policy.ladder:
            target = step.target_model
            if step.action != "route_model" or target is None:
                continue
            calls = counts.get(target, 0)
            if calls > DOMINANT_SHARE * total:
                out.append(
                    f"{policy.use_case}: the {step.at} step routes to {target}, which already "
                    f"serves {calls} of its {total} calls; routing there changes almost nothing"
                )
    return out


def model_counts(paths: Iterable[str]) -> dict[str, Counter[str]]:
    """Calls per served model per use case in event files (as replay reads them)."""
    from spendsentry.events import UsageEvent
    from spendsentry.replay import read_events

    out: dict[str, Counter[str]] = {}
    for path in paths:
        for event in read_events(path):
            if isinstance(event, UsageEvent) and event.model:
                out.setdefault(event.use_case, Counter())[event.model] += 1
    return out
