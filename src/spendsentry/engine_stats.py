"""The engine's counters: ``EngineStats`` over its life and ``UseCaseTotals`` per use case.

Both are pickled inside worker snapshots under their old home,
``spendsentry.engine`` (which re-exports them), so old snapshots still load.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from spendsentry.windows import NANO, RunTotals

#: Where per-use-case totals go once ``10 x max_use_cases`` names have totals.
OTHER_USE_CASES = "(other)"


@dataclass(slots=True)
class UseCaseTotals:
    """Running totals of one use case (the replay summary and the metrics)."""

    events: int = 0
    events_by_kind: dict[str, int] = field(default_factory=dict)
    input_tokens: int = 0
    output_tokens: int = 0
    #: Integer nano-USD, so totals do not depend on arrival order.
    cost_nano: int = 0
    outcomes: int = 0

    @property
    def cost_usd(self) -> float:
        return self.cost_nano / NANO

    def add_usages(self, events: int, added: RunTotals) -> None:
        """Count a run of ``events`` usage events that added ``added`` to a bucket.

        >>> t = UseCaseTotals()
        >>> t.add_usages(3, RunTotals({"llm_call": 2, "tool_call": 1}, 120, 40, 5_000))
        >>> t.add_outcomes(1)
        >>> t.events, t.events_by_kind, t.cost_nano, t.outcomes
        (4, {'llm_call': 2, 'tool_call': 1, 'outcome': 1}, 5000, 1)
        """
        self.events += events
        by_kind = self.events_by_kind
        for kind, n in added.calls_by_kind.items():
            by_kind[kind] = by_kind.get(kind, 0) + n
        self.input_tokens += added.input_tokens
        self.output_tokens += added.output_tokens
        self.cost_nano += added.cost_nano

    def add_outcomes(self, n: int) -> None:
        """Count ``n`` outcome events."""
        self.events += n
        self.events_by_kind["outcome"] = self.events_by_kind.get("outcome", 0) + n
        self.outcomes += n

    def to_dict(self) -> dict[str, object]:
        return {
            "events": self.events,
            "events_by_kind": dict(sorted(self.events_by_kind.items())),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 6),
            "outcomes": self.outcomes,
        }


@dataclass(slots=True)
class EngineStats:
    """Counters over the engine's life (not reset by closing minutes)."""

    accepted: int = 0
    duplicates: int = 0
    late: int = 0
    unpriced: int = 0
    unpriced_models: dict[str, int] = field(default_factory=dict)
    use_cases: dict[str, UseCaseTotals] = field(default_factory=dict)
    alerts: dict[str, int] = field(default_factory=dict)
    evicted_use_cases: int = 0
    evicted_sessions: int = 0
    evicted_dedupe_ids: int = 0

    def count_unpriced(self, model: str | None, max_models: int) -> None:
        """Count an event no price is known for, by model (bounded: names come from producers).

        >>> stats = EngineStats()
        >>> for model in ("a", "b", "c", None):
        ...     stats.count_unpriced(model, max_models=2)
        >>> stats.unpriced, stats.unpriced_models
        (4, {'a': 1, 'b': 1, '(other)': 2})
        """
        self.unpriced += 1
        name = model or "(no model)"
        unpriced = self.unpriced_models
        if name not in unpriced and len(unpriced) >= max_models:
            name = OTHER_USE_CASES
        unpriced[name] = unpriced.get(name, 0) + 1


__all__ = ["OTHER_USE_CASES", "EngineStats", "UseCaseTotals"]
