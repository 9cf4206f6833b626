"""Snapshot round trips the way a worker makes them (tests only)."""

from __future__ import annotations

from typing import Any

import msgspec

from spendsentry.engine import Engine
from spendsentry.snapshot import Fields
from spendsentry.snapshot.engine import dump_engine, load_engine


def plain(state: Any) -> Fields:
    """``state`` through msgpack and back, as a snapshot document carries it."""
    return Fields(msgspec.msgpack.decode(msgspec.msgpack.encode(state)), "$")


def engine_size(engine: Engine) -> int:
    """Bytes of an engine's state in a snapshot."""
    return len(msgspec.msgpack.encode(dump_engine(engine)))


def restart(engine: Engine) -> Engine:
    """``engine`` snapshotted and restored into one built from the same configuration."""
    fresh = Engine(
        engine.policies,
        config=engine.config,
        prices=engine.prices,
        monitor_factory=engine.monitor_factory,
    )
    return load_engine(fresh, plain(dump_engine(engine)))
