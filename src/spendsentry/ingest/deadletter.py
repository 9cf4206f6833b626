"""Dead-letter records: what could not be used, why, and the original bytes."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple


class RejectReason(StrEnum):
    """Stable reason codes (the ``reason`` field of schemas/dead-letter.json)."""

    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    INVALID_VALUE = "invalid_value"
    NEGATIVE_VALUE = "negative_value"
    ABSURD_VALUE = "absurd_value"
    BAD_TIMESTAMP = "bad_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    OVERSIZED = "oversized"
    LATE = "late"
    UNKNOWN_TYPE = "unknown_type"
    EMPTY = "empty"


class SourcePosition(NamedTuple):
    """Where a record came from: a file line or a Kafka partition offset.

    A NamedTuple, not a frozen dataclass: one is made per record read, and a
    frozen dataclass's ``__init__`` costs several times more.
    """

    name: str
    line: int | None = None
    partition: int | None = None
    offset: int | None = None

    def to_dict(self, index: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.line is not None:
            out["line"] = self.line
        if self.partition is not None:
            out["partition"] = self.partition
        if self.offset is not None:
            out["offset"] = self.offset
        if index is not None:
            out["index"] = index
        return out


#: Enough of the original to read in a terminal; the full bytes are in original_b64.
TEXT_PREVIEW_CHARS = 4096


@dataclass(slots=True)
class DeadLetter:
    """A record spendsentry could not use.

    ``original`` holds the exact bytes of the record, or of the array element
    when one element of a batch message was bad (``index`` says which).
    """

    reason: RejectReason
    message: str
    source: SourcePosition
    original: bytes
    index: int | None = None
    event_id: str | None = None
    use_case: str | None = None
    field: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema_version": 1,
            "reason": str(self.reason),
            "message": self.message,
            "source": self.source.to_dict(self.index),
            "original_b64": base64.b64encode(self.original).decode("ascii"),
            "original_text": self.original.decode("utf-8", "replace")[:TEXT_PREVIEW_CHARS],
        }
        if self.event_id is not None:
            out["event_id"] = self.event_id
        if self.use_case is not None:
            out["use_case"] = self.use_case
        if self.field is not None:
            out["field"] = self.field
        return out
