"""Dead-letter records: what could not be used, why, and the original bytes."""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

import orjson


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
    #: A protobuf message that is not an OTLP trace request (metrics, logs, other).
    UNSUPPORTED_PROTOBUF = "unsupported_protobuf"


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
#: The ``message``, ``event_id`` and ``use_case`` a dead letter echoes are cut to
#: this many characters: a 500 KB timestamp string must not be copied three times.
MAX_ECHO_CHARS = 1024
#: The Kafka producers' default ``max_request_size`` (aiokafka and the Java client).
DEFAULT_MAX_REQUEST_SIZE = 1 << 20
#: What a dead letter leaves free in a produce request: record batch framing,
#: the key and headers take well under 1 KiB; the rest is safety margin.
REQUEST_HEADROOM = 64 << 10
#: The smallest bound :meth:`DeadLetter.to_dict` honours: room for the envelope
#: (a 4096-character preview of escaped control bytes is 24 KiB, a summary's
#: listed elements up to 30 KiB) and a head.
MIN_DEAD_LETTER_BYTES = 128 << 10
#: Rejected elements a summary dead letter lists one by one (the rest are counted).
MAX_LISTED_ELEMENTS = 20


def dead_letter_limit(max_request_size: int = DEFAULT_MAX_REQUEST_SIZE) -> int:
    """The most bytes one serialized dead letter may take under ``max_request_size``.

    >>> dead_letter_limit()
    983040
    """
    limit = max_request_size - REQUEST_HEADROOM
    if limit < MIN_DEAD_LETTER_BYTES:
        raise ValueError(
            f"max_request_size {max_request_size} leaves no room for dead letters "
            f"(at least {MIN_DEAD_LETTER_BYTES + REQUEST_HEADROOM} bytes)"
        )
    return limit


#: The bound of every dead letter under the default producer settings (replay's too).
MAX_DEAD_LETTER_BYTES = dead_letter_limit()


@dataclass(slots=True)
class DeadLetter:
    """A record spendsentry could not use.

    ``original`` holds the exact bytes of the record, or of the array element
    when one element of a batch message was bad (``index`` says which). A
    message with several bad elements gives one summary letter instead
    (:func:`one_per_record`): ``original`` is the whole message, ``elements``
    counts the rejected elements per reason and ``listed`` names the first few.
    """

    reason: RejectReason
    message: str
    source: SourcePosition
    original: bytes
    index: int | None = None
    event_id: str | None = None
    use_case: str | None = None
    field: str | None = None
    #: Rejected elements per reason, for a summary of several (None: one record).
    elements: dict[str, int] | None = None
    #: The first rejected elements of a summary: index, reason, message, field.
    listed: list[dict[str, Any]] | None = None

    def counts(self) -> dict[str, int]:
        """Rejected records or elements per reason: what metrics and summaries count."""
        return dict(self.elements) if self.elements else {self.reason.value: 1}

    def to_dict(self, max_bytes: int = MAX_DEAD_LETTER_BYTES) -> dict[str, Any]:
        """The dead-letter record, at most ``max_bytes`` once serialized as JSON.

        An original too big for the bound is cut to a head that fits, flagged
        ``original_truncated`` with its ``original_size`` and ``original_sha256``
        (so the full record can still be found and matched at its source).
        """
        out = self._envelope()
        full = _b64_len(len(self.original))
        # 20 bytes: the "original_b64":"" key, quotes and comma.
        if len(orjson.dumps(out)) + full + 20 <= max_bytes:
            out["original_b64"] = base64.b64encode(self.original).decode("ascii")
            return out
        out["original_truncated"] = True
        out["original_size"] = len(self.original)
        out["original_sha256"] = hashlib.sha256(self.original).hexdigest()
        room = max_bytes - len(orjson.dumps(out)) - 20
        head = max(0, room // 4 * 3)
        out["original_b64"] = base64.b64encode(self.original[:head]).decode("ascii")
        return out

    def _envelope(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema_version": 1,
            "reason": str(self.reason),
            "message": self.message[:MAX_ECHO_CHARS],
            "source": self.source.to_dict(self.index),
            "original_text": self.original[: 4 * TEXT_PREVIEW_CHARS].decode("utf-8", "replace")[
                :TEXT_PREVIEW_CHARS
            ],
        }
        if self.event_id is not None:
            out["event_id"] = self.event_id[:MAX_ECHO_CHARS]
        if self.use_case is not None:
            out["use_case"] = self.use_case[:MAX_ECHO_CHARS]
        if self.field is not None:
            out["field"] = self.field[:MAX_ECHO_CHARS]
        if self.elements:
            out["rejected_elements"] = dict(self.elements)
            out["listed_elements"] = list(self.listed or [])
        return out


def _b64_len(size: int) -> int:
    return (size + 2) // 3 * 4


def one_per_record(letters: list[DeadLetter], original: bytes) -> list[DeadLetter]:
    """At most one dead letter for one record: several become one summary.

    A message of 100k junk array elements gave 100k letters, each with its
    element, a preview and the envelope (21 MB for 200 KB). The summary holds
    the message once, counts its rejected elements per reason and lists the
    first :data:`MAX_LISTED_ELEMENTS`; the valid elements were used anyway.

    >>> src = SourcePosition("t", partition=0, offset=1)
    >>> bad = [DeadLetter(RejectReason.NOT_OBJECT, "x", src, b"1", index=i) for i in range(3)]
    >>> [(d.reason.value, d.elements, d.index) for d in one_per_record(bad, b"[1,1,1]")]
    [('not_object', {'not_object': 3}, None)]
    """
    if len(letters) <= 1:
        return letters
    by_reason = Counter(letter.reason.value for letter in letters)
    first = letters[0]
    listed = [
        {
            k: v
            for k, v in (
                ("index", d.index),
                ("reason", d.reason.value),
                ("message", d.message[:200]),
                ("field", d.field),
            )
            if v is not None
        }
        for d in letters[:MAX_LISTED_ELEMENTS]
    ]
    reason = RejectReason(by_reason.most_common(1)[0][0])
    return [
        DeadLetter(
            reason,
            f"{len(letters)} elements rejected "
            f"({', '.join(f'{n} {r}' for r, n in by_reason.most_common())}); "
            f"first: {first.message[:200]}",
            first.source,
            original,
            elements=dict(by_reason),
            listed=listed,
        )
    ]


def one_per_source(letters: list[DeadLetter]) -> list[DeadLetter]:
    """Letters of one source record (a Kafka offset, a file line) merged into one.

    For what the decoder did not already merge: the engine's ``late`` letters,
    one per event of a message behind the watermark (2,000 late events of a
    107 KB message wrote 1.5 MB). The summary's original is the JSON array of
    the letters' originals, in order: still a record that can be replayed.

    >>> src = SourcePosition("t", partition=0, offset=1)
    >>> late = [DeadLetter(RejectReason.LATE, "x", src, b"{}") for _ in range(2)]
    >>> [(d.original, d.elements) for d in one_per_source(late)]
    [(b'[{},{}]', {'late': 2})]
    """
    if len(letters) <= 1:
        return letters
    groups: dict[SourcePosition, list[DeadLetter]] = {}
    for letter in letters:
        groups.setdefault(letter.source, []).append(letter)
    if len(groups) == len(letters):
        return letters
    out: list[DeadLetter] = []
    for group in groups.values():
        if len(group) == 1 or any(d.elements for d in group):
            out += group  # a summary already stands for its record: keep it whole
        else:
            out += one_per_record(group, b"[" + b",".join(d.original for d in group) + b"]")
    return out
