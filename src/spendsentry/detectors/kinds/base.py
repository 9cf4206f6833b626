"""What an alert kind is: a monitor built from a policy and the price book, and its tuning.

Every kind (one module each in this package, listed in
:mod:`spendsentry.detectors.registry`) subclasses :class:`Kind`:
:meth:`Kind.build` reads the policy through :class:`Tuning` (the one place
that decides what a detector setting and the use case's tier mean for
thresholds), and :meth:`Kind.observe` turns closed minutes into findings that
carry the kind's own sentence. The highest severity a use case may get is the
policy's (:attr:`~spendsentry.policy.Policy.max_severity`); the engine applies
it to every finding, once.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from spendsentry.alerts import Finding, severity_rank
from spendsentry.detectors.base import Monitor, UseCaseContext
from spendsentry.windows import MinuteSignals

if TYPE_CHECKING:
    from typing import Self

    from spendsentry.policy import Policy
    from spendsentry.pricing import PriceBook

#: The tier whose use cases change on purpose (see :class:`Tuning`).
EXPERIMENT = "experiment"

#: The kinds that measure spend itself (its rate, a budget, its price per
#: outcome) rather than a behaviour: any behaviour that costs more explains
#: them, and they explain nothing (between two of them, the first to fire is
#: named the cause of an incident).
SPEND: tuple[str, ...] = ("cost_spike", "budget_burn", "cost_per_outcome")


@dataclass(frozen=True, slots=True)
class Tuning:
    """What a policy asks of one kind: how sensitive, and which windows it may use.

    Experiments are erratic by design: half as sensitive; their prompts and
    outcomes shift on purpose for hours at a time, so no long windows (which
    exist to catch exactly such sustained moderate shifts); and they change
    volume on purpose, so no volume alerts (budgets only once spent).

    >>> from spendsentry.policy import Policy
    >>> Tuning.of(Policy("lab", tier="experiment"), "cost_spike")
    Tuning(sensitivity=0.5, long_windows=False, volume=False)
    >>> Tuning.of(Policy("chat"), "cost_spike").ratio(3.0)
    3.0
    """

    #: The detector's sensitivity (2.0 = twice as sensitive), tier included.
    sensitivity: float
    #: Whether sustained-shift (long) windows are judged.
    long_windows: bool
    #: Whether changes of volume (spend rate) may alert.
    volume: bool

    @classmethod
    def of(cls, policy: Policy, kind: str) -> Tuning | None:
        """The tuning of ``kind`` for ``policy``; None when the policy disables it."""
        setting = policy.detector(kind)
        if not setting.enabled:
            return None
        experiment = policy.tier == EXPERIMENT
        return cls(
            sensitivity=setting.sensitivity * (0.5 if experiment else 1.0),
            long_windows=not experiment,
            volume=not experiment,
        )

    def ratio(self, base: float) -> float:
        """Scale a ratio threshold's excess over 1 by 1/sensitivity."""
        return 1.0 + (base - 1.0) / self.sensitivity

    def z(self, base: float) -> float:
        """Scale a z threshold by 1/sqrt(sensitivity)."""
        return base / math.sqrt(self.sensitivity)


class Kind(ABC):
    """One alert kind: a per-use-case monitor with its own sentence.

    Subclasses set :attr:`kind` and implement :meth:`build` and
    :meth:`observe`; the registry finds them by name.
    """

    #: The alert kind (``Finding.kind``; the registry's key).
    kind: str
    #: The kinds whose metric this kind's anomaly moves by itself: when they
    #: fire together on a use case, this one is the incident's root cause and
    #: they are its symptoms (:mod:`spendsentry.incidents`). Nothing by default.
    explains: tuple[str, ...] = ()

    @classmethod
    @abstractmethod
    def build(cls, policy: Policy, prices: PriceBook) -> Self | None:
        """The monitor for a use case with ``policy``; None when the policy disables it."""

    @abstractmethod
    def observe(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        """Learn from one closed minute; return a Finding when it is anomalous."""

    def accept_level(self, ctx: UseCaseContext) -> None:
        """Operator feedback (``expected_change``): the current level is normal now.

        By default every statistic the kind holds that can (``rebase()``: its
        detectors, its :class:`~spendsentry.detectors.base.Persistence`) takes the
        last window as its baseline and forgets its streak. A kind whose bar is
        not learned (a budget, a target, a one-off finding) keeps it: the
        incident still resolves, and fires again only on a new finding.
        """
        rebase_all(self)


def rebase_all(obj: object) -> None:
    """Call ``rebase()`` on each attribute of ``obj`` that has one (lenses: their own
    :meth:`Kind.accept_level`, or the same default)."""
    for value in list(getattr(obj, "__dict__", {}).values()):
        rebase = getattr(value, "rebase", None)
        if callable(rebase):
            rebase()


class Composite(Kind):
    """A kind judged through several lenses; the strongest finding of the minute wins.

    Every lens sees every minute (they all learn); ties go to the first.
    """

    def __init__(self, lenses: Sequence[Monitor]) -> None:
        self.monitors = list(lenses)

    def accept_level(self, ctx: UseCaseContext) -> None:
        for lens in self.monitors:
            accept = getattr(lens, "accept_level", None)
            if callable(accept):
                accept(ctx)
            else:
                rebase_all(lens)

    def observe(self, signals: MinuteSignals, ctx: UseCaseContext) -> Finding | None:
        found = [f for m in self.monitors if (f := m.observe(signals, ctx)) is not None]
        if not found:
            return None
        return max(found, key=lambda f: (severity_rank(f.severity), f.score))
