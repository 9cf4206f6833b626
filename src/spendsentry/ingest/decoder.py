"""Decode raw records (a Kafka message value or a replay line) into events.

A record holds one JSON event object or a JSON array of them (producers that
batch). Each element is validated on its own: one bad element of a batch is
dead-lettered, the others are kept.

>>> d = Decoder()
>>> r = d.decode(b'{"event_id":"e1","ts":1793610000,"use_case":"support","input_tokens":12}',
...              SourcePosition("stdin", line=1), now=1793610000.0)
>>> r.events[0].use_case, r.events[0].input_tokens, r.rejected
('support', 12, [])
>>> r = d.decode(b'{"event_id":"e2","ts":"yesterday","use_case":"support"}',
...              SourcePosition("stdin", line=2), now=1793610000.0)
>>> r.rejected[0].reason.value, r.rejected[0].message
('bad_timestamp', "ts: timestamp 'yesterday' is not RFC 3339")
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec
import orjson

from spendsentry.events import Event, UsageEvent
from spendsentry.ingest.deadletter import (
    DeadLetter,
    RejectReason,
    SourcePosition,
    one_per_record,
)
from spendsentry.ingest.foreign import ForeignShapes
from spendsentry.ingest.limits import IDENTIFIER_FIELDS, IngestLimits
from spendsentry.ingest.litellm import LiteLLMMapping
from spendsentry.ingest.otlp import OtlpMapping
from spendsentry.ingest.validate import EventValidator, Reject, json_type
from spendsentry.timeutil import MILLIS_THRESHOLD, parse_ts

#: The limits and the identifier fields moved to :mod:`spendsentry.ingest.limits`;
#: they are still importable from here.
__all__ = ["IDENTIFIER_FIELDS", "Adapter", "DecodeResult", "Decoder", "IngestLimits"]


@functools.lru_cache(maxsize=16)
def _native_decoder(limits: IngestLimits) -> msgspec.json.Decoder[Any]:
    """A C-speed decoder for well-formed native usage events under ``limits``.

    Its struct mirrors schemas/usage-event.json field by field, with the
    limits as constraints. It accepts only what the Python validator would
    accept unchanged: unknown fields (kept in ``extra``), outcomes, foreign
    shapes, floats for token counts and every invalid value fail here and go
    the slow path, which names the reason. ``ts`` stays raw: string
    timestamps and the future check are handled after decoding.
    """
    tokens = Annotated[int, msgspec.Meta(ge=0, le=limits.max_tokens)] | None
    # Over-long identifiers fail here and get their reason on the checking path.
    text = Annotated[str, msgspec.Meta(max_length=limits.max_identifier_chars)] | None
    wire = msgspec.defstruct(
        "NativeUsage",
        [
            (
                "event_id",
                Annotated[str, msgspec.Meta(min_length=1, max_length=limits.max_identifier_chars)],
            ),
            ("ts", str | int | float),
            (
                "use_case",
                Annotated[str, msgspec.Meta(min_length=1, max_length=limits.max_use_case_chars)],
            ),
            ("type", Literal["usage"] | None, None),
            ("kind", Literal["llm_call", "tool_call", "retrieval", "embedding"] | None, None),
            ("provider", text, None),
            ("model", text, None),
            ("requested_model", text, None),
            ("fallback", bool | None, None),
            ("input_tokens", tokens, None),
            ("output_tokens", tokens, None),
            ("cached_input_tokens", tokens, None),
            ("reasoning_tokens", tokens, None),
            (
                "cost_usd",
                Annotated[float, msgspec.Meta(ge=0.0, le=limits.max_cost_usd)] | None,
                None,
            ),
            ("session_id", text, None),
            ("request_id", text, None),
            ("agent_id", text, None),
            ("tool_name", text, None),
            ("content_hash", text, None),
            ("environment", text, None),
            ("team", text, None),
            ("latency_ms", Annotated[float, msgspec.Meta(ge=0.0)] | None, None),
            ("status", text, None),
        ],
        forbid_unknown_fields=True,
        # Decoded structs live for one record and hold only strings and numbers.
        gc=False,
    )
    return msgspec.json.Decoder(wire | list[wire])  # type: ignore[valid-type]


@dataclass(slots=True)
class DecodeResult:
    events: list[Event] = field(default_factory=list)
    rejected: list[DeadLetter] = field(default_factory=list)
    #: Foreign records that are not operations spendsentry counts (OTLP spans
    #: without GenAI attributes, LiteLLM file/batch calls): skipped, not errors.
    skipped: int = 0


#: An adapter turns one decoded JSON object of a foreign shape into events.
#: It returns None when the object is not its shape.
Adapter = Callable[[dict[str, Any]], "list[dict[str, Any]] | None"]


class Decoder:
    """Turns raw records into :class:`UsageEvent` / :class:`OutcomeEvent` objects.

    Stateless apart from its configuration, so one decoder serves every
    partition. Duplicates are not its business: the engine drops them.

    Besides native events it recognises, per JSON object, an OTLP JSON trace
    batch (``resourceSpans``) and a LiteLLM ``StandardLoggingPayload``, and a
    record that is not JSON but an OTLP protobuf trace request; their
    mappings default to the ``SPENDSENTRY_OTLP_*`` / ``SPENDSENTRY_LITELLM_*``
    environment variables (see docs/integrations.md).
    """

    def __init__(
        self,
        limits: IngestLimits | None = None,
        *,
        otlp: OtlpMapping | None = None,
        litellm: LiteLLMMapping | None = None,
        fast_path: bool = True,
    ) -> None:
        self.limits = limits or IngestLimits()
        self.otlp = otlp or OtlpMapping.from_env()
        self.litellm = litellm or LiteLLMMapping.from_env()
        #: False decodes every record the checking way (the fast path's reference).
        self.fast_path = fast_path
        self._native = _native_decoder(self.limits)
        self._validator = EventValidator(self.limits)
        #: OTLP and LiteLLM shapes, checked by the same validator.
        self.foreign = ForeignShapes(self.otlp, self.litellm, self._validator.event_from_dict)

    def decode(
        self, raw: bytes, source: SourcePosition, *, now: float | None = None
    ) -> DecodeResult:
        """Decode one record; never raises on bad input."""
        result = DecodeResult()
        if len(raw) > self.limits.max_record_bytes:
            result.rejected.append(
                DeadLetter(
                    RejectReason.OVERSIZED,
                    f"record is {len(raw)} bytes, over the limit of {self.limits.max_record_bytes}",
                    source,
                    raw,
                )
            )
            return result
        clock = time.time() if now is None else now
        if self.fast_path:
            events = self.decode_native(raw, now=clock)
            if events is not None:
                result.events = events
                return result
        if not raw.strip():
            result.rejected.append(DeadLetter(RejectReason.EMPTY, "empty record", source, raw))
            return result
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            self.foreign.decode_binary(raw, source, exc, clock, result)
            result.rejected = one_per_record(result.rejected, raw)
            return result
        if isinstance(doc, list):
            for index, item in enumerate(doc):
                self._decode_object(item, source, index, None, clock, result)
        else:
            self._decode_object(doc, source, None, raw, clock, result)
        # Several bad elements (or spans) of one message: one summary letter
        # holding the message once, not one letter per element (amplification).
        result.rejected = one_per_record(result.rejected, raw)
        return result

    def decode_native(self, raw: bytes, *, now: float) -> list[Event] | None:
        """The fast path alone: the events of a well-formed native record, else None.

        A record is taken only when :meth:`decode` would accept every event in
        it unchanged and reject nothing; the events are then equal to what
        :meth:`decode` returns. ``None`` means "call :meth:`decode`", which
        names the reason of a bad record (so a caller can build the record's
        :class:`SourcePosition` only then). Records over the size limit are
        the caller's business (:meth:`decode` checks them first).

        >>> now = 1793610000.0
        >>> [(e.event_id, e.ts, e.kind) for e in Decoder().decode_native(
        ...     b'{"event_id":"e1","ts":1793609995,"use_case":"uc"}', now=now)]
        [('e1', 1793609995.0, 'llm_call')]
        >>> Decoder().decode_native(b'{"event_id":"e1","ts":1.7e9,"use_case":"uc","x":1}', now=now)
        >>> Decoder().decode_native(b'{"event_id":"e1","ts":1,"use_case":"uc"}', now=now)
        """
        # A well-formed native record decodes in C. Anything msgspec does not
        # take (bad values, foreign shapes, outcomes, extra fields) goes the
        # checking path, which names the reason: the outcome never depends on
        # the path, only the speed does.
        try:
            native = self._native.decode(raw)
        except msgspec.DecodeError:
            return None
        latest = now + self.limits.max_future_s
        earliest = self.limits.min_ts
        events: list[Event] = []
        for w in native if type(native) is list else (native,):
            ts = w.ts
            if type(ts) is not float or not 0.0 <= ts < MILLIS_THRESHOLD:
                try:
                    ts = parse_ts(ts)
                except (TypeError, ValueError):
                    return None
            if ts > latest or ts < earliest:
                return None
            events.append(
                UsageEvent(
                    w.event_id,
                    ts,
                    w.use_case,
                    w.kind or "llm_call",
                    w.provider,
                    w.model,
                    w.requested_model,
                    w.fallback or False,
                    w.input_tokens or 0,
                    w.output_tokens or 0,
                    w.cached_input_tokens or 0,
                    w.reasoning_tokens or 0,
                    w.cost_usd,
                    w.session_id,
                    w.request_id,
                    w.agent_id,
                    w.tool_name,
                    w.content_hash,
                    w.environment,
                    w.team,
                    w.latency_ms,
                    w.status,
                    {},
                )
            )
        return events

    def decode_otlp(
        self, doc: dict[str, Any], source: SourcePosition, *, now: float | None = None
    ) -> DecodeResult:
        """The events of one parsed OTLP trace request (JSON, or :func:`decode_traces`'s dict).

        For the OTLP/HTTP receiver, which has parsed the body already and must
        not take other shapes. Dead letters are per span (``index``), not
        merged: the receiver reports them in its partial-success answer.
        """
        result = DecodeResult()
        clock = time.time() if now is None else now
        self.foreign.decode(doc, source, None, None, clock, result)
        return result

    def _decode_object(
        self,
        doc: Any,
        source: SourcePosition,
        index: int | None,
        raw: bytes | None,
        now: float,
        result: DecodeResult,
    ) -> None:
        try:
            if not isinstance(doc, dict):
                raise Reject(
                    RejectReason.NOT_OBJECT,
                    f"expected a JSON object, got {json_type(doc)}",
                )
            # Native events always carry event_id, foreign shapes never do: one
            # key check is all the native hot path pays for shape recognition.
            if "event_id" not in doc and self.foreign.decode(doc, source, index, raw, now, result):
                return
            result.events.append(self.event_from_dict(doc, now))
        except Reject as rej:
            original = raw if raw is not None else orjson.dumps(doc)
            event_id = use_case = None
            if isinstance(doc, dict):
                event_id = doc.get("event_id") if isinstance(doc.get("event_id"), str) else None
                use_case = doc.get("use_case") if isinstance(doc.get("use_case"), str) else None
            result.rejected.append(
                DeadLetter(
                    rej.reason,
                    rej.message,
                    source,
                    original,
                    index=index,
                    event_id=event_id,
                    use_case=use_case,
                    field=rej.field_name,
                )
            )

    def event_from_dict(self, doc: dict[str, Any], now: float) -> Event:
        """Validate one JSON object and build its event (raises ``Reject``)."""
        return self._validator.event_from_dict(doc, now)
