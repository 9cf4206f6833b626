"""The message contracts in schemas/: well-formed, documented, and strict where they say so."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from spendsentry import contracts
from spendsentry.contracts import SCHEMA_NAMES, load_schema, validate

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"

# -- valid base messages; invalid ones are these with one thing broken ------------

USAGE: dict[str, Any] = {
    "type": "usage",
    "event_id": "evt-1",
    "ts": "2026-11-02T09:00:00.250Z",
    "use_case": "support_chat",
    "kind": "llm_call",
    "provider": "openai",
    "model": "gpt-4o-mini",
    "requested_model": "gpt-4o",
    "fallback": True,
    "input_tokens": 1840,
    "output_tokens": 212,
    "cached_input_tokens": 1024,
    "reasoning_tokens": 0,
    "cost_usd": 0.0042,
    "session_id": "conv-7f3a",
    "request_id": None,
    "agent_id": None,
    "tool_name": None,
    "content_hash": None,
    "environment": "prod",
    "team": "support",
    "status": "ok",
    "latency_ms": 1420.5,
}
OUTCOME: dict[str, Any] = {
    "type": "outcome",
    "event_id": "out-1",
    "ts": 1793610000,
    "use_case": "support_chat",
    "outcome": "ticket_resolved",
    "session_id": "conv-7f3a",
    "success": True,
    "value": 12.5,
}
ALERT: dict[str, Any] = {
    "schema_version": 1,
    "alert_id": "9b2e4c6a8d0f1e3a",
    "kind": "prompt_inflation",
    "use_case": "support_chat",
    "severity": "warning",
    "status": "firing",
    "detected_at": "2026-11-02T09:05:00.000Z",
    "started_at": "2026-11-02T09:00:00.000Z",
    "resolved_at": None,
    "summary": "support_chat input tokens per call 3.2x baseline",
    "evidence": {
        "metric": "input_tokens_per_call",
        "baseline": 1840.0,
        "observed": 5890.0,
        "window_s": 300,
        "score": 6.1,
        "unit": "tokens",
        "example_session": "conv-7f3a",
        "example_model": "gpt-4o",
        "details": {"p95": 9000},
        "detector_version": 2,
    },
    "impact": {"excess_cost_per_hour_usd": 4.2, "projected_monthly_usd": 3024.0},
    "action": {"type": "dry_run", "command_id": "cmd-1", "throttle_action": "limit_rate"},
    "owner": "#support-ai-oncall",
    "tier": "production",
    "incident_seq": 1,
}
COMMAND: dict[str, Any] = load_schema("throttle-command")["examples"][0]
DEAD_LETTER: dict[str, Any] = {
    "schema_version": 1,
    "reason": "negative_value",
    "message": "input_tokens is negative (-5)",
    "source": {"name": "ai.usage", "partition": 3, "offset": 1200, "index": 2},
    "original_b64": "eyJpbnB1dF90b2tlbnMiOi01fQ==",
    "original_text": '{"input_tokens":-5}',
    "event_id": None,
    "use_case": "support_chat",
    "field": "input_tokens",
}
POLICY: dict[str, Any] = {
    "defaults": {"tier": "production", "auto_throttle": "dry_run"},
    "use_cases": {
        "support_chat": {
            "owner": "#support-ai-oncall",
            "team": "support",
            "tier": "production",
            "auto_throttle": "on",
            "cooldown_s": 600,
            "max_duration_s": 3600,
            "budgets": {"cost_per_hour_usd": 40.0, "tokens_per_minute": 2000000},
            "cost_per_outcome": {"outcome": "ticket_resolved", "target_usd": 0.35},
            "detectors": {
                "prompt_inflation": {"sensitivity": 1.5},
                "embedding_duplication": {"enabled": False},
            },
            "ladder": [
                {"at": "warning", "action": "limit_rate", "requests_per_minute": 600},
                {"at": "critical", "action": "route_model", "target_model": "gpt-4o-mini"},
            ],
        }
    },
}
CONTROL: dict[str, Any] = load_schema("control-action")["examples"][1]
BASES = {
    "control-action": CONTROL,
    "usage-event": USAGE,
    "outcome-event": OUTCOME,
    "alert": ALERT,
    "throttle-command": COMMAND,
    "dead-letter": DEAD_LETTER,
    "policy": POLICY,
}


DROP = object()


def changed(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with keys set; ``a__b__0`` is ``base["a"]["b"][0]``.

    The value ``DROP`` deletes the key instead.
    """
    doc = copy.deepcopy(base)
    for spec, value in changes.items():
        *parents, last = spec.split("__")
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: Any = int(last) if isinstance(node, list) else last
        if value is DROP:
            del node[key]
        else:
            node[key] = value
    return doc


