"""The bounds a record must keep to be accepted: sizes, tokens, cost, event time, names."""

from __future__ import annotations

from dataclasses import dataclass


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
