"""River statistics as their numbers: parameters and running values, rebuilt on load.

River keeps its statistics in Rust objects whose only serialisation is their
own (bincode) bytes. A snapshot never stores those bytes: this module reads
the running values out of them and, on load, gives a statistic built by the
current code (so its parameters are the current ones) those values back. The
byte layout is known here and only here; the conformance tests round-trip
every statistic, so a River upgrade that changes it fails a test, never a
snapshot.

>>> from river import stats
>>> m = stats.EWMean(fading_factor=0.5)
>>> for x in (1.0, 3.0):
...     m.update(x)
>>> dump_ewmean(m)
{'mean': 2.0, 'initialized': True}
>>> fresh = stats.EWMean(fading_factor=0.5)
>>> load_ewmean(fresh, Fields(dump_ewmean(m), "$"))
>>> fresh.get()
2.0
"""

from __future__ import annotations

import struct
from typing import Any

from river import stats

from spendsentry.snapshot.fields import NUMBER, Fields, SnapshotError

# mean, alpha, 1 - alpha, initialized, alpha
_EWMEAN = struct.Struct("<dddBd")
# mean (an EWMean), mean of squares (an EWMean), alpha, alpha
_EWVAR = struct.Struct("<dddBdddBdd")
# q, 5 marker increments, 5 desired positions, 5 positions, 5 heights, filled, ready
_QUANTILE = struct.Struct("<" + "d" * 21 + "BB")
_U64 = struct.Struct("<Q")


def _state(rs: Any, layout: struct.Struct, name: str) -> tuple[Any, ...]:
    raw = rs.__getstate__()
    try:
        return layout.unpack(raw)
    except struct.error:
        raise SnapshotError(
            f"the installed River's {name} layout is not the one this code knows"
        ) from None


def dump_ewmean(m: stats.EWMean) -> dict[str, Any]:
    """The running mean of an ``EWMean`` (its fading factor is a parameter)."""
    mean, _, _, initialized, _ = _state(m._ewmean, _EWMEAN, "EWMean")
    return {"mean": mean, "initialized": bool(initialized)}


def load_ewmean(m: stats.EWMean, f: Fields) -> None:
    """Give a fresh ``EWMean`` the running mean ``f`` holds."""
    mean, initialized = f.float("mean"), f.bool("initialized")
    values = list(_state(m._ewmean, _EWMEAN, "EWMean"))
    values[0], values[3] = mean, int(initialized)
    m._ewmean.__setstate__(_EWMEAN.pack(*values))


def dump_ewvar(v: stats.EWVar) -> dict[str, Any]:
    """The running mean and mean of squares of an ``EWVar``."""
    s = _state(v._ewvar, _EWVAR, "EWVar")
    return {
        "mean": s[0],
        "mean_initialized": bool(s[3]),
        "sq_mean": s[4],
        "sq_initialized": bool(s[7]),
    }


def load_ewvar(v: stats.EWVar, f: Fields) -> None:
    values = list(_state(v._ewvar, _EWVAR, "EWVar"))
    values[0], values[3] = f.float("mean"), int(f.bool("mean_initialized"))
    values[4], values[7] = f.float("sq_mean"), int(f.bool("sq_initialized"))
    v._ewvar.__setstate__(_EWVAR.pack(*values))


def dump_mean(m: stats.Mean) -> dict[str, Any]:
    return {"n": m.n, "mean": m._mean}


def load_mean(m: stats.Mean, f: Fields) -> None:
    m.n = f.float("n")
    m._mean = f.float("mean")


def dump_quantile(q: stats.Quantile) -> dict[str, Any]:
    """The P-square markers of a ``Quantile`` (its q is a parameter)."""
    s = _state(q._quantile, _QUANTILE, "Quantile")
    return {
        "desired": list(s[6:11]),
        "positions": list(s[11:16]),
        "heights": list(s[16:21]),
        "filled": s[21],
        "ready": bool(s[22]),
        "updated": bool(q._is_updated),
    }


def load_quantile(q: stats.Quantile, f: Fields) -> None:
    values = list(_state(q._quantile, _QUANTILE, "Quantile"))
    for name, start in (("desired", 6), ("positions", 11), ("heights", 16)):
        got = f.list(name, NUMBER)
        if len(got) != 5:
            raise f.fail(name, f"expected 5 markers, got {len(got)}")
        values[start : start + 5] = got
    values[21], values[22] = f.int("filled"), int(f.bool("ready"))
    q._quantile.__setstate__(_QUANTILE.pack(*values))
    q._is_updated = f.bool("updated")


def dump_rolling_quantile(q: stats.RollingQuantile) -> dict[str, Any]:
    """The window of a ``RollingQuantile``, oldest first (its q and size are parameters)."""
    raw = q._rolling_quantile.__getstate__()
    try:
        (n,) = _U64.unpack_from(raw, 0)
        at = 8 + 8 * n  # after the sorted copy: the window in arrival order
        (m,) = _U64.unpack_from(raw, at)
        window = list(struct.unpack_from(f"<{m}d", raw, at + 8))
    except struct.error:
        raise SnapshotError(
            "the installed River's RollingQuantile layout is not the one this code knows"
        ) from None
    return {"window": window, "updated": bool(q._is_updated)}


def load_rolling_quantile(q: stats.RollingQuantile, f: Fields) -> None:
    """Replay the window into a fresh ``RollingQuantile``: its state is a
    function of the window alone (a smaller window now keeps the newest)."""
    for x in f.list("window", NUMBER):
        q._rolling_quantile.update(x)
    q._is_updated = f.bool("updated")
