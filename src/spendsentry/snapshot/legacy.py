"""Reads the pickled snapshots of version 2 and older, and converts them to today's state.

Until version 3 a worker pickled its live engine. Such a snapshot is read here
by a restricted unpickler (only spendsentry's classes, River's statistics and
the few builtins they use; anything else is refused), which maps the names the
old code pickled onto converting stand-ins, so that no live class carries
shims for old pickles:

* configuration (policies, price book, engine config, model sizes) is read
  into :class:`_Discarded`: the restoring process has its own;
* ``Engine``, ``EventClock``, ``EventIdIndex``, ``MinuteBucket``, ``MinuteSignals``,
  ``ThrottlePlanner`` and ``UseCaseState`` get the upgrades older layouts need;
* the monitors of before issue 13 (``RatioMonitor``, ``AnyOf``,
  ``BudgetBurnMonitor``, ... and the functions they held) become the kinds.

The result goes through the same codecs as a live engine
(:func:`~spendsentry.snapshot.engine.dump_engine`), so a converted snapshot
restores exactly like a version-3 one.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import math
import pickle
from abc import ABC
from array import array
from typing import Any

from spendsentry.actions.commands import MAX_VERSION
from spendsentry.actions.planner import ThrottlePlanner
from spendsentry.actions.scopes import ScopeBook
from spendsentry.clock import EventClock
from spendsentry.dedupe import EventIdIndex
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
from spendsentry.engine import Engine, UseCaseState
from spendsentry.shared_content import SharedContentIndex
from spendsentry.snapshot.engine import dump_engine
from spendsentry.snapshot.fields import Fields, SnapshotError
from spendsentry.snapshot.pipeline import dump_counters
from spendsentry.windows import MinuteBucket, MinuteSignals
from spendsentry.worker.metrics import PartitionCounters

#: The layout versions of pickled snapshots this module reads.
VERSIONS = (2,)


class _Discarded:
    """Configuration an old snapshot pickled; the restoring process has its own."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass


class _Engine(Engine):
    """An engine pickled before it had its own clock kept ``max_ts``, or before
    its cross-use-case content index (all pickles): an empty index, which
    learns from the restore on, as a fresh engine's would."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "clock" not in state:
            clock = self.clock = EventClock(math.inf, 3_600.0)
            newest = state.get("max_ts", -math.inf)
            if newest > -math.inf:
                clock.max_ts[self.STREAM] = newest
        if "shared_content" not in state:
            self.shared_content = SharedContentIndex()


class _MinuteBucket(MinuteBucket):
    """An open minute pickled before embeddings' cost was kept apart: 0 (unknown),
    and before callers were counted: none."""

    __slots__ = ()

    def __setstate__(self, state: tuple[Any, dict[str, Any]]) -> None:
        _, slots = state
        self.embedding_cost = 0
        self.callers = {}
        for name, value in slots.items():
            setattr(self, name, value)


#: The fields of a pickled MinuteSignals, in their order then: a slotted
#: dataclass pickles its values by position, and fields were added since.
_PICKLED_SIGNALS = (
    "use_case",
    "minute",
    "llm_calls",
    "tool_calls",
    "retrievals",
    "embeddings",
    "input_tokens",
    "llm_input_tokens",
    "llm_log_input",
    "output_tokens",
    "cost",
    "unpriced",
    "fallback_calls",
    "rerouted_calls",
    "models",
    "retrieval_requests",
    "embedding_duplicates",
    "outcomes",
    "active_sessions",
    "max_session_calls",
    "max_session_id",
    "session_call_counts",
    "ended_session_calls",
)


class _MinuteSignals(MinuteSignals):
    """A closed minute pickled in the layout of :data:`_PICKLED_SIGNALS`; the
    fields added since take their defaults."""

    __slots__ = ()

    def __setstate__(self, state: list[Any]) -> None:
        if len(state) != len(_PICKLED_SIGNALS):
            raise SnapshotError(f"a pickled minute of {len(state)} fields, not a known layout")
        values = dict(zip(_PICKLED_SIGNALS, state, strict=True))
        for f in dataclasses.fields(MinuteSignals):
            if f.name in values:
                value = values[f.name]
            elif f.default is dataclasses.MISSING:
                value = f.default_factory()  # type: ignore[operator]
            else:
                value = f.default
            object.__setattr__(self, f.name, value)


class _EventClock(EventClock):
    """Clocks pickled before jump confirmation existed (``PartitionWatermarks``)."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("candidates", {})


