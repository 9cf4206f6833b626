"""OTLP trace batches (OpenTelemetry GenAI and OpenInference spans) as usage events.

The OpenTelemetry Collector's Kafka exporter with ``encoding: otlp_json`` writes
one ``ExportTraceServiceRequest`` per message (``otlp_proto``, the default, is
read into the same dict by :mod:`spendsentry.ingest.otlp_proto`)::

    {"resourceSpans": [{"resource": {"attributes": [...]},
                        "scopeSpans": [{"scope": {...}, "spans": [...]}]}]}

Attributes are ``{"key": ..., "value": {"stringValue" | "intValue" | ...}}``
lists; ``intValue`` and the ``*UnixNano`` times are int64s, so JSON carries them
as strings. Trace and span ids are hex in OTLP JSON (what the Collector writes);
the plain protobuf JSON mapping (``MessageToJson``) writes them base64, so both
are accepted and normalised to hex, which keeps ``event_id`` the same whichever
encoder produced the batch.

Each span that carries GenAI semantic-convention attributes (or OpenInference's
``llm.*`` / ``openinference.span.kind``) becomes one usage event (a
contract-shaped dict that the native validator then checks, so every limit
applies the same way). Spans with none of them, and agent or workflow spans
(``invoke_agent``, ``create_agent``, ``invoke_workflow``, OpenInference
``AGENT`` / ``CHAIN``, whose usage attributes add up their children's and would
count them twice), are skipped and counted, not dead-lettered; their agent and
conversation are lent to their direct children in the same batch. A span that
names no use case gets the default one (:mod:`spendsentry.ingest.attribution`).

>>> batch = {"resourceSpans": [{"resource": {"attributes": [
...     {"key": "service.name", "value": {"stringValue": "support-bot"}}]},
...   "scopeSpans": [{"spans": [{
...     "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
...     "startTimeUnixNano": "1793610000000000000", "endTimeUnixNano": "1793610001500000000",
...     "attributes": [
...       {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
...       {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
...       {"key": "gen_ai.response.model", "value": {"stringValue": "gpt-4o-mini"}},
...       {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "1200"}}]}]}]}]}
>>> mapped = map_traces(batch)
>>> event = mapped.items[0].event
>>> event["event_id"], event["use_case"], event["kind"], event["input_tokens"]
('5b8efff798038103d269b633813fc60c:eee19b7ec3c1b174', 'support-bot', 'llm_call', 1200)
>>> event["model"], event["requested_model"], event["ts"], event["latency_ms"]
('gpt-4o-mini', 'gpt-4o', 1793610000.0, 1500.0)
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from spendsentry.ingest.attribution import UNATTRIBUTED, default_use_case
from spendsentry.ingest.deadletter import RejectReason

#: The environment variable that names the span/resource attribute holding the use case.
USE_CASE_ATTRIBUTE_ENV = "SPENDSENTRY_OTLP_USE_CASE_ATTRIBUTE"
DEFAULT_USE_CASE_ATTRIBUTE = "spendsentry.use_case"

#: gen_ai.operation.name -> usage event kind.
OPERATION_KINDS: dict[str, str] = {
    "chat": "llm_call",
    "text_completion": "llm_call",
    "generate_content": "llm_call",
    "embeddings": "embedding",
    "execute_tool": "tool_call",
    "retrieval": "retrieval",
}

#: Wrapper spans: their usage attributes (when set) sum their children's calls.
WRAPPER_OPERATIONS = frozenset({"invoke_agent", "create_agent", "invoke_workflow"})

#: OpenInference ``openinference.span.kind`` -> usage event kind (AGENT and CHAIN
#: wrap their children, like the wrapper operations; the rest cost nothing).
OPENINFERENCE_KINDS: dict[str, str] = {
    "LLM": "llm_call",
    "EMBEDDING": "embedding",
    "RETRIEVER": "retrieval",
    "RERANKER": "retrieval",
    "TOOL": "tool_call",
}

#: Span status code for an error: 2 in OTLP JSON, the enum name in protobuf JSON.
_ERROR_STATUS = (2, "STATUS_CODE_ERROR")

#: A served model that only adds a version or date to the requested one is the
#: same model (gpt-4o-mini -> gpt-4o-mini-2024-07-18), not a re-route.
_SNAPSHOT_SUFFIX = re.compile(r"-(\d[\d.\-]*|latest|v\d[\d.]*|preview(-[\d\-]+)?)")


class MappingError(ValueError):
    """A foreign record (span, LiteLLM payload) that cannot become an event.

    Shared by the foreign-shape adapters: the decoder turns it into a dead
    letter with ``reason``, ``message`` and ``field``.
    """

    def __init__(self, reason: RejectReason, message: str, field_name: str | None = None):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.field_name = field_name


@dataclass(frozen=True, slots=True)
class OtlpMapping:
    """Where the use case of a span comes from.

    The first of: ``use_case_attribute`` on the span, then on the resource;
    ``gen_ai.agent.name`` on the span; the resource's ``service.name`` (not the
    SDK's ``unknown_service`` placeholder); then ``default_use_case``
    (:mod:`spendsentry.ingest.attribution`), so no span with spend is dropped.
    """

    use_case_attribute: str = DEFAULT_USE_CASE_ATTRIBUTE
    default_use_case: str = UNATTRIBUTED

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OtlpMapping:
        """Read ``SPENDSENTRY_OTLP_USE_CASE_ATTRIBUTE`` (default ``spendsentry.use_case``).

        >>> OtlpMapping.from_env({"SPENDSENTRY_OTLP_USE_CASE_ATTRIBUTE": "app.feature"})
        OtlpMapping(use_case_attribute='app.feature', default_use_case='unattributed')
        """
        env = os.environ if environ is None else environ
        name = env.get(USE_CASE_ATTRIBUTE_ENV, "").strip()
        return cls(name or DEFAULT_USE_CASE_ATTRIBUTE, default_use_case(env))


@dataclass(slots=True)
class MappedSpan:
    """One span's result: an event dict, or the reason it cannot be one."""

    index: int
    span: Any
    event: dict[str, Any] | None = None
    error: MappingError | None = None


