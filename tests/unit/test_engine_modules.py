"""The engine's parts moved to their own modules and stay loadable under their old home."""

from __future__ import annotations

import pickle

import pytest

import spendsentry.engine as engine_module
from spendsentry import engine_stats, minutes, use_case
from spendsentry.engine import Engine
from spendsentry.events import UsageEvent


@pytest.mark.parametrize(
    ("name", "home"),
    [
        ("UseCaseState", use_case),
        ("evict_least_active", use_case),
        ("EngineStats", engine_stats),
        ("UseCaseTotals", engine_stats),
        ("OTHER_USE_CASES", engine_stats),
        ("evict_idle", minutes),
    ],
)
def test_old_names_are_the_new_objects(name: str, home: object) -> None:
    assert getattr(engine_module, name) is getattr(home, name)


def test_a_pickle_naming_the_old_module_restores() -> None:
    engine = Engine()
    engine.process([UsageEvent("e1", 600.0, "support", cost_usd=0.01)])
    moved = (use_case.UseCaseState, engine_stats.EngineStats, engine_stats.UseCaseTotals)
    homes = [cls.__module__ for cls in moved]
    try:
        # As written before the split: every class under spendsentry.engine.
        for cls in moved:
            cls.__module__ = "spendsentry.engine"
        data = pickle.dumps(engine)
    finally:
        for cls, home in zip(moved, homes, strict=True):
            cls.__module__ = home
    assert b"spendsentry.use_case" not in data and b"spendsentry.engine_stats" not in data
    restored = pickle.loads(data)
    assert isinstance(restored.use_cases["support"], use_case.UseCaseState)
    assert restored.stats.use_cases["support"].events == 1
    out = restored.flush()
    assert [(s.use_case, s.minute) for s in out.closed] == [("support", 10)]
