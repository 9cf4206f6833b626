"""The snapshot document: a msgpack map ``{"format", "version", ...}``, and its checks.

Versioning: :data:`VERSION` is bumped only when a document written by this
code cannot be read correctly by the previous release's reader, or the other
way round (a field changes meaning or shape). A *new* field needs no bump: it is
written, and read with a default (``Fields.int("x", 0)``), so older documents
still load. A document of a newer version than :data:`VERSION` is refused (its
fields may mean something this code does not know); older versions are
converted (:mod:`spendsentry.snapshot.legacy`).

>>> body = encode({"records": 1})
>>> decode(body).int("records")
1
>>> decode(body[:-3])
Traceback (most recent call last):
...
spendsentry.snapshot.SnapshotError: unreadable snapshot document (truncated or not msgpack): ...
"""

from __future__ import annotations

from typing import Any

import msgspec

from spendsentry.snapshot.fields import Fields, SnapshotError

#: The ``format`` every document carries.
FORMAT = "spendsentry.snapshot"
#: The layout version this code writes (2 was the last pickle).
VERSION = 3

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


def encode(body: dict[str, Any]) -> bytes:
    """The document of ``body`` (plain data only)."""
    try:
        return _encoder.encode({"format": FORMAT, "version": VERSION, **body})
    except (TypeError, OverflowError) as exc:
        raise SnapshotError(f"the state is not plain data: {exc}") from None


def decode(payload: bytes) -> Fields:
    """The checked envelope of a version-:data:`VERSION` document; its fields.

    Raises
    ------
    SnapshotError
        Not msgpack, truncated, another format, or a version this code cannot read.
    """
    try:
        doc = _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise SnapshotError(
            f"unreadable snapshot document (truncated or not msgpack): {exc}"
        ) from None
    f = Fields(doc, "$")
    if f.raw("format", None) != FORMAT:
        raise f.fail("format", f"{f.raw('format', None)!r} is not {FORMAT!r}")
    version = f.int("version")
    if version > VERSION:
        raise f.fail(
            "version", f"{version} is newer than this spendsentry reads ({VERSION}): upgrade"
        )
    if version != VERSION:
        raise f.fail("version", f"{version} is not a msgpack snapshot version (3 and later)")
    return f
