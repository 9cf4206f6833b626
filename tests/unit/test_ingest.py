"""Ingest: every bad-input class ends as a dead letter with its reason."""

from __future__ import annotations

import base64

import orjson
import pytest

from spendsentry.events import OutcomeEvent, UsageEvent
from spendsentry.ingest import Decoder, IngestLimits, RejectReason, SourcePosition

NOW = 1_793_610_000.0  # 2026-11-02T09:00:00Z
SRC = SourcePosition("test.jsonl", line=7)


def decode(raw: bytes | dict | list, **limits):
    if not isinstance(raw, bytes):
        raw = orjson.dumps(raw)
    return Decoder(IngestLimits(**limits)).decode(raw, SRC, now=NOW)


def usage(**overrides):
    doc = {"event_id": "e1", "ts": NOW - 10, "use_case": "support_chat", "model": "gpt-4o"}
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not ...}


def test_a_full_usage_event_keeps_every_field_and_unknown_extras():
    doc = usage(
        kind="llm_call",
        provider="openai",
        requested_model="gpt-4o-mini",
        fallback=True,
        input_tokens=1200,
        output_tokens=300,
        cached_input_tokens=200,
        reasoning_tokens=50,
        cost_usd=0.0123,
        session_id="s1",
        request_id="r1",
        agent_id="a1",
        tool_name=None,
        environment="production",
        team="support",
        latency_ms=812.5,
        status="ok",
        x_gateway_region="eu-west-1",
    )
    r = decode(doc)
    assert r.rejected == []
    (e,) = r.events
    assert isinstance(e, UsageEvent)
    assert (e.input_tokens, e.output_tokens, e.cached_input_tokens) == (1200, 300, 200)
    assert e.rerouted and e.fallback and e.cost_usd == 0.0123
    assert e.extra == {"x_gateway_region": "eu-west-1"}


def test_defaults_type_usage_and_kind_llm_call():
    (e,) = decode(usage()).events
    assert e.kind == "llm_call" and isinstance(e, UsageEvent)


@pytest.mark.parametrize(
    "ts",
    ["2026-11-02T08:59:00Z", "2026-11-02T08:59:00.123+00:00", NOW - 60, (NOW - 60) * 1000],
)
def test_timestamps_rfc3339_seconds_and_milliseconds(ts):
    (e,) = decode(usage(ts=ts)).events
    assert NOW - 61 < e.ts < NOW - 59


def test_outcome_event():
    doc = {
        "type": "outcome",
        "event_id": "o1",
        "ts": NOW,
        "use_case": "support_chat",
        "outcome": "ticket_resolved",
        "session_id": "s1",
        "success": True,
        "value": 1,
    }
    (e,) = decode(doc).events
    assert isinstance(e, OutcomeEvent) and e.outcome == "ticket_resolved" and e.value == 1.0


def test_an_array_message_keeps_good_elements_and_dead_letters_bad_ones():
    r = decode([usage(event_id="a"), 42, usage(event_id="c", input_tokens=-1), usage(event_id="d")])
    assert [e.event_id for e in r.events] == ["a", "d"]
    # Two bad elements: one dead letter for the message, its elements counted.
    (letter,) = r.rejected
    assert letter.counts() == {"not_object": 1, "negative_value": 1}
    assert [(d["index"], d["reason"]) for d in letter.to_dict()["listed_elements"]] == [
        (1, "not_object"),
        (2, "negative_value"),
    ]
    assert orjson.loads(letter.original)[2]["event_id"] == "c"


