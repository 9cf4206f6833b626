"""LiteLLM ``StandardLoggingPayload`` objects as usage events.

LiteLLM (SDK and proxy) builds one ``StandardLoggingPayload`` per call
(``litellm/types/utils.py``) and hands it to every logging integration; the
generic API, S3/GCS and Kafka-style loggers write it as JSON. This adapter maps
one payload to one usage event dict, which the native validator then checks.

Field mapping: ``id`` -> event_id, ``startTime`` -> ts, ``call_type`` -> kind,
``custom_llm_provider`` -> provider, ``model`` -> model (``model_group``, when it
names another model, -> requested_model), ``prompt_tokens`` / ``completion_tokens``
(cached and reasoning tokens from ``metadata.usage_object``), ``response_cost``
-> cost_usd, ``session_id``, ``trace_id`` -> request_id, the MCP tool name,
the team alias -> team, ``end_user`` and ``status``.

The use case is the first found of (configurable, see :class:`LiteLLMMapping`):
the ``spendsentry.use_case`` metadata key (request metadata, requester metadata
on the proxy, or ``spend_logs_metadata``), the first request tag, the key's
team alias.

>>> payload = {"id": "chatcmpl-1", "trace_id": "t-1", "call_type": "acompletion",
...     "status": "success", "model": "gpt-4o-mini", "model_group": "gpt-4o-mini",
...     "custom_llm_provider": "openai", "prompt_tokens": 10, "completion_tokens": 20,
...     "response_cost": 1.35e-05, "startTime": 1793610000.0, "endTime": 1793610000.25,
...     "request_tags": ["support_chat"], "metadata": {"user_api_key_team_alias": "cx"}}
>>> event = map_payload(payload)
>>> event["use_case"], event["kind"], event["input_tokens"], event["cost_usd"], event["team"]
('support_chat', 'llm_call', 10, 1.35e-05, 'cx')
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spendsentry.ingest.attribution import UNATTRIBUTED, default_use_case
from spendsentry.ingest.deadletter import RejectReason
from spendsentry.ingest.otlp import MappingError, same_model

USE_CASE_KEY_ENV = "SPENDSENTRY_LITELLM_USE_CASE_KEY"
USE_CASE_FROM_ENV = "SPENDSENTRY_LITELLM_USE_CASE_FROM"
DEFAULT_USE_CASE_KEY = "spendsentry.use_case"
#: Where the use case may come from, in the default order.
USE_CASE_SOURCES = ("metadata", "tag", "team")

#: LiteLLM call types (``litellm.types.utils.CallTypes``) that are not model calls.
_KIND_BY_CALL_TYPE = {
    "embedding": "embedding",
    "aembedding": "embedding",
    "call_mcp_tool": "tool_call",
    "search": "retrieval",
    "asearch": "retrieval",
    "vector_store_search": "retrieval",
    "avector_store_search": "retrieval",
    "rerank": "retrieval",
    "arerank": "retrieval",
}

#: Call types that are model calls even when they report no tokens or cost.
_MODEL_CALLS = frozenset(
    {
        "completion",
        "acompletion",
        "text_completion",
        "atext_completion",
        "responses",
        "aresponses",
        "anthropic_messages",
        "aanthropic_messages",
        "generate_content",
        "agenerate_content",
    }
)

_STATUS = {"success": "ok", "failure": "error"}


@dataclass(frozen=True, slots=True)
class LiteLLMMapping:
    """How to find a payload's use case.

    ``use_case_from`` lists the sources to try in order: ``metadata`` (the
    ``use_case_key`` metadata key), ``tag`` (the first request tag that is not a
    header tag LiteLLM adds itself), ``team`` (the API key's team alias).
    A call none of them names goes to ``default_use_case``
    (:mod:`spendsentry.ingest.attribution`): its spend is not dropped.
    """

    use_case_key: str = DEFAULT_USE_CASE_KEY
    use_case_from: tuple[str, ...] = USE_CASE_SOURCES
    default_use_case: str = UNATTRIBUTED

    def __post_init__(self) -> None:
        unknown = [s for s in self.use_case_from if s not in USE_CASE_SOURCES]
        if unknown or not self.use_case_from:
            raise ValueError(
                f"use case sources must be some of {', '.join(USE_CASE_SOURCES)}, "
                f"got {', '.join(self.use_case_from) or 'none'}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LiteLLMMapping:
        """Read ``SPENDSENTRY_LITELLM_USE_CASE_KEY`` and ``..._USE_CASE_FROM``.

        >>> LiteLLMMapping.from_env({"SPENDSENTRY_LITELLM_USE_CASE_FROM": "team, tag"})
        LiteLLMMapping(use_case_key='spendsentry.use_case', use_case_from=('team', 'tag'), \
default_use_case='unattributed')
        """
        env = os.environ if environ is None else environ
        key = env.get(USE_CASE_KEY_ENV, "").strip() or DEFAULT_USE_CASE_KEY
        order = env.get(USE_CASE_FROM_ENV, "").strip()
        sources = tuple(s.strip() for s in order.split(",") if s.strip()) or USE_CASE_SOURCES
        return cls(key, sources, default_use_case(env))


def is_litellm_payload(doc: dict[str, Any]) -> bool:
    """True for an object shaped like LiteLLM's ``StandardLoggingPayload``.

    >>> is_litellm_payload({"id": "x", "call_type": "acompletion", "startTime": 1.0})
    True
    """
    return "call_type" in doc and "startTime" in doc


def map_payload(
    payload: dict[str, Any],
    mapping: LiteLLMMapping | None = None,
    *,
    request_metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The usage event dict for one payload; None for calls that cost nothing to count.

    ``request_metadata`` is the call's own metadata when the caller has it (the
    CustomLogger does): LiteLLM keeps only known keys in the payload's metadata.
    Raises :class:`~spendsentry.ingest.otlp.MappingError` for payloads that
    cannot be an event.
    """
    mapping = mapping or LiteLLMMapping()
    event_id = payload.get("id") or payload.get("litellm_call_id")
    if not isinstance(event_id, str) or not event_id:
        raise MappingError(RejectReason.MISSING_FIELD, "payload has no id", "id")
    call_type = payload.get("call_type")
    if not isinstance(call_type, str):
        raise MappingError(RejectReason.WRONG_TYPE, "call_type must be a string", "call_type")
    metadata = payload.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise MappingError(RejectReason.WRONG_TYPE, "metadata must be an object", "metadata")
    start = payload.get("startTime")
    if isinstance(start, bool) or not isinstance(start, int | float) or not math.isfinite(start):
        raise MappingError(
            RejectReason.BAD_TIMESTAMP, "startTime must be epoch seconds (a number)", "startTime"
        )
    kind = _KIND_BY_CALL_TYPE.get(call_type, "llm_call")
    cost = payload.get("response_cost")
    if cost == 0 and payload.get("response_cost_failure_debug_info"):
        cost = None  # LiteLLM could not price it: let the price book try
    if (
        kind == "llm_call"
        and call_type not in _MODEL_CALLS
        and not cost
        and not payload.get("prompt_tokens")
        and not payload.get("completion_tokens")
        and payload.get("status") != "failure"
    ):
        return None  # file, batch, assistant, listing calls: no spend to watch
    event: dict[str, Any] = {
        "event_id": event_id,
        "ts": start,
        "use_case": _use_case(payload, metadata, mapping, request_metadata),
        "kind": kind,
        "input_tokens": payload.get("prompt_tokens"),
        "output_tokens": payload.get("completion_tokens"),
        "cost_usd": cost,
    }
    model = payload.get("model") or None
    group = payload.get("model_group") or None
    # model_group is what the caller asked the router for; a provider prefix
    # ("openai/gpt-4o") or a dated snapshot of it is not a re-route.
    if (
        isinstance(model, str)
        and isinstance(group, str)
        and not same_model(group.rsplit("/", 1)[-1], model.rsplit("/", 1)[-1])
    ):
        event["requested_model"] = group
    hidden = payload.get("hidden_params")
    usage = metadata.get("usage_object") or (
        hidden.get("usage_object") if isinstance(hidden, dict) else None
    )
    tool = metadata.get("mcp_tool_call_metadata")
    end = payload.get("endTime")
    optional = {
        "provider": payload.get("custom_llm_provider") or None,
        "model": model,
        "cached_input_tokens": _cached_tokens(usage),
        "reasoning_tokens": _detail(usage, "completion_tokens_details", "reasoning_tokens"),
        "session_id": payload.get("session_id")
        or (request_metadata or {}).get("session_id")
        or None,
        "request_id": payload.get("trace_id") or None,
        "tool_name": (tool.get("namespaced_tool_name") or tool.get("name"))
        if isinstance(tool, dict)
        else None,
        "team": metadata.get("user_api_key_team_alias") or metadata.get("team_alias") or None,
        "end_user": payload.get("end_user") or None,
        "status": _status(payload.get("status")),
    }
    event.update((k, v) for k, v in optional.items() if v is not None)
    if isinstance(end, int | float) and not isinstance(end, bool) and end >= start:
        event["latency_ms"] = round((end - start) * 1000.0, 3)
    return event


def _status(value: Any) -> Any:
    """LiteLLM's success/failure as the ok/error the other producers use."""
    return _STATUS.get(value, value) if isinstance(value, str) else value


def _cached_tokens(usage: Any) -> Any:
    """Input tokens read from the prompt cache: OpenAI's ``prompt_tokens_details.cached_tokens``,
    else Anthropic's ``cache_read_input_tokens`` (LiteLLM passes both through).

    Tokens *written* to the cache (``cache_creation_input_tokens``) stay in
    ``input_tokens``: LiteLLM counts them in ``prompt_tokens`` and the event
    contract prices every input token that is not a cache read at the input
    rate (a provider's write premium, Anthropic's 1.25x, is not modelled).

    >>> _cached_tokens({"cache_read_input_tokens": 900, "cache_creation_input_tokens": 50})
    900
    >>> _cached_tokens({"prompt_tokens_details": {"cached_tokens": 0},
    ...                 "cache_read_input_tokens": 700})
    700
    >>> _cached_tokens({"prompt_tokens": 10}) is None
    True
    """
    cached = _detail(usage, "prompt_tokens_details", "cached_tokens")
    if cached:
        return cached
    read = usage.get("cache_read_input_tokens") if isinstance(usage, dict) else None
    return read if read is not None else cached


def _detail(usage: Any, group: str, name: str) -> Any:
    """``usage[group][name]`` from a usage object, or None."""
    if not isinstance(usage, dict):
        return None
    details = usage.get(group)
    return details.get(name) if isinstance(details, dict) else None


def _use_case(
    payload: dict[str, Any],
    metadata: dict[str, Any],
    mapping: LiteLLMMapping,
    request_metadata: Mapping[str, Any] | None,
) -> str:
    for source in mapping.use_case_from:
        found: Any = None
        if source == "metadata":
            key = mapping.use_case_key
            for where in (
                request_metadata,
                metadata,
                metadata.get("requester_metadata"),
                metadata.get("spend_logs_metadata"),
            ):
                if isinstance(where, Mapping) and where.get(key):
                    found = where[key]
                    break
        elif source == "tag":
            tags = payload.get("request_tags")
            if isinstance(tags, list):
                # LiteLLM appends "User-Agent: ..." and configured header tags.
                found = next((t for t in tags if isinstance(t, str) and ": " not in t), None)
        else:
            found = metadata.get("user_api_key_team_alias") or metadata.get("team_alias")
        if found:
            if not isinstance(found, str):
                raise MappingError(
                    RejectReason.WRONG_TYPE, f"use case from {source} must be a string", "use_case"
                )
            return found
    return mapping.default_use_case
