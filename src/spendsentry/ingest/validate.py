"""The checking path: validate one JSON object as an event and build it, or say why not."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from spendsentry.events import INGEST_ONLY_FIELDS, USAGE_KINDS, Event, OutcomeEvent, UsageEvent
from spendsentry.ingest.deadletter import RejectReason
from spendsentry.ingest.limits import IDENTIFIER_FIELDS, IngestLimits
from spendsentry.timeutil import MILLIS_THRESHOLD, format_ts, parse_ts


class Reject(Exception):
    """Why a JSON object is not an event: the dead letter's reason, message and field."""

    def __init__(self, reason: RejectReason, message: str, field_name: str | None = None):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.field_name = field_name


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


class EventValidator:
    """Builds a :class:`UsageEvent` or :class:`OutcomeEvent` from one JSON object.

    Every problem raises :class:`Reject` with the dead letter's reason. The
    reason never depends on which check runs first for a well-formed field:
    lengths are checked before anything else.

    >>> v = EventValidator(IngestLimits())
    >>> v.event_from_dict({"event_id": "e1", "ts": 1793610000.0, "use_case": "uc"},
    ...                   now=1793610000.0).kind
    'llm_call'
    >>> try:
    ...     v.event_from_dict({"event_id": "e1", "ts": 1.7e9, "use_case": "uc",
    ...                        "input_tokens": -1}, now=1793610000.0)
    ... except Reject as rej:
    ...     print(rej.reason.value, rej.field_name)
    negative_value input_tokens
    """

    def __init__(self, limits: IngestLimits) -> None:
        self.limits = limits

    def _check_lengths(self, doc: dict[str, Any]) -> None:
        """Over-long names and ids never enter engine state: ``oversized``.

        Checked before anything else, so the reason does not depend on what
        else is wrong; values of other types are left to the type checks.
        """
        use_case = doc.get("use_case")
        limit = self.limits.max_use_case_chars
        if type(use_case) is str and len(use_case) > limit:
            raise Reject(
                RejectReason.OVERSIZED,
                f"use_case is {len(use_case)} characters, over the limit of {limit}",
                "use_case",
            )
        limit = self.limits.max_identifier_chars
        for name in IDENTIFIER_FIELDS:
            value = doc.get(name)
            if type(value) is str and len(value) > limit:
                raise Reject(
                    RejectReason.OVERSIZED,
                    f"{name} is {len(value)} characters, over the limit of {limit}",
                    name,
                )

    def event_from_dict(self, doc: dict[str, Any], now: float) -> Event:
        """Validate one JSON object and build its event (raises ``Reject``)."""
        self._check_lengths(doc)
        etype = doc.get("type", "usage")
        if etype == "usage" or etype is None:
            return self._usage(doc, now)
        if etype == "outcome":
            return self._outcome(doc, now)
        raise Reject(
            RejectReason.UNKNOWN_TYPE,
            f"type {str(etype)[:40]!r} is neither 'usage' nor 'outcome'",
            "type",
        )

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
                raise Reject(
                    RejectReason.FUTURE_TIMESTAMP,
                    f"ts is {raw_ts - now:.0f} s in the future "
                    f"(limit {self.limits.max_future_s:.0f} s)",
                    "ts",
                )
            return event_id, raw_ts, use_case
        if len(use_case) > self.limits.max_use_case_chars:
            raise Reject(
                RejectReason.ABSURD_VALUE,
                f"use_case is {len(use_case)} characters, over {self.limits.max_use_case_chars}",
                "use_case",
            )
        if "ts" not in doc or doc["ts"] is None:
            raise Reject(RejectReason.MISSING_FIELD, "missing required field 'ts'", "ts")
        try:
            ts = parse_ts(doc["ts"])
        except (TypeError, ValueError) as exc:
            raise Reject(RejectReason.BAD_TIMESTAMP, f"ts: {exc}", "ts") from None
        if ts < self.limits.min_ts:
            raise Reject(
                RejectReason.BAD_TIMESTAMP,
                f"ts {format_ts(ts)} is before {format_ts(self.limits.min_ts)}, "
                "the earliest event time accepted (a clock at zero or a default date)",
                "ts",
            )
        if ts > now + self.limits.max_future_s:
            raise Reject(
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
            raise Reject(
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
            raise Reject(RejectReason.WRONG_TYPE, "fallback must be a boolean", "fallback")
        cost = get("cost_usd")
        if cost is not None and (type(cost) is not float or not 0.0 <= cost < math.inf):
            cost = _optional_number(doc, "cost_usd")
        if cost is not None and cost > self.limits.max_cost_usd:
            raise Reject(
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
            raise Reject(RejectReason.WRONG_TYPE, "success must be a boolean", "success")
        value = doc.get("value")
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise Reject(RejectReason.WRONG_TYPE, "value must be a number", "value")
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
            raise Reject(
                RejectReason.WRONG_TYPE, f"{name} must be an integer, got {json_type(value)}", name
            )
        if isinstance(value, float):
            if not math.isfinite(value) or value != int(value):
                raise Reject(RejectReason.WRONG_TYPE, f"{name} must be an integer", name)
            value = int(value)
        if value < 0:
            raise Reject(RejectReason.NEGATIVE_VALUE, f"{name} is negative ({value})", name)
        if value > self.limits.max_tokens:
            raise Reject(
                RejectReason.ABSURD_VALUE,
                f"{name} {value} is over the per-call limit of {self.limits.max_tokens}",
                name,
            )
        return value


def json_type(value: Any) -> str:
    """How the contract names the JSON type of ``value`` (for messages)."""
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
        raise Reject(RejectReason.MISSING_FIELD, f"missing required field {name!r}", name)
    if not isinstance(value, str):
        raise Reject(
            RejectReason.WRONG_TYPE, f"{name} must be a string, got {json_type(value)}", name
        )
    if not value:
        raise Reject(RejectReason.MISSING_FIELD, f"required field {name!r} is empty", name)
    return value


def _optional_str(doc: dict[str, Any], name: str) -> str | None:
    value = doc.get(name)
    if value is None or isinstance(value, str):
        return value
    raise Reject(RejectReason.WRONG_TYPE, f"{name} must be a string, got {json_type(value)}", name)


def _optional_number(doc: dict[str, Any], name: str) -> float | None:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Reject(
            RejectReason.WRONG_TYPE, f"{name} must be a number, got {json_type(value)}", name
        )
    if not math.isfinite(value):
        raise Reject(RejectReason.WRONG_TYPE, f"{name} must be a finite number", name)
    if value < 0:
        raise Reject(RejectReason.NEGATIVE_VALUE, f"{name} is negative ({value})", name)
    return float(value)