VALID: list[tuple[str, str, Callable[[], Any]]] = [
    # usage-event
    ("usage-event", "full", lambda: USAGE),
    (
        "usage-event",
        "minimal",
        lambda: {"event_id": "e", "ts": 1793610000, "use_case": "u"},
    ),
    ("usage-event", "epoch millis", lambda: changed(USAGE, ts=1793610000250)),
    ("usage-event", "fractional epoch", lambda: changed(USAGE, ts=1793610000.25)),
    ("usage-event", "offset ts", lambda: changed(USAGE, ts="2026-11-02T10:00:00+01:00")),
    ("usage-event", "lower-case t and z", lambda: changed(USAGE, ts="2026-11-02t09:00:00z")),
    ("usage-event", "unknown extra fields kept", lambda: changed(USAGE, x_trace={"a": 1})),
    ("usage-event", "nulls mean absent", lambda: changed(USAGE, kind=None, cost_usd=None)),
    ("usage-event", "tool call", lambda: changed(USAGE, kind="tool_call", tool_name="search")),
    ("usage-event", "token limit", lambda: changed(USAGE, input_tokens=10_000_000)),
    ("usage-event", "200-char use case", lambda: changed(USAGE, use_case="u" * 200)),
    # outcome-event
    ("outcome-event", "full", lambda: OUTCOME),
    (
        "outcome-event",
        "minimal",
        lambda: {
            "type": "outcome",
            "event_id": "o",
            "ts": "2026-11-02T09:00:00Z",
            "use_case": "u",
            "outcome": "claim_triaged",
        },
    ),
    ("outcome-event", "negative value (refund)", lambda: changed(OUTCOME, value=-3.0)),
    ("outcome-event", "failed attempt", lambda: changed(OUTCOME, success=False)),
    # alert
    ("alert", "full", lambda: ALERT),
    (
        "alert",
        "resolved, optionals dropped",
        lambda: changed(
            ALERT,
            status="resolved",
            resolved_at="2026-11-02T10:00:00Z",
            owner=DROP,
            tier=DROP,
            incident_seq=DROP,
            evidence__unit=DROP,
            evidence__details=DROP,
        ),
    ),
    ("alert", "alert only", lambda: changed(ALERT, action={"type": "none"})),
    ("alert", "64-hex id", lambda: changed(ALERT, alert_id="ab" * 32)),
    ("alert", "experiment tier", lambda: changed(ALERT, tier="experiment", severity="info")),
    # throttle-command
    ("throttle-command", "the schema's example", lambda: COMMAND),
    (
        "throttle-command",
        "limit_rate by tokens",
        lambda: changed(COMMAND, action="limit_rate", params={"tokens_per_minute": 50000}),
    ),
    ("throttle-command", "release", lambda: changed(COMMAND, action="release", params={})),
    ("throttle-command", "unsigned (replay without a key)", lambda: changed(COMMAND, signature="")),
    (
        "throttle-command",
        "published by the worker: event time kept beside the wall clock",
        lambda: changed(
            COMMAND,
            event_time_issued_at="2026-11-01T09:00:00.000Z",
            event_time_expires_at="2026-11-01T10:00:00.000Z",
        ),
    ),
    # control-action
    ("control-action", "release", lambda: CONTROL),
    (
        "control-action",
        "release from the command line",
        lambda: changed(CONTROL, alert_id=None, kind=None, version=8),
    ),
    (
        "control-action",
        "snooze",
        lambda: changed(CONTROL, action="snooze", until="2026-11-02T13:00:00Z"),
    ),
    ("control-action", "expected change", lambda: changed(CONTROL, action="expected_change")),
    ("control-action", "false alarm", lambda: changed(CONTROL, action="false_alarm")),
    ("throttle-command", "block", lambda: changed(COMMAND, action="block", params={})),
    (
        "throttle-command",
        "agent scope, manual reason",
        lambda: changed(
            COMMAND,
            scope={"use_case": "research_agent", "agent_id": "planner"},
            scope_key="research_agent/agent=planner",
            reason={"alert_id": None, "kind": None, "summary": "manual"},
        ),
    ),
    # dead-letter
    ("dead-letter", "full", lambda: DEAD_LETTER),
    (
        "dead-letter",
        "empty record from a file",
        lambda: {
            "schema_version": 1,
            "reason": "empty",
            "message": "empty record",
            "source": {"name": "events.jsonl", "line": 7},
            "original_b64": "",
        },
    ),
    ("dead-letter", "4096-char preview", lambda: changed(DEAD_LETTER, original_text="x" * 4096)),
    # policy
    ("policy", "full", lambda: POLICY),
    ("policy", "empty file", lambda: {}),
    ("policy", "defaults only", lambda: {"defaults": {"owner": "#ai", "ladder": []}}),
    (
        "policy",
        "limit_rate by tokens",
        lambda: changed(
            POLICY,
            use_cases__support_chat__ladder=[
                {"at": "critical", "action": "limit_rate", "tokens_per_minute": 1000}
            ],
        ),
    ),
    (
        "policy",
        "cap_input_tokens, quoted use case name",
        lambda: {
            "use_cases": {
                "kb search": {
                    "ladder": [
                        {"at": "critical", "action": "cap_input_tokens", "max_input_tokens": 8000}
                    ]
                }
            }
        },
    ),
]

