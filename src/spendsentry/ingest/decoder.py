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

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec
import orjson

from spendsentry.events import INGEST_ONLY_FIELDS, USAGE_KINDS, Event, OutcomeEvent, UsageEvent
from spendsentry.ingest.deadletter import (
    DeadLetter,
    RejectReason,
    SourcePosition,
    one_per_record,
)
from spendsentry.ingest.litellm import LiteLLMMapping, is_litellm_payload, map_payload
from spendsentry.ingest.otlp import MappingError, OtlpMapping, is_otlp_traces, map_traces
from spendsentry.timeutil import MILLIS_THRESHOLD, format_ts, parse_ts


@dataclass(frozen=True, slots=True)
class IngestLimits:
    """Bounds that turn absurd input into dead letters instead of bad sums."""

    #: Records above this many bytes are rejected unparsed (a 1 MiB event is a bug).
    max_record_bytes: int = 1 << 20
    #: No single call has ten million tokens; more means a unit or overflow bug.
    max_tokens: int = 10_000_000
    #: No single call costs more than this many dollars.
    max_cost_usd: float = 10_000.0
    #: Event times further ahead of the clock than this are rejected (clock bugs).
    max_future_s: float = 300.0
    #: Event times before this (epoch seconds; 2000-01-01T00:00:00Z) are
    #: ``bad_timestamp``: a clock at zero, a default date of year 1. No AI usage
    #: is that old, and accepting it would start the engine's clock decades back.
    min_ts: float = 946_684_800.0
    #: Use case names longer than this are dead-lettered as ``oversized``.
    max_use_case_chars: int = 200
    #: Ids and names (:data:`IDENTIFIER_FIELDS`) longer than this are dead-lettered
    #: as ``oversized``: the engine keys state by them, and no real producer
    #: sends more (a UUID is 36 characters, a model name under 100).
    max_identifier_chars: int = 256


#: The strings besides ``use_case`` that the engine keys state by (dedupe ids,
#: sessions, requests, embedding hashes, models, outcome names) or keeps per
#: event; each is bounded by :attr:`IngestLimits.max_identifier_chars`.
IDENTIFIER_FIELDS = (
    "event_id",
    "session_id",
    "request_id",
    "agent_id",
    "tool_name",
    "provider",
    "model",
    "requested_model",
    "content_hash",
    "environment",
    "team",
    "status",
    "outcome",
)


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


class _Reject(Exception):
    """Internal: carries a reason out of the field validators."""

    def __init__(self, reason: RejectReason, message: str, field_name: str | None = None):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.field_name = field_name


@dataclass(slots=True)
class DecodeResult:
    events: list[Event] = field(default_factory=list)
    rejected: list[DeadLetter] = field(default_factory=list)
    #: Foreign records that are not operations spendsentry counts (OTLP spans
    #: without GenAI attributes, LiteLLM file/batch calls): skipped, not errors.
    skipped: int = 0


# The contract's fields are the event types' own (less what ingest adds): one list.
_USAGE_FIELDS = frozenset(UsageEvent.__struct_fields__) - INGEST_ONLY_FIELDS | {"type"}
_OUTCOME_NAMES = frozenset(f.name for f in dataclasses.fields(OutcomeEvent))
_OUTCOME_FIELDS = _OUTCOME_NAMES - INGEST_ONLY_FIELDS | {"type"}
_STR_FIELDS = (
    "provider",
    "model",
    "requested_model",
    "session_id",
    "request_id",
    "agent_id",
    "tool_name",
    "content_hash",
    "environment",
    "team",
    "status",
)
_TOKEN_FIELDS = ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens")

#: An adapter turns one decoded JSON object of a foreign shape into events.
#: It returns None when the object is not its shape.
Adapter = Callable[[dict[str, Any]], "list[dict[str, Any]] | None"]


