"""An engine's state as plain data, loaded into an engine built from the current configuration.

What the engine is built from (policies, price book, :class:`EngineConfig`,
monitor factory) is never in a snapshot: the restoring process has its own.
Each use case is rebuilt with the current policy and monitors, then given what
the snapshot says it learned: its open minutes, sessions, windows, each
monitor's running values (matched by kind) and each open incident. So a policy
changed between the snapshot and the restart applies at once: a newly enabled
kind starts learning, a disabled kind is dropped with its open incident (no
``resolved`` alert follows), a changed threshold judges the learned baseline.

>>> from spendsentry.engine import Engine
>>> engine = Engine()
>>> state = dump_engine(engine)
>>> sorted(state)[:4]
['clock', 'closed_until', 'closing_started', 'dedupe']
>>> load_engine(Engine(), Fields(state, "$.engine")).closed_until is None
True
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Hashable
from typing import Any

from spendsentry.clock import EventClock
from spendsentry.dedupe import EventIdIndex
from spendsentry.engine import Engine, EngineStats, UseCaseState, UseCaseTotals
from spendsentry.feedback import Feedback, tuned_policy
from spendsentry.messages.control import ControlAction, ControlError
from spendsentry.shared_content import SharedContentIndex
from spendsentry.snapshot.detectors import dump_monitor, dump_running, load_monitor, load_running
from spendsentry.snapshot.fields import NUMBER, Fields
from spendsentry.snapshot.incidents import (
    dump_group,
    dump_planner,
    dump_tracker,
    group_from_trackers,
    load_group,
    load_planner,
    load_tracker,
)
from spendsentry.snapshot.windows import (
    dump_bucket,
    dump_content,
    dump_drivers,
    dump_periods,
    dump_sessions,
    dump_signals,
    dump_window,
    load_bucket,
    load_content,
    load_drivers,
    load_periods,
    load_sessions,
    load_signals,
    load_window,
)

_SWAP = sys.byteorder != "little"  # event-id hashes are stored little-endian


def dump_clock(c: EventClock) -> dict[str, Any]:
    """Newest event time, last data and jump candidate per source (the thresholds are
    configuration). A source is a string, or a (topic, partition) pair."""
    return {
        "max_ts": [[_source(s), ts] for s, ts in c.max_ts.items()],
        "last_seen": [[_source(s), t] for s, t in c.last_seen.items()],
        "candidates": [[_source(s), ts] for s, ts in c.candidates.items()],
    }


def _source(s: Hashable) -> Any:
    return list(s) if isinstance(s, tuple) else s


def read_sources(f: Fields, name: str) -> dict[Hashable, float]:
    """A ``[[source, time], ...]`` field as a dict (list sources become tuples)."""
    out: dict[Hashable, float] = {}
    for source, value in f.rows(name, (str, int, list), NUMBER):
        out[tuple(source) if isinstance(source, list) else source] = value
    return out


def load_clock(c: EventClock, f: Fields) -> None:
    c.max_ts = read_sources(f, "max_ts")
    c.last_seen = read_sources(f, "last_seen")
    c.candidates = read_sources(f, "candidates")


def dump_dedupe(index: EventIdIndex) -> dict[str, Any]:
    """The remembered event-id hashes, one little-endian uint64 array per minute."""
    minutes = {}
    for minute, bucket in index._minutes.items():
        if _SWAP:
            bucket = array("Q", bucket)
            bucket.byteswap()
        minutes[minute] = bucket.tobytes()
    return {"evicted": index.evicted, "minutes": minutes}


def load_dedupe(index: EventIdIndex, f: Fields) -> None:
    index.evicted = f.int("evicted")
    for minute, raw in f.map("minutes", int, bytes).items():
        if len(raw) % 8:
            raise f.fail(f"minutes[{minute}]", "not a whole number of uint64 hashes")
        bucket = array("Q")
        bucket.frombytes(raw)
        if _SWAP:
            bucket.byteswap()
        index._minutes[minute] = bucket
        index._hashes.update(bucket)


def dump_shared_content(index: SharedContentIndex) -> dict[str, Any]:
    """The cross-use-case content hashes in recency order, as columns: the hashes
    (little-endian uint64 bytes), each one's first embedder (an index into
    ``names``: a handful of use cases own up to 500,000 hashes) and last minute.
    TTL and size bound are configuration."""
    names: dict[str, int] = {}
    hashes = array("Q", index._owners)
    if _SWAP:
        hashes.byteswap()
    owners = [names.setdefault(owner, len(names)) for owner, _ in index._owners.values()]
    return {
        "names": list(names),
        "hashes": hashes.tobytes(),
        "owners": owners,
        "minutes": [minute for _, minute in index._owners.values()],
        "evicted": index.evicted,
    }


def load_shared_content(index: SharedContentIndex, f: Fields) -> None:
    names = f.list("names", str)
    raw = f.bytes("hashes")
    if len(raw) % 8:
        raise f.fail("hashes", "not a whole number of uint64 hashes")
    hashes = array("Q")
    hashes.frombytes(raw)
    if _SWAP:
        hashes.byteswap()
    owners, minutes = f.list("owners", int), f.list("minutes", int)
    if not len(owners) == len(minutes) == len(hashes):
        raise f.fail("owners", "hashes, owners and minutes differ in length")
    for i, owner in enumerate(owners):
        if not 0 <= owner < len(names):
            raise f.fail(f"owners[{i}]", f"{owner} names no use case (of {len(names)})")
    index._owners.update(
        (key, (names[owner], minute))
        for key, owner, minute in zip(hashes, owners, minutes, strict=True)
    )
    index.evicted = f.int("evicted")


_TOTALS = ("events", "input_tokens", "output_tokens", "cost_nano", "outcomes")
_STATS = (
    "accepted",
    "duplicates",
    "late",
    "unpriced",
    "evicted_use_cases",
    "evicted_sessions",
    "evicted_dedupe_ids",
)


def dump_stats(s: EngineStats) -> dict[str, Any]:
    out: dict[str, Any] = {name: getattr(s, name) for name in _STATS}
    out["unpriced_models"] = s.unpriced_models
    out["alerts"] = s.alerts
    out["use_cases"] = {
        name: {**{k: getattr(t, k) for k in _TOTALS}, "events_by_kind": t.events_by_kind}
        for name, t in s.use_cases.items()
    }
    return out


def load_stats(f: Fields) -> EngineStats:
    s = EngineStats()
    for name in _STATS:
        setattr(s, name, f.int(name, 0))
    s.unpriced_models = f.map("unpriced_models", str, int)
    s.alerts = f.map("alerts", str, int)
    totals = f.child("use_cases")
    for name in totals.data:
        t = totals.child(name)
        s.use_cases[name] = UseCaseTotals(
            t.int("events"),
            t.map("events_by_kind", str, int),
            t.int("input_tokens"),
            t.int("output_tokens"),
            t.int("cost_nano"),
            t.int("outcomes"),
        )
    return s


def dump_use_case(u: UseCaseState) -> dict[str, Any]:
    """What one use case holds besides its policy and the shape of its monitors."""
    ctx = u.ctx
    return {
        "open": [dump_bucket(b) for b in u.open.values()],
        "sessions": dump_sessions(u.sessions),
        "content": dump_content(u.content),
        "windows": [dump_window(w) for w in (ctx.last_1m, ctx.last_5m, ctx.last_1h)],
        "periods": dump_periods(ctx.periods),
        # Absent from use cases converted from older pickles (learned afresh).
        "daily": dump_running(ctx.daily) if hasattr(ctx, "daily") else None,
        "monitors": [dump_monitor(m) for m in u.monitors],
        "incidents": {kind: dump_tracker(t) for kind, t in u.trackers.items()},
        "last_active_minute": u.last_active_minute,
        "last_data_minute": u.last_data_minute,
        "observing": u.observing,
        "last_signals": dump_signals(u.last_signals),
        # Added within version 3; absent (and from use cases converted from older
        # pickles), the incident is rebuilt from the open alerts.
        **({"incident_group": dump_group(u.incidents)} if hasattr(u, "incidents") else {}),
        **({"drivers": dump_drivers(u.drivers)} if hasattr(u, "drivers") else {}),
        # Added within version 3, only when operators gave feedback: absent, none.
        **({"feedback": dump_feedback(u.feedback)} if getattr(u, "feedback", None) else {}),
    }


def dump_feedback(f: Feedback) -> dict[str, Any]:
    """Operators' verdicts per kind (the tuned sensitivities follow from them)."""
    return {"false_alarm": dict(f.false_alarms), "expected_change": dict(f.expected_changes)}


