"""Operator feedback that teaches the detectors: *expected change* and *false alarm*.

Both arrive on ``ai.control`` (:data:`spendsentry.messages.control.FEEDBACK_ACTIONS`),
named by alert, use case and kind, so every worker partition and a replay see
the same thing. The engine queues them and applies each at a defined point of
event time, before closing the first minute that ends after the action's
``at`` (:func:`apply_due`), never by the
wall clock: the same events and actions give the same alerts.

* ``expected_change``: the kind's detectors for that use case adopt the
  current level as their baseline (:meth:`Kind.accept_level
  <spendsentry.detectors.kinds.base.Kind.accept_level>`) and the open incident
  of that kind resolves, saying it was an expected change.
* ``false_alarm``: counted per kind; each one multiplies the kind's
  sensitivity for the use case by :data:`SENSITIVITY_STEP`, never below the
  policy's floor (``min_sensitivity``,
  :attr:`spendsentry.policy.DetectorSetting.floor`). The kind is rebuilt from
  the tuned policy and keeps what it learned.

What a use case was told is :class:`Feedback` (``UseCaseState.feedback``),
kept in snapshots (``snapshot/engine.py``); the sensitivities follow from it
and the policy, so a policy change of the floor applies on restore.

>>> from spendsentry.policy import DetectorSetting
>>> [round(sensitivity(DetectorSetting(), n), 3) for n in range(5)]
[1.0, 0.8, 0.64, 0.512, 0.5]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from spendsentry.windows import MINUTE

if TYPE_CHECKING:
    from spendsentry.detectors.base import Monitor
    from spendsentry.engine import Engine, EngineOutput
    from spendsentry.policy import DetectorSetting, Policy

__all__ = [
    "SENSITIVITY_STEP",
    "VERDICTS",
    "Feedback",
    "apply_due",
    "sensitivity",
    "tuned_policy",
    "tuned_sensitivities",
]

#: Each false alarm multiplies the kind's sensitivity by this.
SENSITIVITY_STEP = 0.8
#: The verdicts feedback counts (the control actions' names).
VERDICTS: tuple[str, ...] = ("expected_change", "false_alarm")


def sensitivity(setting: DetectorSetting, false_alarms: int) -> float:
    """The sensitivity after ``false_alarms`` false alarms, never below the floor."""
    if false_alarms <= 0:
        return setting.sensitivity
    return max(setting.floor, setting.sensitivity * SENSITIVITY_STEP**false_alarms)


@dataclass(slots=True)
class Feedback:
    """What operators said about one use case's alerts, counted per kind and verdict.

    >>> f = Feedback()
    >>> f.count("false_alarm", "cost_spike"), f.count("false_alarm", "cost_spike")
    (1, 2)
    >>> f.counts()
    {('cost_spike', 'false_alarm'): 2}
    """

    false_alarms: dict[str, int] = field(default_factory=dict)
    expected_changes: dict[str, int] = field(default_factory=dict)

    def _of(self, verdict: str) -> dict[str, int]:
        return self.false_alarms if verdict == "false_alarm" else self.expected_changes

    def count(self, verdict: str, kind: str) -> int:
        """Count one verdict on ``kind``; returns the new count."""
        counts = self._of(verdict)
        counts[kind] = counts.get(kind, 0) + 1
        return counts[kind]

    def counts(self) -> dict[tuple[str, str], int]:
        """(kind, verdict) -> count, sorted."""
        out = {(k, "expected_change"): n for k, n in self.expected_changes.items()}
        out.update({(k, "false_alarm"): n for k, n in self.false_alarms.items()})
        return dict(sorted(out.items()))

    def __bool__(self) -> bool:
        return bool(self.false_alarms or self.expected_changes)


def tuned_policy(policy: Policy, feedback: Feedback | None) -> Policy:
    """``policy`` with each kind's sensitivity lowered by its false alarms.

    >>> from spendsentry.policy import Policy
    >>> tuned_policy(Policy("chat"), Feedback({"cost_spike": 1})).detector("cost_spike")
    DetectorSetting(enabled=True, sensitivity=0.8, min_sensitivity=0.5)
    """
    if not feedback or not feedback.false_alarms:
        return policy
    detectors = dict(policy.detectors)
    for kind, n in sorted(feedback.false_alarms.items()):
        setting = policy.detector(kind)
        detectors[kind] = dataclasses.replace(setting, sensitivity=sensitivity(setting, n))
    return dataclasses.replace(policy, detectors=detectors)


def apply_due(engine: Engine, minute: int, out: EngineOutput) -> None:
    """Apply ``engine``'s queued feedback due before closing ``minute``: each action
    whose ``at`` is before the minute's end, at the minute's start (arrival order).

    Feedback that arrives after its ``at`` was closed applies before the next
    minute closes.
    """
    if not engine.pending_feedback:
        return
    end = (minute + 1) * MINUTE
    due = [a for a in engine.pending_feedback if a.at < end]
    if not due:
        return
    engine.pending_feedback = [a for a in engine.pending_feedback if a.at >= end]
    for action in due:
        state = engine.use_cases.get(action.use_case)
        if state is None:
            continue  # evicted since: nothing left to teach
        state.apply_feedback(
            action,
            float(minute * MINUTE),
            _monitors_of(engine, state.use_case),
            engine.planner,
            out,
        )


def _monitors_of(engine: Engine, use_case: str) -> Callable[[Policy], list[Monitor]]:
    """Build ``use_case``'s monitors for a (tuned) policy with the engine's factory."""

    def build(policy: Policy) -> list[Monitor]:
        return engine.monitor_factory(use_case, policy, engine.prices)

    return build


def tuned_sensitivities(engine: Engine) -> dict[tuple[str, str], float]:
    """(use case, kind) -> sensitivity, for every kind operators' false alarms tuned."""
    return {
        (name, kind): state.sensitivity(kind)
        for name, state in sorted(engine.use_cases.items())
        for kind in sorted(state.feedback.false_alarms)
    }