class Decoder:
    """Turns raw records into :class:`UsageEvent` / :class:`OutcomeEvent` objects.

    Stateless apart from its configuration, so one decoder serves every
    partition. Duplicates are not its business: the engine drops them.

    Besides native events it recognises, per JSON object, an OTLP JSON trace
    batch (``resourceSpans``) and a LiteLLM ``StandardLoggingPayload``; their
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
            result.rejected.append(
                DeadLetter(RejectReason.NOT_JSON, f"not JSON: {exc}", source, raw)
            )
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
                raise _Reject(
                    RejectReason.NOT_OBJECT,
                    f"expected a JSON object, got {_json_type(doc)}",
                )
            # Native events always carry event_id, foreign shapes never do: one
            # key check is all the native hot path pays for shape recognition.
            if "event_id" not in doc and self._decode_foreign(doc, source, index, raw, now, result):
                return
            result.events.append(self.event_from_dict(doc, now))
        except _Reject as rej:
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

    def _decode_foreign(
        self,
        doc: dict[str, Any],
        source: SourcePosition,
        index: int | None,
        raw: bytes | None,
        now: float,
        result: DecodeResult,
    ) -> bool:
        """Decode an OTLP batch or LiteLLM payload; False when ``doc`` is neither.

        The adapters build contract-shaped dicts and the native validator
        checks them, so every limit applies alike. A dead letter keeps the
        foreign original: the span (``index`` counts spans across the batch)
        or the payload.
        """
        if is_otlp_traces(doc):
            try:
                traces = map_traces(doc, self.otlp)
            except MappingError as exc:
                self._reject_foreign(exc, doc, source, index, raw, result)
                return True
            result.skipped += traces.skipped
            for item in traces.items:
                self._append_foreign(
                    item.event, item.error, "otlp", item.span, source, item.index, None, now, result
                )
            return True
        if is_litellm_payload(doc):
            try:
                event = map_payload(doc, self.litellm)
            except MappingError as exc:
                self._reject_foreign(exc, doc, source, index, raw, result)
                return True
            if event is None:
                result.skipped += 1
            else:
                self._append_foreign(event, None, "litellm", doc, source, index, raw, now, result)
            return True
        return False

    def _append_foreign(
        self,
        event: dict[str, Any] | None,
        error: MappingError | None,
        source_format: str,
        original: Any,
        source: SourcePosition,
        index: int | None,
        raw: bytes | None,
        now: float,
        result: DecodeResult,
    ) -> None:
        if error is not None or event is None:
            problem = error or MappingError(RejectReason.INVALID_VALUE, "not an event")
            self._reject_foreign(problem, original, source, index, raw, result)
            return
        try:
            built = self.event_from_dict(event, now)
        except _Reject as rej:
            self._reject_foreign(rej, original, source, index, raw, result, event)
            return
        built.source_format = source_format
        result.events.append(built)

    @staticmethod
    def _reject_foreign(
        exc: MappingError | _Reject,
        original: Any,
        source: SourcePosition,
        index: int | None,
        raw: bytes | None,
        result: DecodeResult,
        event: dict[str, Any] | None = None,
    ) -> None:
        event = event or {}
        result.rejected.append(
            DeadLetter(
                exc.reason,
                exc.message,
                source,
                raw if raw is not None else orjson.dumps(original),
                index=index,
                event_id=event.get("event_id"),
                use_case=event.get("use_case"),
                field=exc.field_name,
            )
        )

    def _check_lengths(self, doc: dict[str, Any]) -> None:
        """Over-long names and ids never enter engine state: ``oversized``.

        Checked before anything else, so the reason does not depend on what
        else is wrong; values of other types are left to the type checks.
        """
        use_case = doc.get("use_case")
        limit = self.limits.max_use_case_chars
        if type(use_case) is str and len(use_case) > limit:
            raise _Reject(
                RejectReason.OVERSIZED,
                f"use_case is {len(use_case)} characters, over the limit of {limit}",
                "use_case",
            )
        limit = self.limits.max_identifier_chars
        for name in IDENTIFIER_FIELDS:
            value = doc.get(name)
            if type(value) is str and len(value) > limit:
                raise _Reject(
                    RejectReason.OVERSIZED,
                    f"{name} is {len(value)} characters, over the limit of {limit}",
                    name,
                )

    def event_from_dict(self, doc: dict[str, Any], now: float) -> Event:
        """Validate one JSON object and build its event (raises ``_Reject``)."""
        self._check_lengths(doc)
        etype = doc.get("type", "usage")
        if etype == "usage" or etype is None:
            return self._usage(doc, now)
        if etype == "outcome":
            return self._outcome(doc, now)
        raise _Reject(
            RejectReason.UNKNOWN_TYPE,
            f"type {str(etype)[:40]!r} is neither 'usage' nor 'outcome'",
            "type",
        )

    # -- field validators -------------------------------------------------

    def _common(self, doc: dict[str, Any], now: float) -> tuple[str, float, str]:
        event_id = doc.get("event_id")
        if type(event_id) is not str or not event_id:
            event_id = _required_str(doc, "event_id")  # raises with the reason
        use_case = doc.get("use_case")
        if type(use_case) is not str or not use_case:
            use_case = _required_str(doc, "use_case")
        raw_ts = doc.get("ts")
        # Fast path: epoch seconds as a float, the commonest shape from SDKs.
        if (
            type(raw_ts) is float
            and self.limits.min_ts <= raw_ts < MILLIS_THRESHOLD
            and len(use_case) <= (self.limits.max_use_case_chars)
        ):
            if raw_ts > now + self.limits.max_future_s:
                raise _Reject(
                    RejectReason.FUTURE_TIMESTAMP,
                    f"ts is {raw_ts - now:.0f} s in the future "
                    f"(limit {self.limits.max_future_s:.0f} s)",
                    "ts",
                )
            return event_id, raw_ts, use_case
        if len(use_case) > self.limits.max_use_case_chars:
            raise _Reject(
                RejectReason.ABSURD_VALUE,
                f"use_case is {len(use_case)} characters, over {self.limits.max_use_case_chars}",
                "use_case",
            )
        if "ts" not in doc or doc["ts"] is None:
            raise _Reject(RejectReason.MISSING_FIELD, "missing required field 'ts'", "ts")
        try:
            ts = parse_ts(doc["ts"])
        except (TypeError, ValueError) as exc:
            raise _Reject(RejectReason.BAD_TIMESTAMP, f"ts: {exc}", "ts") from None
        if ts < self.limits.min_ts:
            raise _Reject(
                RejectReason.BAD_TIMESTAMP,
                f"ts {format_ts(ts)} is before {format_ts(self.limits.min_ts)}, "
                "the earliest event time accepted (a clock at zero or a default date)",
                "ts",
            )
        if ts > now + self.limits.max_future_s:
            raise _Reject(
                RejectReason.FUTURE_TIMESTAMP,
                f"ts is {ts - now:.0f} s in the future (limit {self.limits.max_future_s:.0f} s)",
                "ts",
            )
        return event_id, ts, use_case

    def _usage(self, doc: dict[str, Any], now: float) -> UsageEvent:
        event_id, ts, use_case = self._common(doc, now)
        kind = doc.get("kind")
        if kind is None:
            kind = "llm_call"
        elif kind not in USAGE_KINDS:
            raise _Reject(
                RejectReason.INVALID_VALUE,
                f"kind {str(kind)[:40]!r} is not one of {', '.join(USAGE_KINDS)}",
                "kind",
            )
        get = doc.get
        # Fast path: exact ints in range (what every gateway sends). Anything
        # else goes through the checking path, which names the problem.
        tokens: list[Any] = [get(name) for name in _TOKEN_FIELDS]
        max_tokens = self.limits.max_tokens
        for i, value in enumerate(tokens):
            if type(value) is not int or not 0 <= value <= max_tokens:
                tokens[i] = self._tokens(doc, _TOKEN_FIELDS[i])
        strings = [get(name) for name in _STR_FIELDS]
        for value in strings:
            if value is not None and type(value) is not str:
                strings = [_optional_str(doc, name) for name in _STR_FIELDS]  # raises
                break
        fallback = doc.get("fallback")
        if fallback is None:
            fallback = False
        elif not isinstance(fallback, bool):
            raise _Reject(RejectReason.WRONG_TYPE, "fallback must be a boolean", "fallback")
        cost = get("cost_usd")
        if cost is not None and (type(cost) is not float or not 0.0 <= cost < math.inf):
            cost = _optional_number(doc, "cost_usd")
        if cost is not None and cost > self.limits.max_cost_usd:
            raise _Reject(
                RejectReason.ABSURD_VALUE,
                f"cost_usd {cost} is over the per-call limit of {self.limits.max_cost_usd}",
                "cost_usd",
            )
        latency = _optional_number(doc, "latency_ms")
        # Unknown fields are kept; the subset test runs in C and is usually true.
        extra = (
            {}
            if doc.keys() <= _USAGE_FIELDS
            else {k: v for k, v in doc.items() if k not in _USAGE_FIELDS}
        )
        return UsageEvent(
            event_id,
            ts,
            use_case,
            kind,
            strings[0],
            strings[1],
            strings[2],
            fallback,
            tokens[0],
            tokens[1],
            tokens[2],
            tokens[3],
            cost,
            strings[3],
            strings[4],
            strings[5],
            strings[6],
            strings[7],
            strings[8],
            strings[9],
            latency,
            strings[10],
            extra,
        )

    def _outcome(self, doc: dict[str, Any], now: float) -> OutcomeEvent:
        event_id, ts, use_case = self._common(doc, now)
        outcome = _required_str(doc, "outcome")
        success = doc.get("success")
        if success is not None and not isinstance(success, bool):
            raise _Reject(RejectReason.WRONG_TYPE, "success must be a boolean", "success")
        value = doc.get("value")
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _Reject(RejectReason.WRONG_TYPE, "value must be a number", "value")
            value = float(value)
        extra = {k: v for k, v in doc.items() if k not in _OUTCOME_FIELDS}
        return OutcomeEvent(
            event_id, ts, use_case, outcome, _optional_str(doc, "session_id"), success, value, extra
        )

    def _tokens(self, doc: dict[str, Any], name: str) -> int:
        value = doc.get(name)
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Reject(
                RejectReason.WRONG_TYPE, f"{name} must be an integer, got {_json_type(value)}", name
            )
        if isinstance(value, float):
            if not math.isfinite(value) or value != int(value):
                raise _Reject(RejectReason.WRONG_TYPE, f"{name} must be an integer", name)
            value = int(value)
        if value < 0:
            raise _Reject(RejectReason.NEGATIVE_VALUE, f"{name} is negative ({value})", name)
        if value > self.limits.max_tokens:
            raise _Reject(
                RejectReason.ABSURD_VALUE,
                f"{name} {value} is over the per-call limit of {self.limits.max_tokens}",
                name,
            )
        return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _required_str(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if value is None:
        raise _Reject(RejectReason.MISSING_FIELD, f"missing required field {name!r}", name)
    if not isinstance(value, str):
        raise _Reject(
            RejectReason.WRONG_TYPE, f"{name} must be a string, got {_json_type(value)}", name
        )
    if not value:
        raise _Reject(RejectReason.MISSING_FIELD, f"required field {name!r} is empty", name)
    return value


def _optional_str(doc: dict[str, Any], name: str) -> str | None:
    value = doc.get(name)
    if value is None or isinstance(value, str):
        return value
    raise _Reject(
        RejectReason.WRONG_TYPE, f"{name} must be a string, got {_json_type(value)}", name
    )


def _optional_number(doc: dict[str, Any], name: str) -> float | None:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Reject(
            RejectReason.WRONG_TYPE, f"{name} must be a number, got {_json_type(value)}", name
        )
    if not math.isfinite(value):
        raise _Reject(RejectReason.WRONG_TYPE, f"{name} must be a finite number", name)
    if value < 0:
        raise _Reject(RejectReason.NEGATIVE_VALUE, f"{name} is negative ({value})", name)
    return float(value)