def load_feedback(f: Fields) -> Feedback:
    """:func:`dump_feedback` output; absent (an older snapshot), no feedback."""
    if f.raw("feedback", None) is None:
        return Feedback()
    child = f.child("feedback")
    return Feedback(
        false_alarms=dict(child.map("false_alarm", str, int)),
        expected_changes=dict(child.map("expected_change", str, int)),
    )


def load_use_case(engine: Engine, name: str, f: Fields) -> UseCaseState:
    """Build ``name``'s state from the current policy, then load what it learned."""
    policy = engine.policies.for_use_case(name)
    # Operators' false alarms tune the kinds: built tuned, then loaded.
    feedback = load_feedback(f)
    monitors = engine.monitor_factory(name, tuned_policy(policy, feedback), engine.prices)
    u = UseCaseState(name, policy, monitors, engine.config)
    u.feedback = feedback
    _load_spend(u, f)
    _load_detection(u, f)
    u.last_active_minute = f.int("last_active_minute")
    u.last_data_minute = f.optional_int("last_data_minute")
    u.observing = f.bool("observing")
    last = f.raw("last_signals")
    u.last_signals = load_signals(None if last is None else f.child("last_signals"))
    return u


def _load_spend(u: UseCaseState, f: Fields) -> None:
    """What a use case's minutes hold: open buckets, sessions, content, windows, periods."""
    for bucket in (load_bucket(b) for b in f.children("open")):
        u.open[bucket.minute] = bucket
    load_sessions(u.sessions, f.child("sessions"))
    load_content(u.content, f.child("content"))
    windows = f.children("windows")
    if len(windows) != 3:
        raise f.fail("windows", f"expected 3 windows (1m, 5m, 1h), got {len(windows)}")
    for window, state in zip((u.ctx.last_1m, u.ctx.last_5m, u.ctx.last_1h), windows, strict=True):
        load_window(window, state)
    u.ctx.periods = load_periods(f.child("periods"))
    if f.raw("daily", None) is not None:
        load_running(u.ctx.daily, f.child("daily"))


