"""The running values of every detector and alert kind, and loading them into fresh ones.

A use case's monitors are rebuilt from the current policy and price book
(:func:`~spendsentry.detectors.registry.build_monitors`); a snapshot holds only
what they learned. :data:`RUNNING` lists, per class, the attributes that are
learned (everything else is a parameter the constructor sets), each with the
codec of its value. A kind's class is found by its registered name and a
composite's lenses by their class name, so the module a class lives in never
appears in a snapshot.

>>> from spendsentry.detectors.registry import kind_class
>>> from spendsentry.policy import Policy
>>> from spendsentry.pricing import PriceBook
>>> spike = kind_class("cost_spike").build(Policy("chat"), PriceBook())
>>> state = dump_monitor(spike)
>>> state["kind"], sorted(state["lenses"]["CostSpike"])
('cost_spike', ['detector', 'persistence', 'prior', 'shift', 'shift_persistence'])
>>> fresh = kind_class("cost_spike").build(Policy("chat"), PriceBook())
>>> load_monitor(fresh, Fields(state, "$")) is None
True
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from spendsentry.detectors.base import Persistence
from spendsentry.detectors.burn import BurnRateDetector
from spendsentry.detectors.fleet_prior import FleetLens
from spendsentry.detectors.kinds.agent_chatter import AgentChatter
from spendsentry.detectors.kinds.base import Composite
from spendsentry.detectors.kinds.budget_burn import BudgetBurn
from spendsentry.detectors.kinds.budget_threshold import BudgetThreshold
from spendsentry.detectors.kinds.cache_regression import CacheRegression
from spendsentry.detectors.kinds.cost_per_outcome import OutcomeDrop, OutcomeTarget
from spendsentry.detectors.kinds.cost_spike import CostSpike
from spendsentry.detectors.kinds.new_model import NewModel
from spendsentry.detectors.kinds.prompt_inflation import PromptInflation
from spendsentry.detectors.kinds.ratio import RatioKind
from spendsentry.detectors.kinds.shared_embedding_duplication import SharedEmbeddingDuplication
from spendsentry.detectors.kinds.unowned_spend import UnownedSpend
from spendsentry.detectors.outcomes import OutcomeDropDetector
from spendsentry.detectors.seasonal import DailyProfile
from spendsentry.detectors.sessions import SessionLengthDetector
from spendsentry.detectors.shift import LogRateShiftDetector, RateSpikeDetector, RatioShiftDetector
from spendsentry.snapshot import river
from spendsentry.snapshot.fields import NUMBER, OPTIONAL_NUMBER, Fields, SnapshotError

Dump = Callable[[Any], Any]
#: (fresh value, its state, field) -> the value to set, or KEEP (loaded in place).
Load = Callable[[Any, Fields, str], Any]
#: What a loader that filled the fresh value in place returns.
KEEP: Any = object()


def _scalar(types: tuple[type, ...], what: str) -> tuple[Dump, Load]:
    def load(_: Any, f: Fields, name: str) -> Any:
        value = f.raw(name)
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise f.fail(name, f"expected {what}, got {type(value).__name__}")
        return value

    return (lambda v: v), load


def _ring(width: int, cell: tuple[type, ...]) -> tuple[Dump, Load]:
    """A deque of numbers (width 1) or of fixed-width tuples; the fresh deque keeps its maxlen."""

    if width == 1:

        def dump(d: deque[Any]) -> Any:
            return list(d)

        def load(fresh: deque[Any], f: Fields, name: str) -> Any:
            fresh.extend(f.list(name, cell))
            return KEEP

    else:

        def dump(d: deque[Any]) -> Any:
            return [list(t) for t in d]

        def load(fresh: deque[Any], f: Fields, name: str) -> Any:
            fresh.extend(tuple(row) for row in f.rows(name, *([cell] * width)))
            return KEEP

    return dump, load


def _ring_of_counts() -> tuple[Dump, Load]:
    """A deque of ``{name: int}`` maps (a kind's per-model tokens of recent minutes)."""

    def dump(d: deque[dict[str, int]]) -> Any:
        return [dict(m) for m in d]

    def load(fresh: deque[dict[str, int]], f: Fields, name: str) -> Any:
        for i, row in enumerate(f.list(name, dict)):
            for key, value in row.items():
                if not isinstance(key, str) or type(value) is not int:
                    raise f.fail(f"{name}[{i}]", f"expected a map of str to int, has {key!r}")
            fresh.append(row)
        return KEEP

    return dump, load


def _river(
    dump: Callable[[Any], dict[str, Any]], load: Callable[[Any, Fields], None]
) -> tuple[Dump, Load]:
    def loader(fresh: Any, f: Fields, name: str) -> Any:
        load(fresh, f.child(name))
        return KEEP

    return dump, loader


def _nested() -> tuple[Dump, Load]:
    """An object with running values of its own (a detector inside a kind)."""

    def loader(fresh: Any, f: Fields, name: str) -> Any:
        load_running(fresh, f.child(name))
        return KEEP

    return (lambda v: dump_running(v)), loader


def _optional_nested() -> tuple[Dump, Load]:
    def dump(v: Any) -> Any:
        return None if v is None else dump_running(v)

    def loader(fresh: Any, f: Fields, name: str) -> Any:
        if f.raw(name) is not None and fresh is not None:
            load_running(fresh, f.child(name))
        return KEEP

    return dump, loader


class _Added(tuple):
    """A codec of an attribute added after version 3 was first written: absent from
    older snapshots (and from objects converted from older pickles), it keeps the
    fresh object's value, which is what a new attribute learns from."""


def added(codec: tuple[Dump, Load]) -> tuple[Dump, Load]:
    """Mark ``codec`` as that of an attribute older snapshots lack (see :class:`_Added`)."""
    dump, load = codec

    def loader(fresh: Any, f: Fields, name: str) -> Any:
        return load(fresh, f, name) if name in f.data else KEEP

    return _Added((dump, loader))


def _counts(value: tuple[type, ...]) -> tuple[Dump, Load]:
    """A ``{name: number}`` map (calls per caller, USD per model)."""

    def load(_: Any, f: Fields, name: str) -> Any:
        return f.map(name, str, value)

    return (lambda v: dict(v)), load


def _rows_by_name(width: int) -> tuple[Dump, Load]:
    """A ``{name: [number] * width}`` map (a kind's watched models)."""

    def load(_: Any, f: Fields, name: str) -> Any:
        rows = f.map(name, str, list)
        for key, row in rows.items():
            if len(row) != width or not all(isinstance(v, NUMBER) for v in row):
                raise f.fail(f"{name}[{key!r}]", f"expected {width} numbers")
        return {key: [float(v) for v in row] for key, row in rows.items()}

    return (lambda v: {k: list(row) for k, row in v.items()}), load


def _int_rows(width: int) -> tuple[Dump, Load]:
    """A ``{name: [int] * width}`` map (a budget period's start and thresholds fired)."""

    def load(_: Any, f: Fields, name: str) -> Any:
        rows = f.map(name, str, list)
        for key, row in rows.items():
            ok = all(isinstance(v, int) and not isinstance(v, bool) for v in row)
            if len(row) != width or not ok:
                raise f.fail(f"{name}[{key!r}]", f"expected {width} integers")
        return {key: list(row) for key, row in rows.items()}

    return (lambda v: {k: list(row) for k, row in v.items()}), load


def _named_rows() -> tuple[Dump, Load]:
    """A list of ``[name, number, number or nil]`` (new models for the status page)."""

    def load(_: Any, f: Fields, name: str) -> Any:
        rows = f.list(name, list)
        for i, row in enumerate(rows):
            ok = len(row) == 3 and isinstance(row[0], str) and isinstance(row[1], NUMBER)
            if not ok or not (row[2] is None or isinstance(row[2], NUMBER)):
                raise f.fail(f"{name}[{i}]", "expected [name, number, number or nil]")
        return [list(row) for row in rows]

    return (lambda v: [list(row) for row in v]), load


def _floats() -> tuple[Dump, Load]:
    def load(_: Any, f: Fields, name: str) -> Any:
        return [float(x) for x in f.list(name, NUMBER)]

    return (lambda v: list(v)), load


def _fleet_lens() -> tuple[Dump, Load]:
    """A kind's fleet lens (:mod:`spendsentry.detectors.fleet_prior`), or None.

    A snapshot without one was written before the lens existed (or with it
    turned off): the use case was running then, so its own baseline judges it,
    not the fleet (the lens starts warmed up).
    """

    def dump(v: Any) -> Any:
        return None if v is None else dump_running(v)

    def loader(fresh: Any, f: Fields, name: str) -> Any:
        if fresh is None:
            return KEEP
        if name in f.data and f.raw(name) is not None:
            load_running(fresh, f.child(name))
        else:
            fresh.warmed()
        return KEEP

    return _Added((dump, loader))


INT = _scalar((int,), "int")
FLOAT = _scalar(NUMBER, "float")
OPTIONAL_FLOAT = _scalar(OPTIONAL_NUMBER, "float or nil")
OPTIONAL_INT = _scalar((int, type(None)), "int or nil")
FLOATS = _floats()
BOOL = _scalar((bool,), "bool")
EWMEAN = _river(river.dump_ewmean, river.load_ewmean)
EWVAR = _river(river.dump_ewvar, river.load_ewvar)
MEAN = _river(river.dump_mean, river.load_mean)
QUANTILE = _river(river.dump_quantile, river.load_quantile)
ROLLING_QUANTILE = _river(river.dump_rolling_quantile, river.load_rolling_quantile)

#: What every ratio kind learned (a subclass adds its own on top).
_RATIO_KIND: dict[str, tuple[Dump, Load]] = {
    "detector": _nested(),
    "persistence": _nested(),
    "_num_level": EWMEAN,
    "_minutes": INT,
}

#: Per class: the learned attributes and their codecs. Every other attribute
#: is a parameter, set by the constructor from the policy (or code). A class
#: is looked up along its MRO, so a subclass with learned attributes of its own
#: needs its own entry (with its base's).
RUNNING: dict[type, dict[str, tuple[Dump, Load]]] = {
    Persistence: {"streak": INT, "onset": OPTIONAL_FLOAT, "active": BOOL},
    RatioShiftDetector: {
        "_ring": _ring(2, NUMBER),
        "_w": FLOAT,
        "_mean": FLOAT,
        "_var_unit": FLOAT,
        "_learned": FLOAT,
        "_carry": added(FLOAT),
    },
    RateSpikeDetector: {
        "_pending": _ring(2, NUMBER),
        "_ring": _ring(1, NUMBER),
        "_level": EWMEAN,
        "_peak": ROLLING_QUANTILE,
        "_log_var": EWVAR,
        "_n": INT,
        "_spiking": added(INT),
    },
    LogRateShiftDetector: {
        "_ring": _ring(1, NUMBER),
        "_level": EWMEAN,
        "_noise": EWMEAN,
        "_n": INT,
    },
    BurnRateDetector: {
        "_ring": _ring(1, NUMBER),
        "_typical": EWMEAN,
        "_peak": ROLLING_QUANTILE,
        "_log_var": EWVAR,
        "_pending": _ring(3, NUMBER),
        "_streak": INT,
        "_n": INT,
    },
    SessionLengthDetector: {"_q": QUANTILE, "_mean": MEAN, "_n": INT},
    RatioKind: _RATIO_KIND,
    PromptInflation: {**_RATIO_KIND, "prior": _fleet_lens()},
    # Minutes watched, the window's (LLM calls, input tokens, cost) and persistence.
    FleetLens: {"minutes": INT, "recent": _ring(3, NUMBER), "persistence": _nested()},
    # The recent minutes behind the excess cost an alert states.
    CacheRegression: {**_RATIO_KIND, "_recent": _ring_of_counts()},
    SharedEmbeddingDuplication: {**_RATIO_KIND, "_recent": _ring(1, NUMBER)},
    AgentChatter: {"detector": _nested(), "persistence": _nested()},
    # The models it knows, the usual cost per call, and new models watched.
    NewModel: {
        "known": added(_counts((int,))),
        "minutes": added(INT),
        "usual_cost": added(FLOAT),
        "usual_calls": added(FLOAT),
        "watch": added(_rows_by_name(4)),
        "recent": added(_named_rows()),
    },
    # The latch (once per use case) and the evidence of who calls it.
    UnownedSpend: {
        "state": added(INT),
        "pace": added(_nested()),
        "callers": added(_counts((int,))),
        "models": added(_counts(NUMBER)),
        "first_seen": added(OPTIONAL_FLOAT),
    },
    BudgetBurn: {"detector": _nested(), "persistence": _nested()},
    # Which thresholds fired in which period: a restore mid-period warns no twice.
    BudgetThreshold: {"fired": added(_int_rows(2))},
    CostSpike: {
        "detector": _nested(),
        "persistence": _nested(),
        "shift": _optional_nested(),
        "shift_persistence": _nested(),
        "prior": _fleet_lens(),
    },
    OutcomeTarget: {"persistence": _nested()},
    OutcomeDrop: {"detector": _nested(), "_onset": OPTIONAL_FLOAT},
    OutcomeDropDetector: {
        "_outcomes": EWMEAN,
        "_calls": EWMEAN,
        "_sq": EWMEAN,
        "_n": INT,
        "cusum": FLOAT,
        "observed": FLOAT,
        "expected": FLOAT,
        "minutes": INT,
    },
    DailyProfile: {
        "shape": FLOATS,
        "days": INT,
        "mean": FLOAT,
        "_day": OPTIONAL_INT,
        "_whole": BOOL,
        "_sums": FLOATS,
    },
}


def _spec(obj: object) -> dict[str, tuple[Dump, Load]]:
    for cls in type(obj).__mro__:
        spec = RUNNING.get(cls)
        if spec is not None:
            return spec
    raise SnapshotError(f"{type(obj).__name__} has no snapshot codec (add it to RUNNING)")


def dump_running(obj: object) -> dict[str, Any]:
    """The learned attributes of a detector (or kind, or persistence) as plain data."""
    return {
        name: codec[0](getattr(obj, name))
        for name, codec in _spec(obj).items()
        # An object converted from an older pickle may lack an added attribute.
        if not (isinstance(codec, _Added) and not hasattr(obj, name))
    }


def load_running(obj: object, f: Fields) -> None:
    """Set the learned attributes of a freshly built ``obj`` from ``f``."""
    for name, (_, load) in _spec(obj).items():
        value = load(getattr(obj, name), f, name)
        if value is not KEEP:
            setattr(obj, name, value)


def _lens_name(lens: object) -> str:
    """A lens's class name (that of the live class a legacy stand-in converts to)."""
    live = (c for c in type(lens).__mro__ if not c.__module__.startswith(__package__ or ""))
    return next(live).__name__


def _lenses(monitor: Any) -> list[Any]:
    return list(monitor.monitors) if isinstance(monitor, Composite) else [monitor]


def dump_monitor(monitor: Any) -> dict[str, Any]:
    """A use case's monitor: its kind and, per lens (the monitor itself unless
    it is a composite), what it learned."""
    return {
        "kind": monitor.kind,
        "lenses": {_lens_name(m): dump_running(m) for m in _lenses(monitor)},
    }


def load_monitor(monitor: Any, f: Fields) -> None:
    """Load :func:`dump_monitor` output into ``monitor``, built afresh from the current
    policy. Lenses are matched by class name: one the snapshot does not have (the
    policy now enables it, or its class was renamed) starts learning afresh."""
    lenses = f.child("lenses")
    for lens in _lenses(monitor):
        name = _lens_name(lens)
        if name in lenses.data:
            load_running(lens, lenses.child(name))
