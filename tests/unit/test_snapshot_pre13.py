"""A worker snapshot written before issue 13 still restores, and keeps detecting.

``tests/fixtures/engine_snapshot_pre13.pickle.gz`` is an engine pickled by the
code before the alert kinds became classes (``RatioMonitor``, ``AnyOf``,
``BudgetBurnMonitor``, ... and the module functions they held). Restored with
today's code it must carry on exactly like an engine that never stopped, for
the kinds it had; kinds added since (``cache_regression``,
``shared_embedding_duplication``) are built by the restoring engine and start
learning at the restore, so their alerts may differ from a run that saw the
whole day.
"""

from __future__ import annotations

import gzip
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from spendsentry.detectors.kinds.base import Kind
from spendsentry.engine import Engine
from spendsentry.policy import PolicySet
from spendsentry.worker.pipeline import Pipeline
from spendsentry.worker.state import unpack_state

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _fixture_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_engine_snapshot", FIXTURES / "make_engine_snapshot.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


snap = _fixture_module()


def _run(engine: Engine, events: list, *, flush: bool) -> list[dict]:
    alerts = []
    for batch in snap.batches(events):
        out = engine.process(batch)
        out.extend(engine.advance())
        alerts += [a.to_dict() for a in out.alerts]
    if flush:
        alerts += [a.to_dict() for a in engine.flush().alerts]
    return alerts


@pytest.fixture(scope="module")
def halves(tmp_path_factory) -> tuple[list, list]:
    events = snap.scenario_events(tmp_path_factory.mktemp("scenario"))
    return snap.split(events, events[0].ts)


def _restored() -> Engine:
    # As a worker restores: into an engine built from this process's policies.
    pipeline = Pipeline(Engine(PolicySet.load(snap.ROOT / "streams" / "policies")))
    pipeline.restore_state(unpack_state(gzip.decompress(snap.SNAPSHOT.read_bytes())), now=0.0)
    return pipeline.engine


def test_the_old_monitors_restore_as_the_kinds() -> None:
    engine = _restored()
    monitors = [m for state in engine.use_cases.values() for m in state.monitors]
    assert monitors and all(isinstance(m, Kind) for m in monitors)
    assert {type(m).__module__.rsplit(".", 1)[0] for m in monitors} == {
        "spendsentry.detectors.kinds"
    }


#: The sentence a summary ends with about what drives the spend.
_DRIVER = re.compile(r" (\d+% of the excess is |No single model, agent, tool or session ).*$")


def _old_kinds(alerts: list[dict]) -> list[dict]:
    """The fixture's kinds, without what drives the spend: a pickle from before it
    learned that has none to restore, so it learns it afresh from the restore on (and
    the scope a throttle takes follows the drivers: the action's kind is compared, not
    its command's id)."""
    return [
        {
            **{k: v for k, v in a.items() if k != "drivers"},
            "summary": _DRIVER.sub("", a["summary"]),
            "action": {k: v for k, v in (a.get("action") or {}).items() if k != "command_id"},
        }
        for a in alerts
        if a["kind"] in snap.FIXTURE_KINDS
    ]


def test_a_restored_engine_detects_like_one_that_never_stopped(halves) -> None:
    before, after = halves
    fresh = Engine(PolicySet.load(snap.ROOT / "streams" / "policies"))
    _run(fresh, before, flush=False)
    expected = _run(fresh, after, flush=True)
    assert len({a["kind"] for a in expected if a["status"] == "firing"}) >= 5
    restored = _restored()
    # Every use case has the monitors this process's policies give it, the
    # kinds added since the fixture included (learning from the restore on).
    assert {n: [m.kind for m in s.monitors] for n, s in restored.use_cases.items()} == {
        n: [m.kind for m in s.monitors] for n, s in fresh.use_cases.items()
    }
    new = {m.kind for s in restored.use_cases.values() for m in s.monitors}
    # (unowned_spend is not among them: every use case here has a policy of its own.)
    assert new - set(snap.FIXTURE_KINDS) == {
        "cache_regression",
        "shared_embedding_duplication",
        "new_model",
        "budget_threshold",
    }
    got = _run(restored, after, flush=True)
    # Cost per outcome learns differently since this fixture was written (the
    # cost of minutes without an outcome now counts toward the next, and the
    # outcome-drop lens is new): its restored baseline is the old one, so its
    # alerts may differ in timing; it must still report on the use cases it did.
    relearned = {"cost_per_outcome"}
    assert [a for a in _old_kinds(got) if a["kind"] not in relearned] == [
        a for a in _old_kinds(expected) if a["kind"] not in relearned
    ]

    def incidents(alerts: list[dict]) -> set[str]:
        return {a["use_case"] for a in alerts if a["kind"] in relearned}

    assert incidents(got) == incidents(expected) != set()