class _EventIdIndex(EventIdIndex):
    """The id index as pickled: hashes per minute as bytes, or (oldest) the ids themselves."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "_minutes" in state:  # pickled as plain attributes (tests pickle today's objects)
            self.__dict__.update(state)
            return
        EventIdIndex.__init__(self, state["max_ids"])
        self.evicted = state["evicted"]
        if "_ids" in state:
            for event_id, minute in state["_ids"].items():
                self.seen(event_id, minute)
            return
        for minute, raw in state["minutes"].items():
            bucket = self._minutes[minute] = array("Q")
            bucket.frombytes(raw)
            self._hashes.update(bucket)


class _ThrottlePlanner(ThrottlePlanner):
    """A planner from before versions were bounded may hold a forged version
    (2^64 made the next command unserializable): the scope is forgotten."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        if "scopes" not in state:
            # Version-2 planners held their scopes themselves; a ScopeBook does now.
            book = ScopeBook(state.pop("max_scopes", 50_000))
            book.states = state.pop("_scopes", {})
            book.issued = state.pop("issued", 0)
            book.ignored_versions = state.pop("ignored_versions", 0)
            state["scopes"] = book
        self.__dict__.update(state)
        book = self.scopes
        for key in [k for k, s in book.states.items() if not 0 <= s.version <= MAX_VERSION]:
            del book.states[key]
            book.ignored_versions += 1


class _CostSpike(CostSpike):
    """A cost-spike monitor pickled before its second (geometric) lens existed."""

    shift = None
    shift_persistence = Persistence(6)


class _UseCaseState(UseCaseState):
    """Use cases pickled before they started at their first event, or before dormancy."""

    observing = True
    last_data_minute = None


# -- monitors pickled before issue 13 (one class per kind) ---------------------

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
_COMPOSITES: dict[str, type[Kind]] = {
    "fallback_drift": FallbackDrift,
    "cost_per_outcome": CostPerOutcome,
}


def _become(obj: object, cls: type, state: dict[str, Any]) -> None:
    # Same layout (see _Pickled), so the instance can take the new class in
    # place: pickle has already handed it to its container.
    obj.__class__ = cls
    obj.__dict__.update(state)


class _Pickled(ABC):  # noqa: B024 - abstract only for its layout
    """Base of the old names that convert: an ABC like Kind, so that CPython
    accepts the ``__class__`` assignment."""


class RatioMonitor(_Pickled):
    """An old ratio monitor: restores as the kind (or lens) its metric names."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        cls = _RATIO_CLASSES[(state.pop("kind"), state.pop("metric"))]
        for retired in ("unit", "extract", "describe"):
            state.pop(retired, None)
        _become(self, cls, state)


class AnyOf(_Pickled):
    """An old composite monitor: restores as the composite kind it held."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        _become(self, _COMPOSITES[state["kind"]], {"monitors": list(state["monitors"])})