def _load_detection(u: UseCaseState, f: Fields) -> None:
    """What a use case's monitors learned, its trackers, drivers and open incident."""
    learned: dict[str, Fields] = {}
    for m in f.children("monitors"):
        learned[m.str("kind")] = m
    for monitor in u.monitors:
        if monitor.kind in learned:
            load_monitor(monitor, learned[monitor.kind])
    incidents = f.child("incidents")
    for kind, tracker in u.trackers.items():
        if kind in incidents.data:
            load_tracker(tracker, incidents.child(kind))
    if "drivers" in f.data:  # added within version 3: absent, learned from here on
        load_drivers(u.drivers, f.child("drivers"))
    if "incident_group" not in f.data:
        group_from_trackers(u.incidents, u.trackers)
    elif f.raw("incident_group") is not None:
        load_group(u.incidents, f.child("incident_group"), u.trackers)


def dump_engine(e: Engine) -> dict[str, Any]:
    """Everything an engine learned; nothing it was built from."""
    return {
        "closed_until": e.closed_until,
        "closing_started": e.closing_started,
        # Added within version 3 (a converted version-2 engine has none: it
        # had been watching, see load_engine).
        **({"watching_since": e.watching_since} if hasattr(e, "watching_since") else {}),
        "clock": dump_clock(e.clock),
        "dedupe": dump_dedupe(e._seen_ids),
        "stats": dump_stats(e.stats),
        "planner": dump_planner(e.planner),
        "shared_content": dump_shared_content(e.shared_content),
        "use_cases": {name: dump_use_case(u) for name, u in e.use_cases.items()},
        # Added within version 3: feedback waiting for its event time (the
        # control offsets committed with this snapshot are past it).
        **(
            {"pending_feedback": [a.to_dict() for a in e.pending_feedback]}
            if getattr(e, "pending_feedback", None)
            else {}
        ),
    }


def load_engine(e: Engine, f: Fields) -> Engine:
    """Load :func:`dump_engine` output into ``e``, freshly built by this process."""
    e.closed_until = f.optional_int("closed_until")
    e.closing_started = f.bool("closing_started")
    # Added within version 3: a document without it was written by an engine
    # that had watched for a while (every use case it meets from here on is new).
    if "watching_since" in f.data:
        e.watching_since = f.optional_int("watching_since")
    elif e.closed_until is not None:
        e.watching_since = e.closed_until - e.config.new_use_case_after_minutes
    load_clock(e.clock, f.child("clock"))
    load_dedupe(e._seen_ids, f.child("dedupe"))
    e.stats = load_stats(f.child("stats"))
    load_planner(e.planner, f.child("planner"))
    # Added in version 3 without a new version: a document written before the
    # index existed restores with the fresh (empty) one.
    if f.raw("shared_content", None) is not None:
        load_shared_content(e.shared_content, f.child("shared_content"))
    use_cases = f.child("use_cases")
    for name in use_cases.data:
        e.use_cases[name] = load_use_case(e, name, use_cases.child(name))
    e.pending_feedback = []
    for i, doc in enumerate(f.list("pending_feedback", dict, default=[])):
        try:
            e.pending_feedback.append(ControlAction.parse(doc))
        except ControlError as exc:
            raise f.fail(f"pending_feedback[{i}]", str(exc)) from None
    return e
