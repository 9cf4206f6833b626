"""LiteLLM StandardLoggingPayload objects through the Decoder.

``PAYLOAD`` has the shape LiteLLM builds (``litellm/types/utils.py``
StandardLoggingPayload; values as an ``acompletion(..., mock_response=...)`` call
logged them), trimmed of the fields spendsentry does not read.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from spendsentry.ingest import Decoder, SourcePosition
from spendsentry.ingest.litellm import LiteLLMMapping, map_payload

T0 = 1793610000.0
SOURCE = SourcePosition("litellm.jsonl", line=3)

PAYLOAD: dict[str, Any] = {
    "id": "chatcmpl-630d8c02",
    "litellm_call_id": "a86a1580-c67f-436e-af82-7fbfb9d3c22f",
    "trace_id": "e714536d-1560-4d38-b60e-6770e8dcaafb",
    "session_id": "",
    "call_type": "acompletion",
    "stream": None,
    "status": "success",
    "custom_llm_provider": "openai",
    "saved_cache_cost": 0.0,
    "startTime": T0,
    "endTime": T0 + 0.2069,
    "completionStartTime": T0 + 0.2069,
    "response_time": 0.2069,
    "model": "gpt-4o-mini-2024-07-18",
    "model_group": "gpt-4o-mini",
    "model_id": "",
    "api_base": "",
    "metadata": {
        "user_api_key_hash": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
        "user_api_key_alias": "cx-prod",
        "user_api_key_team_alias": "customer-experience",
        "spend_logs_metadata": None,
        "requester_metadata": None,
        "mcp_tool_call_metadata": None,
        "usage_object": {
            "completion_tokens": 20,
            "prompt_tokens": 1200,
            "total_tokens": 1220,
            "completion_tokens_details": {"reasoning_tokens": 8},
            "prompt_tokens_details": {"cached_tokens": 1024},
        },
    },
    "cache_hit": None,
    "response_cost": 1.35e-05,
    "response_cost_failure_debug_info": None,
    "total_tokens": 1220,
    "prompt_tokens": 1200,
    "completion_tokens": 20,
    "request_tags": ["support_chat", "User-Agent: curl"],
    "end_user": "customer-81",
    "error_str": None,
}


def payload(**changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(PAYLOAD)
    out.update(changes)
    return out


def decode(doc: Any, decoder: Decoder | None = None) -> Any:
    return (decoder or Decoder()).decode(orjson.dumps(doc), SOURCE, now=T0 + 60)


def test_payload_maps_to_a_usage_event() -> None:
    result = decode(PAYLOAD)
    assert result.rejected == []
    (event,) = result.events
    assert event.source_format == "litellm"
    assert (event.event_id, event.ts, event.use_case) == ("chatcmpl-630d8c02", T0, "support_chat")
    assert (event.kind, event.provider, event.model) == (
        "llm_call",
        "openai",
        "gpt-4o-mini-2024-07-18",
    )
    assert event.requested_model is None  # a dated snapshot of the model group
    assert (event.input_tokens, event.output_tokens) == (1200, 20)
    assert (event.cached_input_tokens, event.reasoning_tokens) == (1024, 8)
    assert event.cost_usd == pytest.approx(1.35e-05)
    assert (event.team, event.request_id, event.status) == (
        "customer-experience",
        "e714536d-1560-4d38-b60e-6770e8dcaafb",
        "ok",
    )
    assert event.latency_ms == pytest.approx(206.9)
    assert event.extra == {"end_user": "customer-81"}
    # The key hash is never copied into the event.
    assert "88dc28d0" not in orjson.dumps(event.to_dict()).decode()


def test_use_case_sources_in_order_and_configurable() -> None:
    meta = {**PAYLOAD["metadata"], "spend_logs_metadata": {"spendsentry.use_case": "claims"}}
    assert map_payload(payload(metadata=meta))["use_case"] == "claims"  # type: ignore[index]
    requester = {**PAYLOAD["metadata"], "requester_metadata": {"spendsentry.use_case": "rag"}}
    assert map_payload(payload(metadata=requester))["use_case"] == "rag"  # type: ignore[index]
    # LiteLLM's own header tags are not use cases: the team alias comes next.
    header_only = payload(request_tags=["User-Agent: curl"])
    assert map_payload(header_only)["use_case"] == "customer-experience"  # type: ignore[index]
    team_first = Decoder(litellm=LiteLLMMapping(use_case_from=("team", "tag")))
    assert decode(PAYLOAD, team_first).events[0].use_case == "customer-experience"
    env = LiteLLMMapping.from_env({"SPENDSENTRY_LITELLM_USE_CASE_KEY": "feature"})
    assert env.use_case_key == "feature"
    with pytest.raises(ValueError, match="use case sources"):
        LiteLLMMapping(use_case_from=("header",))


@pytest.mark.parametrize(
    ("changes", "kind", "tool"),
    [
        ({"call_type": "aembedding", "completion_tokens": 0}, "embedding", None),
        (
            {
                "call_type": "call_mcp_tool",
                "metadata": {
                    **PAYLOAD["metadata"],
                    "mcp_tool_call_metadata": {
                        "name": "get_page",
                        "namespaced_tool_name": "deepwiki-mcp/get_page",
                        "mcp_server_name": "deepwiki-mcp",
                    },
                },
            },
            "tool_call",
            "deepwiki-mcp/get_page",
        ),
        ({"call_type": "asearch"}, "retrieval", None),
    ],
)
def test_call_types_map_to_kinds(changes: dict[str, Any], kind: str, tool: str | None) -> None:
    (event,) = decode(payload(**changes)).events
    assert (event.kind, event.tool_name) == (kind, tool)


def test_rerouted_and_failed_calls() -> None:
    (event,) = decode(payload(model="claude-3-5-haiku", model_group="gpt-4o")).events
    assert event.requested_model == "gpt-4o" and event.rerouted
    failed = payload(status="failure", prompt_tokens=0, completion_tokens=0, response_cost=0.0)
    (event,) = decode(failed).events
    assert event.status == "error" and event.cost_usd == 0.0
    unpriced = payload(response_cost=0.0, response_cost_failure_debug_info={"error": "no map"})
    (event,) = decode(unpriced).events
    assert event.cost_usd is None  # LiteLLM could not price it: the engine's price book will


def test_calls_without_spend_are_skipped_not_dead_lettered() -> None:
    result = decode(payload(call_type="afile_list", prompt_tokens=0, completion_tokens=0,
                            response_cost=0.0))  # fmt: skip
    assert (result.events, result.rejected, result.skipped) == ([], [], 1)


@pytest.mark.parametrize(
    ("changes", "reason", "field"),
    [
        ({"id": None, "litellm_call_id": None}, "missing_field", "id"),
        ({"startTime": "yesterday"}, "bad_timestamp", "startTime"),
        ({"call_type": 7}, "wrong_type", "call_type"),
        ({"metadata": "x"}, "wrong_type", "metadata"),
        ({"prompt_tokens": -1}, "negative_value", "input_tokens"),
        ({"completion_tokens": "20"}, "wrong_type", "output_tokens"),
        ({"response_cost": 1e9}, "absurd_value", "cost_usd"),
        ({"startTime": T0 + 86400}, "future_timestamp", "ts"),
    ],
)
def test_bad_payloads_are_dead_lettered(changes: dict[str, Any], reason: str, field: str) -> None:
    bad = payload(**changes)
    result = decode([PAYLOAD, bad])
    assert [e.event_id for e in result.events] == ["chatcmpl-630d8c02"]
    (letter,) = result.rejected
    assert (letter.reason.value, letter.field, letter.index) == (reason, field, 1)
    assert orjson.loads(letter.original) == bad


def test_anthropic_cache_reads_through_litellm_are_cached_input_tokens() -> None:
    doc = payload()
    doc["metadata"]["usage_object"] = {
        "prompt_tokens": 3000,
        "completion_tokens": 20,
        "cache_read_input_tokens": 2048,
        "cache_creation_input_tokens": 512,
    }
    doc["prompt_tokens"] = 3000  # LiteLLM's prompt_tokens count cache reads and writes
    (event,) = decode(doc).events
    # Cache writes stay in input_tokens (priced at the input rate).
    assert (event.input_tokens, event.cached_input_tokens) == (3000, 2048)


def test_openai_cached_tokens_win_over_a_zero_anthropic_field() -> None:
    doc = payload()
    doc["metadata"]["usage_object"]["cache_read_input_tokens"] = 0
    (event,) = decode(doc).events
    assert event.cached_input_tokens == 1024


def test_a_call_with_no_use_case_goes_to_the_default_use_case() -> None:
    bare = payload(request_tags=[], metadata={})
    result = decode([bare])
    assert result.rejected == []
    assert [e.use_case for e in result.events] == ["unattributed"]
    mapping = LiteLLMMapping.from_env({"SPENDSENTRY_DEFAULT_USE_CASE": "shared_pool"})
    assert map_payload(bare, mapping)["use_case"] == "shared_pool"
