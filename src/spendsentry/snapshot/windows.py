"""The per-use-case windows as plain data: open minute buckets, sessions, content, cost windows.

Columns, not rows, where there are many (a session tracker's ids, calls and
minutes are three lists): msgpack writes a list of ints or strings in one C
loop, so a snapshot of 50,000 sessions costs what pickling them did.

>>> from spendsentry.windows import SessionTracker
>>> t = SessionTracker()
>>> _ = t.close_minute(7, {"s1": 3, "s2": 1})
>>> dump_sessions(t)
{'ids': ['s1', 's2'], 'calls': [3, 1], 'first': [7, 7], 'last': [7, 7], 'evicted': 0}
>>> fresh = SessionTracker()
>>> load_sessions(fresh, Fields(dump_sessions(t), "$"))
>>> fresh.close_minute(8, {"s1": 1})[0]
(4,)
"""

from __future__ import annotations

from typing import Any

from spendsentry.detectors.base import PeriodTotals
from spendsentry.drivers import HeavyHitters, SpendDrivers
from spendsentry.snapshot.fields import NUMBER, Fields
from spendsentry.windows import (
    ContentTracker,
    CostWindow,
    MinuteBucket,
    MinuteSignals,
    ModelMinute,
    ModelStats,
    SessionState,
    SessionTracker,
)

#: The integer counters of a bucket, stored as they are.
_BUCKET_INTS = (
    "minute",
    "llm_calls",
    "tool_calls",
    "retrievals",
    "embeddings",
    "input_tokens",
    "llm_input_tokens",
    "llm_log_input",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "cost",
    "embedding_cost",
    "unpriced",
    "fallback_calls",
    "rerouted_calls",
    "outcomes",
)
_MODEL = ("calls", "cost", "input_tokens", "output_tokens", "small_calls")


def dump_bucket(b: MinuteBucket) -> dict[str, Any]:
    """An open minute: its counters, per-model stats, sessions and hashes."""
    out: dict[str, Any] = {name: getattr(b, name) for name in _BUCKET_INTS}
    out["models"] = {name: [getattr(s, a) for a in _MODEL] for name, s in b.models.items()}
    out["retrieval_requests"] = sorted(b.retrieval_requests)
    out["session_calls"] = b.session_calls
    out["embed_hashes"] = b.embed_hashes
    out["outcomes_by_name"] = b.outcomes_by_name
    # Added within version 3 (absent: the minute's spend by dimension starts empty).
    # (getattr: a bucket unpickled from a version-2 snapshot has neither.)
    out["spend"] = [[*key, cost] for key, cost in getattr(b, "spend", {}).items()]
    out["tag_spend"] = [[n, v, cost] for (n, v), cost in getattr(b, "tag_spend", {}).items()]
    out["callers"] = [[*caller, n] for caller, n in b.callers.items()]
    return out


def load_bucket(f: Fields) -> MinuteBucket:
    b = MinuteBucket(f.int("minute"))
    for name in _BUCKET_INTS:
        setattr(b, name, f.int(name, 0))
    for name, row in f.map("models", str, list).items():
        if len(row) != len(_MODEL) or not all(type(v) is int for v in row):
            raise f.fail(f"models[{name!r}]", f"expected {len(_MODEL)} ints")
        s = b.models[name] = ModelStats()
        s.calls, s.cost, s.input_tokens, s.output_tokens, s.small_calls = row
    b.retrieval_requests = set(f.list("retrieval_requests", str))
    b.session_calls = f.map("session_calls", str, int)
    b.embed_hashes = f.map("embed_hashes", str, int)
    b.outcomes_by_name = f.map("outcomes_by_name", str, int)
    text = (str, type(None))
    for *key, cost in f.rows("spend", text, text, text, text, text, text, int, default=[]):
        b.spend[(key[0], key[1], key[2], key[3], key[4], key[5])] = cost
    for name, value, cost in f.rows("tag_spend", str, str, int, default=[]):
        b.tag_spend[name, value] = cost
    if "callers" in f.data:  # added after version 3 was first written
        b.callers = {(t, a, svc): n for t, a, svc, n in _caller_rows(f, "callers")}
    return b


def dump_drivers(d: SpendDrivers) -> dict[str, Any]:
    """A use case's recent and learned spend per dimension value (capacity: config)."""
    return {
        "total": list(d.total),
        "minutes": list(d.minutes),
        "dimensions": {
            name: [[value, *rate] for value, rate in h.rates.items()]
            for name, h in d.dimensions.items()
        },
    }


def load_drivers(d: SpendDrivers, f: Fields) -> None:
    d.total = [float(x) for x in f.list("total", NUMBER)]
    if len(d.total) != 2:
        raise f.fail("total", "expected [recent, learned]")
    d.minutes = f.list("minutes", int)
    if len(d.minutes) != 2:
        raise f.fail("minutes", "expected [folded, learned]")
    dims = f.child("dimensions")
    for name in dims.data:
        h = d.dimensions[name] = HeavyHitters(d.capacity)
        rows = dims.rows(name, str, NUMBER, NUMBER)
        # Most recent spend first: a smaller capacity keeps the heaviest.
        for value, fast, slow in sorted(rows, key=lambda r: -r[1])[: d.capacity]:
            h.rates[value] = [float(fast), float(slow)]