@dataclass(slots=True)
class MappedTraces:
    """What one OTLP batch holds for spendsentry."""

    items: list[MappedSpan] = field(default_factory=list)
    #: Spans that are not GenAI operations spendsentry counts.
    skipped: int = 0


def is_otlp_traces(doc: dict[str, Any]) -> bool:
    """True for an ``ExportTraceServiceRequest`` object.

    >>> is_otlp_traces({"resourceSpans": []}), is_otlp_traces({"event_id": "e"})
    (True, False)
    """
    return "resourceSpans" in doc


def map_traces(doc: dict[str, Any], mapping: OtlpMapping | None = None) -> MappedTraces:
    """Map every span of an OTLP JSON trace batch.

    Raises :class:`MappingError` when the batch itself is malformed (then no
    span of it is trusted); a malformed span only fails itself. ``index`` of a
    span counts spans across the whole batch, in order.
    """
    mapping = mapping or OtlpMapping()
    out = MappedTraces()
    resource_spans = _list(doc, "resourceSpans")
    spans: list[tuple[Any, dict[str, Any]]] = []
    for rs in resource_spans:
        if not isinstance(rs, dict):
            raise MappingError(RejectReason.WRONG_TYPE, "resourceSpans[] must be objects")
        resource = rs.get("resource")
        if resource is None:
            resource = {}
        elif not isinstance(resource, dict):
            raise MappingError(RejectReason.WRONG_TYPE, "resource must be an object", "resource")
        resource_attrs = _attributes(resource, "resource.attributes")
        for ss in _list(rs, "scopeSpans"):
            if not isinstance(ss, dict):
                raise MappingError(RejectReason.WRONG_TYPE, "scopeSpans[] must be objects")
            spans.extend((span, resource_attrs) for span in _list(ss, "spans"))
    agents = _agent_contexts(spans)
    for index, (span, resource_attrs) in enumerate(spans):
        item = MappedSpan(index, span)
        try:
            item.event = _span_event(span, resource_attrs, mapping, agents)
        except MappingError as exc:
            item.error = exc
        if item.event is None and item.error is None:
            out.skipped += 1
        else:
            out.items.append(item)
    return out