BAD_CASES = [
    (b"{not json", RejectReason.NOT_JSON, None),
    (b"\xff\xfe\x00garbage", RejectReason.NOT_JSON, None),
    (b"", RejectReason.EMPTY, None),
    (b"   ", RejectReason.EMPTY, None),
    (b'"just a string"', RejectReason.NOT_OBJECT, None),
    (b"123", RejectReason.NOT_OBJECT, None),
    (b"null", RejectReason.NOT_OBJECT, None),
    (usage(event_id=...), RejectReason.MISSING_FIELD, "event_id"),
    (usage(use_case=...), RejectReason.MISSING_FIELD, "use_case"),
    (usage(ts=...), RejectReason.MISSING_FIELD, "ts"),
    (usage(use_case=""), RejectReason.MISSING_FIELD, "use_case"),
    (usage(use_case=12), RejectReason.WRONG_TYPE, "use_case"),
    (usage(input_tokens="many"), RejectReason.WRONG_TYPE, "input_tokens"),
    (usage(input_tokens=1.5), RejectReason.WRONG_TYPE, "input_tokens"),
    (usage(output_tokens=True), RejectReason.WRONG_TYPE, "output_tokens"),
    (usage(fallback="yes"), RejectReason.WRONG_TYPE, "fallback"),
    (usage(model=["gpt-4o"]), RejectReason.WRONG_TYPE, "model"),
    (usage(cost_usd="0.1"), RejectReason.WRONG_TYPE, "cost_usd"),
    (usage(kind="dance"), RejectReason.INVALID_VALUE, "kind"),
    (usage(input_tokens=-5), RejectReason.NEGATIVE_VALUE, "input_tokens"),
    (usage(cost_usd=-0.01), RejectReason.NEGATIVE_VALUE, "cost_usd"),
    (usage(output_tokens=50_000_000), RejectReason.ABSURD_VALUE, "output_tokens"),
    (usage(cost_usd=1e9), RejectReason.ABSURD_VALUE, "cost_usd"),
    (usage(use_case="x" * 500), RejectReason.OVERSIZED, "use_case"),
    (usage(ts="yesterday"), RejectReason.BAD_TIMESTAMP, "ts"),
    (usage(ts="2026-13-45T99:00:00Z"), RejectReason.BAD_TIMESTAMP, "ts"),
    (usage(ts=True), RejectReason.BAD_TIMESTAMP, "ts"),
    (usage(ts=NOW + 86_400), RejectReason.FUTURE_TIMESTAMP, "ts"),
    (usage(ts="2099-01-01T00:00:00Z"), RejectReason.FUTURE_TIMESTAMP, "ts"),
    (usage(type="metric"), RejectReason.UNKNOWN_TYPE, "type"),
    (
        {"type": "outcome", "event_id": "o", "ts": NOW, "use_case": "u"},
        RejectReason.MISSING_FIELD,
        "outcome",
    ),
    (
        {
            "type": "outcome",
            "event_id": "o",
            "ts": NOW,
            "use_case": "u",
            "outcome": "x",
            "success": "true",
        },
        RejectReason.WRONG_TYPE,
        "success",
    ),
]


@pytest.mark.parametrize(("raw", "reason", "field"), BAD_CASES)
def test_bad_input_is_dead_lettered_with_its_reason(raw, reason, field):
    r = decode(raw)
    assert r.events == []
    (letter,) = r.rejected
    assert letter.reason == reason
    assert letter.field == field
    assert letter.message  # a sentence for a human
    record = letter.to_dict()
    assert record["reason"] == reason.value
    assert record["source"] == {"name": "test.jsonl", "line": 7}
    original = raw if isinstance(raw, bytes) else orjson.dumps(raw)
    assert base64.b64decode(record["original_b64"]) == original


def test_oversized_records_are_rejected_before_parsing():
    big = orjson.dumps(usage(note="x" * 2000))
    (letter,) = decode(big, max_record_bytes=1000).rejected
    assert letter.reason == RejectReason.OVERSIZED
    assert "over the limit of 1000" in letter.message
    assert letter.original == big


def test_default_record_limit_is_one_mebibyte():
    assert IngestLimits().max_record_bytes == 1 << 20
    assert decode(orjson.dumps(usage(note="x" * (1 << 20)))).rejected[0].reason == "oversized"