def _caller_rows(f: Fields, name: str) -> list[tuple[str | None, str | None, str | None, int]]:
    """Rows of (team, agent_id, service, calls), checked."""
    rows = []
    for i, row in enumerate(f.list(name, list)):
        ok = len(row) == 4 and all(v is None or isinstance(v, str) for v in row[:3])
        if not ok or type(row[3]) is not int:
            raise f.fail(f"{name}[{i}]", "expected [team, agent_id, service, calls]")
        rows.append((row[0], row[1], row[2], row[3]))
    return rows


def dump_sessions(t: SessionTracker) -> dict[str, Any]:
    """Live sessions in recency order, as columns (limits are parameters)."""
    states = list(t._sessions.values())
    return {
        "ids": list(t._sessions),
        "calls": [s.calls for s in states],
        "first": [s.first_minute for s in states],
        "last": [s.last_minute for s in states],
        "evicted": t.evicted,
    }


def load_sessions(t: SessionTracker, f: Fields) -> None:
    ids = f.list("ids", str)
    columns = [f.list(name, int) for name in ("calls", "first", "last")]
    if any(len(c) != len(ids) for c in columns):
        raise f.fail("ids", "the session columns differ in length")
    t._sessions.update(
        (sid, SessionState(calls, last, first))
        for sid, calls, first, last in zip(ids, *columns, strict=True)
    )
    t.evicted = f.int("evicted")


def dump_content(t: ContentTracker) -> dict[str, Any]:
    """Recently embedded content hashes in recency order, with their last minute."""
    return {"hashes": list(t._seen), "minutes": list(t._seen.values()), "evicted": t.evicted}


def load_content(t: ContentTracker, f: Fields) -> None:
    hashes, minutes = f.list("hashes", str), f.list("minutes", int)
    if len(hashes) != len(minutes):
        raise f.fail("hashes", "hashes and minutes differ in length")
    t._seen.update(zip(hashes, minutes, strict=True))
    t.evicted = f.int("evicted")


_WINDOW = ("cost", "input_tokens", "output_tokens", "calls", "outcomes")


def dump_window(w: CostWindow) -> dict[str, Any]:
    """A sliding window's minutes and sums (its length is a parameter)."""
    out: dict[str, Any] = {name: getattr(w, name) for name in _WINDOW}
    out["ring"] = [list(item) for item in w._ring]
    return out


def load_window(w: CostWindow, f: Fields) -> None:
    for name in _WINDOW:
        setattr(w, name, f.float(name) if name == "cost" else f.int(name))
    w._ring.extend(tuple(row) for row in f.rows("ring", NUMBER, int, int, int, int))


_PERIODS = ("hour", "day", "month", "cost_hour", "cost_day", "cost_month")


def dump_periods(p: PeriodTotals) -> dict[str, Any]:
    return {name: getattr(p, name) for name in _PERIODS}


def load_periods(f: Fields) -> PeriodTotals:
    return PeriodTotals(
        f.int("hour"),
        f.int("day"),
        f.int("month"),
        f.float("cost_hour"),
        f.float("cost_day"),
        f.float("cost_month"),
    )


_SIGNAL_TUPLES = ("session_call_counts", "ended_session_calls")


def dump_signals(s: MinuteSignals | None) -> dict[str, Any] | None:
    """The last closed minute (what the status page shows)."""
    if s is None:
        return None
    out: dict[str, Any] = {}
    for name in MinuteSignals.__dataclass_fields__:
        value = getattr(s, name)
        if name == "models":
            value = {m: [getattr(v, a) for a in _MODEL] for m, v in value.items()}
        elif name in _SIGNAL_TUPLES or name == "shared_with":
            value = list(value)
        elif name == "callers":
            value = [list(row) for row in value]
        out[name] = value
    return out


def load_signals(f: Fields | None) -> MinuteSignals | None:
    if f is None:
        return None
    values: dict[str, Any] = {}
    for name in MinuteSignals.__dataclass_fields__:
        if name not in f.data:
            continue  # a field added later: its default
        value = f.raw(name)
        if name == "models":
            value = {m: ModelMinute(*row) for m, row in f.map("models", str, list).items()}
        elif name in _SIGNAL_TUPLES:
            value = tuple(f.list(name, int))
        elif name == "shared_with":
            value = tuple(f.list(name, str))
        elif name == "callers":
            value = tuple(_caller_rows(f, name))
        values[name] = value
    try:
        return MinuteSignals(**values)
    except TypeError as exc:
        raise f.fail("use_case", f"not a closed minute: {exc}") from None