def _agent_contexts(spans: list[tuple[Any, dict[str, Any]]]) -> dict[str, dict[str, str]]:
    """Agent spans of the batch by span id: what their direct children inherit.

    An ``invoke_agent`` span carries ``gen_ai.agent.*`` and the conversation
    id; the model and tool calls under it often carry neither. Only spans of
    the same batch are seen (an exporter batches a trace's spans as they end,
    so a parent usually travels with its children).
    """
    agents: dict[str, dict[str, str]] = {}
    for span, _ in spans:
        if not isinstance(span, dict) or not isinstance(span.get("spanId"), str):
            continue
        try:
            attrs = _attributes(span, "attributes")
            wrapper = (
                _str(attrs, "gen_ai.operation.name") in WRAPPER_OPERATIONS
                or (_str(attrs, "openinference.span.kind") or "").upper() == "AGENT"
            )
            if not wrapper:
                continue
            context = {
                "agent_id": _first_str(attrs, "gen_ai.agent.id", "gen_ai.agent.name"),
                "agent_name": _str(attrs, "gen_ai.agent.name"),
                "session_id": _first_str(attrs, "gen_ai.conversation.id", "session.id"),
            }
        except MappingError:
            continue  # the span itself is judged (and skipped) on its own
        agents[span["spanId"]] = {k: v for k, v in context.items() if v is not None}
    return agents


def _list(doc: dict[str, Any], name: str) -> list[Any]:
    value = doc.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise MappingError(RejectReason.WRONG_TYPE, f"{name} must be an array", name)
    return value


def _attributes(owner: dict[str, Any], where: str) -> dict[str, Any]:
    """``{key: AnyValue object}``; values are converted only when read."""
    raw = owner.get("attributes")
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise MappingError(RejectReason.WRONG_TYPE, f"{where} must be an array", where)
    attrs: dict[str, Any] = {}
    for kv in raw:
        if not isinstance(kv, dict) or not isinstance(kv.get("key"), str):
            raise MappingError(
                RejectReason.WRONG_TYPE, f"{where}[] must be objects with a string key", where
            )
        attrs[kv["key"]] = kv.get("value")
    return attrs


def _value(attrs: dict[str, Any], key: str) -> Any:
    """The plain value of attribute ``key`` (None when absent or empty)."""
    any_value = attrs.get(key)
    if any_value is None:
        return None
    if not isinstance(any_value, dict):
        raise MappingError(
            RejectReason.WRONG_TYPE, f"attribute {key}: value must be an object", key
        )
    for kind, value in any_value.items():
        convert = _ANY_VALUE.get(kind)
        if convert is not None:
            return convert(value, key)
    return None