# (schema, why it is invalid, message, a path the errors must name)
INVALID: list[tuple[str, str, Callable[[], Any], str]] = [
    # usage-event
    ("usage-event", "event_id missing", lambda: changed(USAGE, event_id=DROP), "$.event_id"),
    ("usage-event", "event_id empty", lambda: changed(USAGE, event_id=""), "$.event_id"),
    (
        "usage-event",
        "use_case over 200 chars",
        lambda: changed(USAGE, use_case="u" * 201),
        "$.use_case",
    ),
    ("usage-event", "ts not RFC 3339", lambda: changed(USAGE, ts="yesterday"), "$.ts"),
    ("usage-event", "ts without offset", lambda: changed(USAGE, ts="2026-11-02T09:00:00"), "$.ts"),
    (
        "usage-event",
        "ts impossible date",
        lambda: changed(USAGE, ts="2026-02-30T09:00:00Z"),
        "$.ts",
    ),
    ("usage-event", "ts negative", lambda: changed(USAGE, ts=-1), "$.ts"),
    ("usage-event", "ts boolean", lambda: changed(USAGE, ts=True), "$.ts"),
    ("usage-event", "unknown kind", lambda: changed(USAGE, kind="chat"), "$.kind"),
    ("usage-event", "wrong type", lambda: changed(USAGE, type="outcome"), "$.type"),
    ("usage-event", "negative tokens", lambda: changed(USAGE, input_tokens=-5), "$.input_tokens"),
    (
        "usage-event",
        "absurd tokens",
        lambda: changed(USAGE, output_tokens=10_000_001),
        "$.output_tokens",
    ),
    (
        "usage-event",
        "fractional tokens",
        lambda: changed(USAGE, input_tokens=1.5),
        "$.input_tokens",
    ),
    (
        "usage-event",
        "tokens as string",
        lambda: changed(USAGE, input_tokens="12"),
        "$.input_tokens",
    ),
    ("usage-event", "negative cost", lambda: changed(USAGE, cost_usd=-0.01), "$.cost_usd"),
    ("usage-event", "fallback as string", lambda: changed(USAGE, fallback="yes"), "$.fallback"),
    ("usage-event", "model as number", lambda: changed(USAGE, model=4), "$.model"),
    ("usage-event", "negative latency", lambda: changed(USAGE, latency_ms=-1), "$.latency_ms"),
    ("usage-event", "not an object", lambda: [USAGE], "$"),
    # outcome-event
    ("outcome-event", "type missing", lambda: changed(OUTCOME, type=DROP), "$.type"),
    ("outcome-event", "outcome missing", lambda: changed(OUTCOME, outcome=DROP), "$.outcome"),
    ("outcome-event", "success as string", lambda: changed(OUTCOME, success="true"), "$.success"),
    ("outcome-event", "value as string", lambda: changed(OUTCOME, value="12"), "$.value"),
    ("outcome-event", "ts missing", lambda: changed(OUTCOME, ts=DROP), "$.ts"),
    # alert
    ("alert", "unknown kind", lambda: changed(ALERT, kind="cost_drift"), "$.kind"),
    ("alert", "upper-case id", lambda: changed(ALERT, alert_id="9B2E4C6A8D0F1E3A"), "$.alert_id"),
    ("alert", "id too short", lambda: changed(ALERT, alert_id="abc123"), "$.alert_id"),
    ("alert", "bad severity", lambda: changed(ALERT, severity="high"), "$.severity"),
    ("alert", "bad status", lambda: changed(ALERT, status="open"), "$.status"),
    (
        "alert",
        "detected_at not a date-time",
        lambda: changed(ALERT, detected_at="now"),
        "$.detected_at",
    ),
    (
        "alert",
        "started_at epoch number",
        lambda: changed(ALERT, started_at=1793610000),
        "$.started_at",
    ),
    ("alert", "empty summary", lambda: changed(ALERT, summary=""), "$.summary"),
    (
        "alert",
        "evidence without score",
        lambda: changed(ALERT, evidence__score=DROP),
        "$.evidence.score",
    ),
    ("alert", "impact missing", lambda: changed(ALERT, impact=DROP), "$.impact"),
    ("alert", "bad action type", lambda: changed(ALERT, action={"type": "page"}), "$.action.type"),
    ("alert", "incident_seq 0", lambda: changed(ALERT, incident_seq=0), "$.incident_seq"),
    ("alert", "schema_version 2", lambda: changed(ALERT, schema_version=2), "$.schema_version"),
    ("alert", "unknown top-level key", lambda: changed(ALERT, labels={}), "$.labels"),
    # throttle-command
    (
        "throttle-command",
        "signature missing",
        lambda: changed(COMMAND, signature=DROP),
        "$.signature",
    ),
    (
        "throttle-command",
        "signature upper-case",
        lambda: changed(COMMAND, signature=COMMAND["signature"].upper()),
        "$.signature",
    ),
    ("throttle-command", "unknown action", lambda: changed(COMMAND, action="pause"), "$.action"),
    (
        "throttle-command",
        "route_model without target",
        lambda: changed(COMMAND, params={}),
        "$.params.target_model",
    ),
    (
        "throttle-command",
        "limit_rate without a limit",
        lambda: changed(COMMAND, action="limit_rate", params={}),
        "$.params",
    ),
    (
        "throttle-command",
        "cap_input_tokens without cap",
        lambda: changed(COMMAND, action="cap_input_tokens", params={}),
        "$.params.max_input_tokens",
    ),
    (
        "throttle-command",
        "zero requests per minute",
        lambda: changed(COMMAND, action="limit_rate", params={"requests_per_minute": 0}),
        "$.params.requests_per_minute",
    ),
    (
        "throttle-command",
        "unknown scope key",
        lambda: changed(COMMAND, scope__team="x"),
        "$.scope.team",
    ),
    (
        "throttle-command",
        "scope without use case",
        lambda: changed(COMMAND, scope__use_case=DROP),
        "$.scope.use_case",
    ),
    (
        "throttle-command",
        "expires_at missing",
        lambda: changed(COMMAND, expires_at=DROP),
        "$.expires_at",
    ),
    ("throttle-command", "version 0", lambda: changed(COMMAND, version=0), "$.version"),
    (
        "throttle-command",
        "event time not RFC 3339",
        lambda: changed(COMMAND, event_time_issued_at=1793610000),
        "$.event_time_issued_at",
    ),
    (
        "throttle-command",
        "dry_run as string",
        lambda: changed(COMMAND, dry_run="false"),
        "$.dry_run",
    ),
    # control-action
    ("control-action", "unknown action", lambda: changed(CONTROL, action="mute"), "$.action"),
    ("control-action", "user missing", lambda: changed(CONTROL, user=DROP), "$.user"),
    (
        "control-action",
        "feedback names no kind",
        lambda: changed(CONTROL, action="false_alarm", kind=None),
        "$.kind",
    ),
    ("control-action", "at not RFC 3339", lambda: changed(CONTROL, at="now"), "$.at"),
    ("control-action", "unknown kind", lambda: changed(CONTROL, kind="spend"), "$.kind"),
    ("control-action", "version 0", lambda: changed(CONTROL, version=0), "$.version"),
    ("control-action", "unknown key", lambda: changed(CONTROL, note="x"), "$.note"),
    (
        "throttle-command",
        "signature too short",
        lambda: changed(COMMAND, signature="abc123"),
        "$.signature",
    ),
    # dead-letter
    ("dead-letter", "unknown reason", lambda: changed(DEAD_LETTER, reason="bad"), "$.reason"),
    (
        "dead-letter",
        "source without name",
        lambda: changed(DEAD_LETTER, source={"line": 1}),
        "$.source.name",
    ),
    (
        "dead-letter",
        "line 0",
        lambda: changed(DEAD_LETTER, source={"name": "f", "line": 0}),
        "$.source.line",
    ),
    (
        "dead-letter",
        "negative offset",
        lambda: changed(DEAD_LETTER, source__offset=-1),
        "$.source.offset",
    ),
    (
        "dead-letter",
        "not base64",
        lambda: changed(DEAD_LETTER, original_b64="not base64!"),
        "$.original_b64",
    ),
    (
        "dead-letter",
        "preview too long",
        lambda: changed(DEAD_LETTER, original_text="x" * 4097),
        "$.original_text",
    ),
    (
        "dead-letter",
        "original missing",
        lambda: changed(DEAD_LETTER, original_b64=DROP),
        "$.original_b64",
    ),
    # policy
    ("policy", "unknown top-level table", lambda: {"use_case": {}}, "$.use_case"),
    (
        "policy",
        "typo in a use case key",
        lambda: changed(POLICY, use_cases__support_chat__budget={}),
        "$.use_cases.support_chat.budget",
    ),
    (
        "policy",
        "negative budget",
        lambda: changed(POLICY, use_cases__support_chat__budgets__cost_per_hour_usd=-3),
        "$.use_cases.support_chat.budgets.cost_per_hour_usd",
    ),
    (
        "policy",
        "unknown budget",
        lambda: changed(POLICY, use_cases__support_chat__budgets__cost_per_week_usd=1),
        "$.use_cases.support_chat.budgets.cost_per_week_usd",
    ),
    (
        "policy",
        "unknown detector",
        lambda: changed(POLICY, use_cases__support_chat__detectors__prompt_bloat={}),
        "$.use_cases.support_chat.detectors.prompt_bloat",
    ),
    (
        "policy",
        "zero sensitivity",
        lambda: changed(POLICY, use_cases__support_chat__detectors__cost_spike={"sensitivity": 0}),
        "$.use_cases.support_chat.detectors.cost_spike.sensitivity",
    ),
    (
        "policy",
        "bad tier",
        lambda: changed(POLICY, use_cases__support_chat__tier="prod"),
        "$.use_cases.support_chat.tier",
    ),
    (
        "policy",
        "bad auto_throttle",
        lambda: changed(POLICY, defaults__auto_throttle=True),
        "$.defaults.auto_throttle",
    ),
    (
        "policy",
        "route_model without target_model",
        lambda: changed(POLICY, use_cases__support_chat__ladder__1__target_model=DROP),
        "$.use_cases.support_chat.ladder[1].target_model",
    ),
    (
        "policy",
        "limit_rate without a limit",
        lambda: changed(POLICY, use_cases__support_chat__ladder__0__requests_per_minute=DROP),
        "$.use_cases.support_chat.ladder[0]",
    ),
    (
        "policy",
        "cap_input_tokens without max_input_tokens",
        lambda: changed(
            POLICY,
            use_cases__support_chat__ladder__0={"at": "warning", "action": "cap_input_tokens"},
        ),
        "$.use_cases.support_chat.ladder[0].max_input_tokens",
    ),
    (
        "policy",
        "ladder step with unknown key",
        lambda: changed(POLICY, use_cases__support_chat__ladder__0__rpm=600),
        "$.use_cases.support_chat.ladder[0].rpm",
    ),
    (
        "policy",
        "ladder at unknown severity",
        lambda: changed(POLICY, use_cases__support_chat__ladder__0__at="high"),
        "$.use_cases.support_chat.ladder[0].at",
    ),
    (
        "policy",
        "cost_per_outcome without target",
        lambda: changed(POLICY, use_cases__support_chat__cost_per_outcome__target_usd=DROP),
        "$.use_cases.support_chat.cost_per_outcome.target_usd",
    ),
    (
        "policy",
        "cost_per_outcome in defaults",
        lambda: changed(POLICY, defaults__cost_per_outcome={"outcome": "x", "target_usd": 1}),
        "$.defaults.cost_per_outcome",
    ),
    (
        "policy",
        "max_duration_s 0",
        lambda: changed(POLICY, use_cases__support_chat__max_duration_s=0),
        "$.use_cases.support_chat.max_duration_s",
    ),
    ("policy", "empty use case name", lambda: {"use_cases": {"": {}}}, "$.use_cases"),
]


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_is_valid_2020_12(name: str) -> None:
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://spendsentry.dev/schemas/{name}.json"
    assert schema["description"]


