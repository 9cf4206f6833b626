"""A worker partition's state (offsets, watermarks, published keys, counters, engine) as plain data.

:meth:`Pipeline.snapshot_state <spendsentry.worker.pipeline.Pipeline.snapshot_state>`
gives the state with the live engine; :func:`dump_state` makes it plain data,
:func:`read_state` checks a decoded document and gives the state back in the
same shape (tuple-keyed offsets) with the engine still as data, and
:func:`restore` loads it into a pipeline whose engine this process built.

>>> from spendsentry.engine import Engine
>>> from spendsentry.worker.pipeline import Pipeline
>>> p = Pipeline(Engine(), partition=3)
>>> p.start_at({("ai.usage", 3): 42})
>>> state = read_state(Fields(dump_state(p.snapshot_state()), "$"))
>>> state["partition"], state["offsets"]
(3, {('ai.usage', 3): 42})
>>> q = Pipeline(Engine(), partition=3)
>>> restore(q, state, now=0.0)
>>> q.offsets
{('ai.usage', 3): 42}
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from spendsentry.snapshot.engine import dump_engine, load_engine, read_sources
from spendsentry.snapshot.fields import Fields, SnapshotError
from spendsentry.worker.metrics import PartitionCounters
from spendsentry.worker.published import PublishedKeys

if TYPE_CHECKING:
    from spendsentry.worker.pipeline import Pipeline


def dump_counters(c: PartitionCounters) -> dict[str, Any]:
    """The engine-work counters (the label cap is configuration: this process's)."""
    return {
        "volume": c.labels.volume,
        "labelled": sorted(c.labels.labelled),
        "events": [[u, k, n] for (u, k), n in c.events.items()],
        "tokens": [[u, d, n] for (u, d), n in c.tokens.items()],
        "cost_nano": c.cost_nano,
        "rejected": c.rejected,
        "alerts": [[k, s, st, n] for (k, s, st), n in c.alerts.items()],
        "duplicates": c.duplicates,
        "records": c.records,
    }


def load_counters(c: PartitionCounters, f: Fields) -> PartitionCounters:
    c.labels.volume = f.map("volume", str, int)
    c.labels.labelled = set(f.list("labelled", str))
    c.events = {(u, k): n for u, k, n in f.rows("events", str, str, int)}
    c.tokens = {(u, d): n for u, d, n in f.rows("tokens", str, str, int)}
    c.cost_nano = f.map("cost_nano", str, int)
    c.rejected = f.map("rejected", str, int)
    c.alerts = {(k, s, st): n for k, s, st, n in f.rows("alerts", str, str, str, int)}
    c.duplicates = f.int("duplicates")
    c.records = f.int("records")
    return c


def dump_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """Plain data of :meth:`Pipeline.snapshot_state` (or ``checkpoint_state``) output."""
    out: dict[str, Any] = {
        "partition": state["partition"],
        "offsets": [[t, p, o] for (t, p), o in state["offsets"].items()],
        "control_offsets": state["control_offsets"],
        "watermarks": [
            [list(s) if isinstance(s, tuple) else s, ts] for s, ts in state["watermarks"].items()
        ],
        "published": state["published"],
        "records": state["records"],
        "counters": dump_counters(state["counters"]),
        "engine": dump_engine(state["engine"]),
    }
    if "alerts_offsets" in state:
        out["alerts_offsets"] = dict(state["alerts_offsets"])
    if state.get("focus") is not None:
        out["focus"] = state["focus"].to_data()
    return out


def read_state(f: Fields) -> dict[str, Any]:
    """The state in :meth:`Pipeline.snapshot_state`'s shape, checked; ``"engine"``
    and ``"counters"`` stay data (:func:`restore` loads them)."""
    state: dict[str, Any] = {
        "partition": f.optional_int("partition"),
        "offsets": {(t, p): o for t, p, o in f.rows("offsets", str, int, int)},
        "control_offsets": f.map("control_offsets", int, int),
        "watermarks": read_sources(f, "watermarks"),
        "published": f.list("published", str),
        "records": f.int("records"),
        "counters": f.child("counters"),
        "engine": f.child("engine"),
    }
    if "alerts_offsets" in f.data:
        state["alerts_offsets"] = f.map("alerts_offsets", int, int)
    if "focus" in f.data:
        from spendsentry.focus import FocusLedger

        try:
            state["focus"] = FocusLedger.from_data(f.data["focus"])
        except (TypeError, ValueError) as exc:
            raise SnapshotError(f"$.focus: {exc}") from None
    return state


def restore(pipeline: Pipeline, state: Mapping[str, Any], *, now: float) -> None:
    """Load :func:`read_state` output into ``pipeline`` (whose engine is fresh).

    Raises
    ------
    SnapshotError
        A field of the engine's state is missing or ill-typed (the message names it).
    """
    try:
        load_engine(pipeline.engine, state["engine"])
    except SnapshotError:
        raise
    except (KeyError, TypeError, ValueError, struct.error) as exc:
        # A codec's own checks name the field; this is what they did not foresee.
        raise SnapshotError(f"$.engine: malformed ({type(exc).__name__}: {exc})") from None
    pipeline.offsets = dict(state["offsets"])
    pipeline.control_offsets = dict(state["control_offsets"])
    pipeline.watermarks.restore(state["watermarks"], now=now)
    pipeline.published = PublishedKeys(state["published"])
    pipeline.records = state["records"]
    restored = state.get("focus")
    if pipeline.focus is not None and restored is not None:
        # Into the ledger the engine already reports to (its tap stays in place).
        pipeline.focus.groups = restored.groups
        pipeline.focus.total_nano = restored.total_nano
    pipeline.dirty = False
    counters = PartitionCounters.empty(pipeline.accounting.counters.labels.limit)
    pipeline.accounting.restore(
        load_counters(counters, state["counters"]), pipeline.engine.stats, pipeline.records
    )