def _string_value(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise MappingError(RejectReason.WRONG_TYPE, f"{key}: stringValue not a string", key)
    return value


def _double_value(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise MappingError(RejectReason.WRONG_TYPE, f"{key}: doubleValue not a number", key)
    try:
        return float(value)  # "NaN"/"Infinity" arrive as strings
    except ValueError:
        raise MappingError(
            RejectReason.WRONG_TYPE, f"{key}: doubleValue {value!r} is not a number", key
        ) from None


def _bool_value(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise MappingError(RejectReason.WRONG_TYPE, f"{key}: boolValue not a boolean", key)
    return value


def _array_value(value: Any, key: str) -> list[Any]:
    values = value.get("values") if isinstance(value, dict) else None
    return values if isinstance(values, list) else []


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _int64(value: Any, name: str) -> int:
    """An OTLP JSON int64: a decimal string (or a plain integer from lenient encoders).

    The range is checked: a 400-digit string is a valid Python int but would
    overflow every float conversion further on.

    >>> try:
    ...     _int64("9" * 30, "ts")
    ... except MappingError as exc:
    ...     print(exc.reason.value, exc)
    absurd_value ts 999999999999999999999999999999 is out of the int64 range
    """
    if isinstance(value, bool):
        raise MappingError(RejectReason.WRONG_TYPE, f"{name} must be an integer", name)
    number: int | None = None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and math.isfinite(value) and value == int(value):
        number = int(value)
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):  # named below, with the value
            number = int(value, 10)
    if number is None:
        raise MappingError(
            RejectReason.WRONG_TYPE, f"{name} must be an integer, got {str(value)[:40]!r}", name
        )
    if not _INT64_MIN <= number <= _INT64_MAX:
        raise MappingError(
            RejectReason.ABSURD_VALUE, f"{name} {str(value)[:40]} is out of the int64 range", name
        )
    return number


def _str(attrs: dict[str, Any], key: str) -> str | None:
    value = _value(attrs, key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MappingError(RejectReason.WRONG_TYPE, f"{key} must be a string", key)
    return value


def _tokens(attrs: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = _value(attrs, key)
        if value is None:
            continue
        if isinstance(value, float) and math.isfinite(value) and value == int(value):
            value = int(value)  # some instrumentations record counts as doubles
        if isinstance(value, bool) or not isinstance(value, int):
            raise MappingError(RejectReason.WRONG_TYPE, f"{key} must be an integer", key)
        return value
    return None


def trace_id_hex(value: Any, name: str, size: int) -> str:
    """Normalise a trace id (16 bytes) or span id (8 bytes) to lowercase hex.

    >>> trace_id_hex("eee19b7ec3c1b174", "spanId", 8)
    'eee19b7ec3c1b174'
    >>> trace_id_hex("7uGbfsPBsXQ=", "spanId", 8)
    'eee19b7ec3c1b174'
    """
    if value is None or value == "":
        raise MappingError(RejectReason.MISSING_FIELD, f"span has no {name}", name)
    if not isinstance(value, str):
        raise MappingError(RejectReason.WRONG_TYPE, f"{name} must be a string", name)
    if len(value) == 2 * size:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raw = b""
    else:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
    if len(raw) != size:
        raise MappingError(
            RejectReason.INVALID_VALUE,
            f"{name} {value[:48]!r} is neither {2 * size} hex digits nor base64 of {size} bytes",
            name,
        )
    if not any(raw):
        raise MappingError(RejectReason.INVALID_VALUE, f"{name} is all zeros (invalid)", name)
    return raw.hex()


def same_model(requested: str, served: str) -> bool:
    """True when ``served`` is ``requested`` or a dated/versioned snapshot of it.

    >>> same_model("gpt-4o-mini", "gpt-4o-mini-2024-07-18"), same_model("gpt-4o", "gpt-4o-mini")
    (True, False)
    """
    if served == requested:
        return True
    return served.startswith(requested) and bool(
        _SNAPSHOT_SUFFIX.fullmatch(served[len(requested) :])
    )


#: Attribute prefixes that make a span worth a closer look (GenAI semconv, OpenInference).
_GENAI_PREFIXES = ("gen_ai.", "llm.", "openinference.")


def _span_event(
    span: Any,
    resource_attrs: dict[str, Any],
    mapping: OtlpMapping,
    agents: Mapping[str, dict[str, str]] | None = None,
) -> dict[str, Any] | None:
    """The usage event dict of one span; None for spans spendsentry does not count."""
    if not isinstance(span, dict):
        raise MappingError(RejectReason.NOT_OBJECT, "a span must be a JSON object")
    attrs = _attributes(span, "attributes")
    # The cheap test first: most spans of a traced service are not GenAI calls.
    if not any(key.startswith(_GENAI_PREFIXES) for key in attrs):
        return None
    input_tokens = _tokens(
        attrs, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"
    )
    output_tokens = _tokens(
        attrs,
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.token_count.completion",
    )
    requested = _str(attrs, "gen_ai.request.model")
    served = _str(attrs, "gen_ai.response.model") or _str(attrs, "llm.model_name")
    kind = _span_kind(
        _str(attrs, "gen_ai.operation.name"),
        _str(attrs, "openinference.span.kind"),
        requested is None and served is None and input_tokens is None and output_tokens is None,
    )
    if kind is None:
        return None
    trace_id = trace_id_hex(span.get("traceId"), "traceId", 16)
    span_id = trace_id_hex(span.get("spanId"), "spanId", 8)
    start_ns = _start_ns(span)
    parent_id = span.get("parentSpanId")
    parent = (agents or {}).get(parent_id) if isinstance(parent_id, str) else None
    parent = parent or {}
    event: dict[str, Any] = {
        "event_id": f"{trace_id}:{span_id}",
        "ts": start_ns / 1e9,
        "use_case": _use_case(attrs, resource_attrs, mapping, parent.get("agent_name")),
        "kind": kind,
    }
    end = span.get("endTimeUnixNano")
    if end not in (None, "", "0", 0):
        end_ns = _int64(end, "endTimeUnixNano")
        if end_ns >= start_ns:
            event["latency_ms"] = (end_ns - start_ns) / 1e6
    if served is not None and requested is not None and not same_model(requested, served):
        event["requested_model"] = requested
    optional = {
        "provider": _first_str(
            attrs, "gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system"
        ),
        "model": served or requested,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        # Cache writes (gen_ai.usage.cache_creation.input_tokens) are part of
        # gen_ai.usage.input_tokens by the convention and priced as input; reads
        # are the cached input. The older underscore name is still emitted by
        # some instrumentations.
        "cached_input_tokens": _tokens(
            attrs,
            "gen_ai.usage.cache_read.input_tokens",
            "gen_ai.usage.cache_read_input_tokens",
            "llm.token_count.prompt_details.cache_read",
        ),
        "reasoning_tokens": _tokens(
            attrs,
            "gen_ai.usage.reasoning.output_tokens",
            "llm.token_count.completion_details.reasoning",
        ),
        "session_id": _first_str(attrs, "gen_ai.conversation.id", "session.id")
        or parent.get("session_id"),
        "agent_id": _first_str(attrs, "gen_ai.agent.id", "gen_ai.agent.name")
        or parent.get("agent_id"),
        "tool_name": _first_str(attrs, "gen_ai.tool.name", "tool.name"),
        "request_id": _str(attrs, "gen_ai.response.id"),
        "cost_usd": _cost_usd(attrs),
    }
    event.update((k, v) for k, v in optional.items() if v is not None)
    status = span.get("status")
    if isinstance(status, dict) and status.get("code") in _ERROR_STATUS:
        event["status"] = "error"
    return event


def _first_str(attrs: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = _str(attrs, key)
        if value is not None:
            return value
    return None


def _cost_usd(attrs: dict[str, Any]) -> Any:
    """The cost the span reports in USD, which then wins over the price book.

    The proposed ``gen_ai.usage.cost.amount`` with ``gen_ai.usage.cost.currency``
    (an amount in another currency is left to the price book: spendsentry
    counts USD), else the older ``gen_ai.usage.cost`` several SDKs set, else
    OpenInference's ``llm.cost.total``. The value is checked by the validator.

    >>> attrs = {"gen_ai.usage.cost.amount": {"doubleValue": 0.25},
    ...          "gen_ai.usage.cost.currency": {"stringValue": "EUR"}}
    >>> _cost_usd(attrs) is None, _cost_usd({"llm.cost.total": {"doubleValue": 0.5}})
    (True, 0.5)
    """
    amount = _value(attrs, "gen_ai.usage.cost.amount")
    if amount is not None:
        currency = _str(attrs, "gen_ai.usage.cost.currency")
        return amount if currency is None or currency.upper() == "USD" else None
    cost = _value(attrs, "gen_ai.usage.cost")
    return cost if cost is not None else _value(attrs, "llm.cost.total")


def _span_kind(operation: str | None, openinference: str | None, silent: bool) -> str | None:
    """The event kind of a GenAI span (None: not counted); ``silent``: no model, no usage.

    >>> _span_kind("chat", None, False), _span_kind(None, None, False), _span_kind(None, None, True)
    ('llm_call', 'llm_call', None)
    >>> _span_kind(None, "LLM", True), _span_kind(None, "AGENT", False)
    ('llm_call', None)
    """
    if operation is not None:
        if operation in WRAPPER_OPERATIONS:
            return None
        return OPERATION_KINDS.get(operation)
    if openinference is not None:
        return OPENINFERENCE_KINDS.get(openinference.upper())
    # Instrumentations from before gen_ai.operation.name: a model call if
    # it names a model or reports usage, otherwise nothing to count.
    return None if silent else "llm_call"


def _start_ns(span: dict[str, Any]) -> int:
    """The span's start in nanoseconds since the epoch (required, not negative)."""
    if span.get("startTimeUnixNano") in (None, "", "0", 0):
        raise MappingError(
            RejectReason.MISSING_FIELD, "span has no startTimeUnixNano", "startTimeUnixNano"
        )
    start_ns = _int64(span["startTimeUnixNano"], "startTimeUnixNano")
    if start_ns < 0:
        raise MappingError(
            RejectReason.BAD_TIMESTAMP, "startTimeUnixNano is negative", "startTimeUnixNano"
        )
    return start_ns


def _use_case(
    attrs: dict[str, Any],
    resource_attrs: dict[str, Any],
    mapping: OtlpMapping,
    parent_agent: str | None = None,
) -> str:
    key = mapping.use_case_attribute
    service = _str(resource_attrs, "service.name")
    if service is not None and service.startswith("unknown_service"):
        service = None  # the SDK's placeholder names no use case
    return (
        _str(attrs, key)
        or _str(resource_attrs, key)
        or _str(attrs, "gen_ai.agent.name")
        or parent_agent
        or service
        or mapping.default_use_case
    )


#: OTLP ``AnyValue`` field -> its plain value (the first field an object has
#: that is listed here wins; kvlistValue and bytesValue are not read).
_ANY_VALUE: dict[str, Callable[[Any, str], Any]] = {
    "stringValue": _string_value,
    "intValue": _int64,
    "doubleValue": _double_value,
    "boolValue": _bool_value,
    "arrayValue": _array_value,
}