def test_schema_names_match_the_files() -> None:
    assert sorted(p.stem for p in SCHEMA_DIR.glob("*.json")) == sorted(SCHEMA_NAMES)


def _properties(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        for key, sub in node.get("properties", {}).items():
            yield f"{where}.{key}", sub
        for key, sub in node.items():
            yield from _properties(sub, f"{where}/{key}")
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            yield from _properties(sub, f"{where}[{i}]")


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_property_is_described(name: str) -> None:
    schema = load_schema(name)
    # if/then branches only restate rules; the documented properties are the rest.
    undocumented = [
        where
        for where, sub in _properties(schema)
        if "/if" not in where and "/then" not in where and not sub.get("description")
    ]
    assert undocumented == []


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_examples_are_valid(name: str) -> None:
    for example in load_schema(name).get("examples", []):
        assert validate(name, example) == []


@pytest.mark.parametrize(
    ("name", "label", "make"), VALID, ids=[f"{n}-{label}" for n, label, _ in VALID]
)
def test_valid_examples(name: str, label: str, make: Callable[[], Any]) -> None:
    assert validate(name, make()) == []


@pytest.mark.parametrize(
    ("name", "reason", "make", "path"),
    INVALID,
    ids=[f"{n}-{reason}" for n, reason, _, _ in INVALID],
)
def test_invalid_examples(name: str, reason: str, make: Callable[[], Any], path: str) -> None:
    errors = validate(name, make())
    assert errors, f"{reason}: accepted"
    assert any(e.startswith(path + ":") for e in errors), (reason, errors)


def test_bases_are_valid() -> None:
    for name, base in BASES.items():
        assert validate(name, base) == [], name


@pytest.mark.parametrize(
    ("schema_name", "pointer", "constant"),
    [
        ("alert", ["properties", "kind", "enum"], contracts.ALERT_KINDS),
        # Any kind can be an incident's cause (a kind added later was once missed here).
        ("alert", ["properties", "root_cause", "enum"], contracts.ALERT_KINDS),
        ("alert", ["properties", "severity", "enum"], contracts.SEVERITIES),
        ("throttle-command", ["properties", "action", "enum"], contracts.THROTTLE_ACTIONS),
        ("dead-letter", ["properties", "reason", "enum"], contracts.DEAD_LETTER_REASONS),
        (
            "policy",
            ["$defs", "ladder_step", "properties", "action", "enum"],
            contracts.LADDER_ACTIONS,
        ),
        ("policy", ["$defs", "ladder_step", "properties", "at", "enum"], contracts.SEVERITIES),
    ],
)
def test_python_constants_match_schema_enums(
    schema_name: str, pointer: list[str], constant: tuple[str, ...]
) -> None:
    node: Any = load_schema(schema_name)
    for part in pointer:
        node = node[part]
    assert tuple(node) == constant


def test_policy_detectors_are_the_alert_kinds() -> None:
    schema = load_schema("policy")
    detectors = schema["properties"]["use_cases"]["additionalProperties"]["properties"]["detectors"]
    assert tuple(detectors["properties"]) == contracts.ALERT_KINDS


def test_signature_example_in_description_recomputes() -> None:
    schema = load_schema("throttle-command")
    description = schema["description"]
    # The documented algorithm, word for word, is what gateway authors implement.
    assert (
        "lowercase hex HMAC-SHA256, keyed by SPENDSENTRY_THROTTLE_KEY (UTF-8 bytes), of the "
        "canonical JSON of the command without its `signature` field: keys sorted at every "
        "level, no whitespace (separators `,` and `:`), UTF-8, non-ASCII characters not escaped"
    ) in description
    assert 'key "test-key"' in description
    command = dict(schema["examples"][0])
    signature = command.pop("signature")
    canonical = json.dumps(command, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = hmac.new(b"test-key", canonical.encode("utf-8"), hashlib.sha256).hexdigest()
    assert signature == expected
    lines = description.splitlines()
    assert canonical in lines, "the canonical form in the description is out of date"
    assert lines[-1] == expected
    assert re.fullmatch(r"[0-9a-f]{64}", lines[-1])
    # The example shows that non-ASCII characters are not escaped.
    assert "\u00d7" in canonical and "\\u" not in canonical


def test_scope_key_of_the_example_follows_the_rule() -> None:
    scope = COMMAND["scope"]
    key = scope["use_case"]
    if "model" in scope:
        key += f"/model={scope['model']}"
    if "agent_id" in scope:
        key += f"/agent={scope['agent_id']}"
    assert COMMAND["scope_key"] == key


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("2026-11-02T09:00:00Z", True),
        ("2026-11-02T09:00:00.123456+05:30", True),
        ("2026-11-02t09:00:00z", True),
        ("2016-12-31T23:59:60Z", True),
        ("2024-02-29T00:00:00-00:00", True),
        ("2026-11-02 09:00:00Z", False),
        ("2026-11-02T09:00:00", False),
        ("2025-02-29T00:00:00Z", False),
        ("2026-11-02T24:00:00Z", False),
        ("2026-11-02T09:00:00+24:00", False),
        ("2026-11-02T09:00Z", False),
        ("2026-11-02", False),
        ("", False),
    ],
)
def test_date_time_format_is_checked(value: str, ok: bool) -> None:
    # jsonschema skips date-time unless an optional package is installed; the
    # contracts module checks it itself, so this must hold in every environment.
    errors = validate("alert", changed(ALERT, detected_at=value))
    assert (errors == []) is ok, errors


