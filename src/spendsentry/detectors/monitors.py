"""Names monitors were pickled under before issue 13; they restore as the per-kind classes.

Worker snapshots pickle the engine with its monitors. A snapshot written
before the alert kinds became classes names ``RatioMonitor``,
``CostSpikeMonitor``, ... of this module, ``AnyOf`` and ``_Oversizing`` of
:mod:`spendsentry.detectors`, and the module functions a ``RatioMonitor`` kept
as its metric and sentence. Each resolves here: the classes whose state is
unchanged are aliases, the others turn their old state into the new class's
on unpickling (``__setstate__``), and the old functions resolve to a
placeholder the conversion drops. The price-aware lenses of such a monitor get
the catalogue's prices, as before; monitors built afresh get the engine's.
"""

from __future__ import annotations

from abc import ABC
from typing import Any

from spendsentry.detectors.base import Persistence
from spendsentry.detectors.burn import BurnRateDetector
from spendsentry.detectors.kinds.agent_chatter import AgentChatter
from spendsentry.detectors.kinds.base import Kind
from spendsentry.detectors.kinds.budget_burn import BudgetBurn
from spendsentry.detectors.kinds.cost_per_outcome import (
    CostPerOutcome,
    OutcomeTarget,
    UsualCostPerOutcome,
)
from spendsentry.detectors.kinds.cost_spike import CostSpike
from spendsentry.detectors.kinds.embedding_duplication import EmbeddingDuplication
from spendsentry.detectors.kinds.fallback_drift import (
    FallbackDrift,
    FlaggedFallback,
    SilentFallback,
)
from spendsentry.detectors.kinds.model_oversizing import ModelOversizing
from spendsentry.detectors.kinds.prompt_inflation import PromptInflation
from spendsentry.detectors.kinds.retrieval_amplification import RetrievalAmplification
from spendsentry.detectors.sizing import ModelSizes
from spendsentry.pricing import PriceBook

# Unchanged state: the old names are the new classes.
_Persistence = Persistence
CostSpikeMonitor = CostSpike
ChatterMonitor = AgentChatter
OutcomeTargetMonitor = OutcomeTarget

#: (kind, metric) of an old RatioMonitor -> its class now.
_RATIO_CLASSES: dict[tuple[str, str], type[Kind]] = {
    (c.kind, c.metric): c
    for c in (
        PromptInflation,
        RetrievalAmplification,
        FlaggedFallback,
        SilentFallback,
        UsualCostPerOutcome,
        EmbeddingDuplication,
        ModelOversizing,
    )
}
#: kind of an old AnyOf -> its class now.
_COMPOSITES: dict[str, type[Kind]] = {
    "fallback_drift": FallbackDrift,
    "cost_per_outcome": CostPerOutcome,
}
#: The catalogue's prices, for price-aware lenses restored from old snapshots.
_CATALOGUE = ModelSizes(PriceBook())


def _become(obj: object, cls: type, state: dict[str, Any]) -> None:
    # Same layout (see _Pickled), so the instance can take the new class in
    # place: pickle has already handed it to its container.
    obj.__class__ = cls
    obj.__dict__.update(state)


class _Pickled(ABC):  # noqa: B024 - abstract only for its layout
    """Base of the old names that convert: an ABC like Kind, so that CPython
    accepts the ``__class__`` assignment (an ABC's empty ``__slots__`` makes
    its subclasses' layout differ from a plain class's)."""


class RatioMonitor(_Pickled):
    """An old ratio monitor: restores as the kind (or lens) its metric names."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        cls = _RATIO_CLASSES[(state.pop("kind"), state.pop("metric"))]
        for retired in ("unit", "extract", "describe"):
            state.pop(retired, None)
        if cls in (SilentFallback, ModelOversizing):
            state["sizes"] = _CATALOGUE
        _become(self, cls, state)


class _Oversizing(RatioMonitor):
    """An old model-oversizing monitor (a RatioMonitor subclass)."""


class AnyOf(_Pickled):
    """An old composite monitor: restores as the composite kind it held."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        _become(self, _COMPOSITES[state.pop("kind")], {"monitors": list(state["monitors"])})


class BudgetBurnMonitor(_Pickled):
    """An old budget-burn monitor: its statistics move into a BurnRateDetector."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        detector = BurnRateDetector.__new__(BurnRateDetector)
        for name in ("window", "peak_ratio", "warmup", "_ring", "_typical", "_peak"):
            setattr(detector, name, state[name])
        for name in ("_log_var", "_pending", "_streak", "_n"):
            setattr(detector, name, state[name])
        # Without projections a rate was never abnormal: an infinite bar says the same.
        detector.abnormal_ratio = state["abnormal_ratio"] if state["projections"] else float("inf")
        _become(self, BudgetBurn, {"detector": detector, "persistence": state["persistence"]})


def _retired(*args: object) -> object:
    """What an old monitor's metric and sentence functions resolve to (dropped on load)."""
    raise RuntimeError("a function of a monitor pickled before issue 13 was called")


# The module functions old RatioMonitors kept (here and in spendsentry.detectors).
log_input_tokens_per_call = retrievals_per_request = fallback_share = _retired
cost_per_outcome = duplicate_share = price_tier = small_calls_on_large_models = _retired
input_tokens_per_call = cost_per_mtok = _retired
describe_prompt_inflation = describe_retrieval_amplification = _retired
describe_fallback_flagged = describe_fallback_silent = describe_cost_per_outcome = _retired
describe_embedding_duplication = describe_oversizing = _retired

#: What ``spendsentry.detectors.<name>`` resolved to in old snapshots.
PACKAGE_NAMES = frozenset(
    {
        "AnyOf",
        "_Oversizing",
        "describe_prompt_inflation",
        "describe_retrieval_amplification",
        "describe_fallback_flagged",
        "describe_fallback_silent",
        "describe_cost_per_outcome",
        "describe_embedding_duplication",
        "describe_oversizing",
    }
)
