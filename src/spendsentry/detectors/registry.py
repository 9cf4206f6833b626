"""The one list of alert kinds, and how the engine gets a use case's monitors from it.

Registering a kind is adding its name to :data:`KINDS` and writing
``spendsentry/detectors/kinds/<name>.py`` with the class named after it
(``prompt_inflation`` -> ``PromptInflation``), a subclass of
:class:`~spendsentry.detectors.kinds.base.Kind`. The list of alert kinds
(:data:`spendsentry.alerts.ALERT_KINDS`, which policies, the schemas and Slack
check against), the engine's monitors (:func:`build_monitors`) and the
conformance suite (``tests/unit/test_detector_conformance.py``) all read it,
so a new kind is validated, run and tested the moment it is listed here.

Classes are imported on first use: reading the list (a policy, a Slack
click) does not load River.

>>> kind_class("prompt_inflation").__name__
'PromptInflation'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spendsentry.detectors.base import Monitor
    from spendsentry.detectors.kinds.base import Kind
    from spendsentry.policy import Policy
    from spendsentry.pricing import PriceBook

#: Every alert kind, in the order the schemas and documents list them.
KINDS: tuple[str, ...] = (
    "prompt_inflation",
    "agent_chatter",
    "fallback_drift",
    "retrieval_amplification",
    "cost_spike",
    "budget_burn",
    "budget_threshold",
    "cost_per_outcome",
    "embedding_duplication",
    "model_oversizing",
    "cache_regression",
    "shared_embedding_duplication",
    "unowned_spend",
    "new_model",
)

#: The order a use case's monitors see each closed minute, which is the order
#: of their alerts within a minute (kinds not listed come last, in
#: :data:`KINDS` order). Changing it changes the alert stream. ``unowned_spend``
#: comes first: a new use case nobody owns is what its incident is about, even
#: when the fleet lenses of prompt_inflation and cost_spike see it in the same
#: minute (the first kind of a minute names the root cause).
EVALUATION_ORDER: tuple[str, ...] = (
    "unowned_spend",
    "prompt_inflation",
    "retrieval_amplification",
    "fallback_drift",
    "cost_per_outcome",
    "embedding_duplication",
    "shared_embedding_duplication",
    "model_oversizing",
    "cache_regression",
    "cost_spike",
    "agent_chatter",
    "budget_burn",
    "budget_threshold",
    "new_model",
)


def class_name(kind: str) -> str:
    """The class name of a kind: ``"cost_spike"`` -> ``"CostSpike"``."""
    return "".join(part.capitalize() for part in kind.split("_"))


def kind_class(kind: str) -> type[Kind]:
    """The class of a registered kind.

    Raises ``KeyError`` for a name that is not registered.
    """
    if kind not in KINDS:
        raise KeyError(f"unknown alert kind {kind!r}")
    module = importlib.import_module(f"spendsentry.detectors.kinds.{kind}")
    cls: type[Kind] = getattr(module, class_name(kind))
    return cls


def _position(kind: str) -> int:
    return EVALUATION_ORDER.index(kind) if kind in EVALUATION_ORDER else len(EVALUATION_ORDER)


def build_monitors(use_case: str, policy: Policy, prices: PriceBook | None = None) -> list[Monitor]:
    """The monitors for one use case: every registered kind its policy enables.

    ``prices`` is the engine's price book (without one: the catalogue alone).
    """
    if prices is None:
        from spendsentry.pricing import PriceBook

        prices = PriceBook()
    monitors: list[Monitor] = []
    for kind in sorted(KINDS, key=_position):
        monitor = kind_class(kind).build(policy, prices)
        if monitor is not None:
            monitors.append(monitor)
    return monitors