def test_unknown_schema_name() -> None:
    with pytest.raises(ValueError, match="unknown schema"):
        load_schema("usage")


def test_validator_is_cached_and_accepts_json_suffix() -> None:
    assert contracts.validator("alert") is contracts.validator("alert.json")


def test_load_schema_returns_a_fresh_copy() -> None:
    load_schema("alert")["properties"].clear()
    assert load_schema("alert")["properties"]


def test_error_messages_name_the_path_and_the_problem() -> None:
    errors = validate("usage-event", changed(USAGE, event_id=DROP, input_tokens=-1, ts="soon"))
    assert errors == [
        "$.event_id: missing (required)",
        "$.input_tokens: -1 is less than the minimum of 0",
        "$.ts: 'soon' is not an RFC 3339 date-time (e.g. 2026-11-02T09:00:00Z)",
    ]
    assert validate("policy", {"use_cases": {"x": {"budget": {}}}}) == [
        "$.use_cases.x.budget: unknown key; did you mean 'budgets'?"
    ]


# -- spendsentry's own messages keep to the contracts -----------------------------


def test_usage_and_outcome_events_serialize_to_the_contract() -> None:
    events = pytest.importorskip("spendsentry.events")
    usage = events.UsageEvent(
        event_id="e1",
        ts=1793610000.5,
        use_case="support_chat",
        model="gpt-4o",
        input_tokens=10,
        cost_usd=0.01,
        extra={"x_custom": 1},
    )
    assert validate("usage-event", usage.to_dict()) == []
    outcome = events.OutcomeEvent(
        event_id="o1",
        ts=1793610000.0,
        use_case="support_chat",
        outcome="ticket_resolved",
        success=True,
    )
    assert validate("outcome-event", outcome.to_dict()) == []


def test_dead_letters_serialize_to_the_contract() -> None:
    deadletter = pytest.importorskip("spendsentry.ingest.deadletter")
    for reason in deadletter.RejectReason:
        record = deadletter.DeadLetter(
            reason=reason,
            message="m",
            source=deadletter.SourcePosition("ai.usage", partition=0, offset=5),
            original=b'{"a": "\xff"}',
            index=0,
            field="a",
        )
        assert validate("dead-letter", record.to_dict()) == [], reason