class BudgetBurnMonitor(_Pickled):
    """An old budget-burn monitor: its statistics move into a BurnRateDetector."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        detector = BurnRateDetector.__new__(BurnRateDetector)
        for name in ("_ring", "_typical", "_peak", "_log_var", "_pending", "_streak", "_n"):
            setattr(detector, name, state[name])
        _become(self, BudgetBurn, {"detector": detector, "persistence": state["persistence"]})


#: Old (module, name) -> what it reads as now. Old functions resolve to a
#: placeholder the conversion drops.
_OLD_NAMES: dict[tuple[str, str], Any] = {
    ("spendsentry.detectors.monitors", "_Persistence"): Persistence,
    ("spendsentry.detectors.monitors", "CostSpikeMonitor"): _CostSpike,
    ("spendsentry.detectors.kinds.cost_spike", "CostSpike"): _CostSpike,
    ("spendsentry.detectors.monitors", "ChatterMonitor"): AgentChatter,
    ("spendsentry.detectors.monitors", "OutcomeTargetMonitor"): OutcomeTarget,
    ("spendsentry.detectors.monitors", "RatioMonitor"): RatioMonitor,
    ("spendsentry.detectors.monitors", "BudgetBurnMonitor"): BudgetBurnMonitor,
    ("spendsentry.detectors", "AnyOf"): AnyOf,
    ("spendsentry.detectors", "_Oversizing"): RatioMonitor,
    ("spendsentry.engine", "Engine"): _Engine,
    ("spendsentry.windows", "MinuteBucket"): _MinuteBucket,
    ("spendsentry.windows", "MinuteSignals"): _MinuteSignals,
    ("spendsentry.engine", "UseCaseState"): _UseCaseState,
    ("spendsentry.clock", "EventClock"): _EventClock,
    ("spendsentry.worker.pipeline", "PartitionWatermarks"): _EventClock,
    ("spendsentry.dedupe", "EventIdIndex"): _EventIdIndex,
    ("spendsentry.actions.planner", "ThrottlePlanner"): _ThrottlePlanner,
}
#: Configuration classes, and the functions old monitors held (all dropped).
_DISCARDED_MODULES = ("spendsentry.policy", "spendsentry.pricing", "spendsentry.detectors.sizing")
_DISCARDED = {("spendsentry.engine", "EngineConfig")}
_BUILTINS = {
    ("collections", "OrderedDict"),
    ("collections", "deque"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("array", "array"),
    ("array", "_array_reconstructor"),
}


class _Unpickler(pickle.Unpickler):
    """Resolves only spendsentry's names, River's statistics and a few builtins."""

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in _OLD_NAMES:
            return _OLD_NAMES[key]
        if module in _DISCARDED_MODULES or key in _DISCARDED:
            return _Discarded
        if module in ("spendsentry.detectors.monitors", "spendsentry.detectors") and name.islower():
            return _Discarded  # a metric or sentence function an old monitor held
        if key in _BUILTINS or module.startswith(
            ("spendsentry.", "river.stats", "river._river_rust.stats")
        ):
            return getattr(importlib.import_module(module), name)
        raise SnapshotError(f"the pickled snapshot refers to {module}.{name}, which is not allowed")


def read_pickle(payload: bytes) -> dict[str, Any]:
    """A version-2 (or older) pickled pipeline state, converted to :func:`read_state`'s shape.

    Raises
    ------
    SnapshotError
        Not a snapshot pickle, a refused name, or a layout version this code does not read.
    """
    try:
        doc = _Unpickler(io.BytesIO(payload)).load()
    except SnapshotError:
        raise
    except Exception as exc:  # pickle raises almost anything on bad bytes
        raise SnapshotError(f"cannot read the pickled snapshot: {exc}") from None
    version = doc.get("version") if isinstance(doc, dict) else None
    if version not in VERSIONS:
        raise SnapshotError(
            f"pickled snapshot layout version {version!r}, expected one of {VERSIONS}"
        )
    state = doc.get("state")
    if not isinstance(state, dict) or not isinstance(state.get("engine"), Engine):
        raise SnapshotError("the pickled snapshot holds no engine")
    return convert(state)


def convert(state: dict[str, Any]) -> dict[str, Any]:
    """An unpickled version-2 state, as :func:`~spendsentry.snapshot.pipeline.read_state` gives."""
    engine = state["engine"]
    if "closing_started" not in vars(engine):  # from before the engine owned it
        engine.closing_started = bool(state.get("closing_started", False))
    counters = state.get("counters")
    if not isinstance(counters, PartitionCounters):
        # From before the counters were part of the state: the engine's totals.
        counters = PartitionCounters.from_totals(
            engine.stats.use_cases, 50, duplicates=engine.stats.duplicates
        )
        counters.records = int(state.get("records", 0))
    out: dict[str, Any] = {
        "partition": state.get("partition"),
        "offsets": dict(state.get("offsets") or {}),
        "control_offsets": dict(state.get("control_offsets") or {}),
        "watermarks": dict(state.get("watermarks") or {}),
        "published": list(state.get("published") or ()),
        "records": int(state.get("records", 0)),
        "counters": Fields(dump_counters(counters), "$.counters"),
        "engine": Fields(dump_engine(engine), "$.engine"),
    }
    if "alerts_offsets" in state:
        out["alerts_offsets"] = {int(n): int(o) for n, o in state["alerts_offsets"].items()}
    return out
