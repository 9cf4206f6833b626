"""Explicit, versioned snapshots of a worker partition's state, as plain data.

A snapshot is a msgpack document (:mod:`~spendsentry.snapshot.document`) of
plain data only: what each object learned, written and read by one codec per
class in this package (never pickled objects, never River's own bytes), so
renaming or moving a class, or upgrading River, cannot make a snapshot
unreadable. Configuration (policies, prices, engine settings) comes from the
process that restores. Version-2 and older snapshots were pickles; they are
read by a restricted unpickler and converted (:mod:`~spendsentry.snapshot.legacy`).

>>> from spendsentry.engine import Engine
>>> from spendsentry.worker.pipeline import Pipeline
>>> payload = encode_state(Pipeline(Engine(), partition=0).snapshot_state())
>>> state = decode_state(payload)
>>> state["partition"], payload[:1] != b"\\x80"
(0, True)
>>> decode_state(b"\\x82\\xa6format\\xa3xyz\\xa7version\\x03")
Traceback (most recent call last):
...
spendsentry.snapshot.SnapshotError: $.format: 'xyz' is not 'spendsentry.snapshot'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spendsentry.snapshot.fields import Fields, SnapshotError

#: The layout version written now (see :mod:`spendsentry.snapshot.document`).
SNAPSHOT_VERSION = 3


def is_legacy(payload: bytes) -> bool:
    """Whether ``payload`` is a pickle (version 2 and older), not a document."""
    # A pickle starts with PROTO (0x80) and its protocol; a document is a
    # msgpack map of at least two entries, which never starts with 0x80.
    return len(payload) > 1 and payload[0] == 0x80 and 2 <= payload[1] <= 5


def encode_state(state: Mapping[str, Any]) -> bytes:
    """The document of a pipeline state (:meth:`Pipeline.snapshot_state` output)."""
    from spendsentry.snapshot.document import encode
    from spendsentry.snapshot.pipeline import dump_state

    return encode(dump_state(state))


def decode_state(payload: bytes) -> dict[str, Any]:
    """A pipeline state from a document or a legacy pickle, checked.

    Raises
    ------
    SnapshotError
        The bytes cannot be read; the message names the field, or says why.
    """
    from spendsentry.snapshot.document import decode
    from spendsentry.snapshot.pipeline import read_state

    if is_legacy(payload):
        from spendsentry.snapshot.legacy import read_pickle

        return read_pickle(payload)
    return read_state(decode(payload))


__all__ = [
    "SNAPSHOT_VERSION",
    "Fields",
    "SnapshotError",
    "decode_state",
    "encode_state",
    "is_legacy",
]
