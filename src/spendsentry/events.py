"""The internal event types every ingest adapter normalizes to.

A :class:`UsageEvent` is one model call, tool call, retrieval or embedding; an
:class:`OutcomeEvent` is one business result (a ticket resolved, a claim
triaged). Both carry event time as float epoch seconds. No validation
happens here (it happens once, in :mod:`spendsentry.ingest`): the hot path
creates ~100k usage events a second, so :class:`UsageEvent` is a
``msgspec.Struct`` (built in C, ~0.4 us against ~1.6 us for a slotted
dataclass) and untracked by the garbage collector (an event holds strings,
numbers and the JSON ``extra`` dict, never a reference cycle).

>>> e = UsageEvent("e1", 1793610000.0, "support", model="gpt-4o", requested_model="gpt-4o-mini")
>>> e.rerouted, e.kind, e.input_tokens, e.extra
(True, 'llm_call', 0, {})
>>> import pickle; pickle.loads(pickle.dumps(e)) == e
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

UsageKind = Literal["llm_call", "tool_call", "retrieval", "embedding"]
USAGE_KINDS: tuple[str, ...] = ("llm_call", "tool_call", "retrieval", "embedding")


class UsageEvent(msgspec.Struct, gc=False):
    """One billable (or countable) AI operation.

    ``cached_input_tokens`` is a subset of ``input_tokens`` and
    ``reasoning_tokens`` a subset of ``output_tokens`` (the OpenAI and
    OpenTelemetry GenAI conventions), so they are never billed twice.
    ``cost_usd`` is what the producer reported or, when it reported none,
    what the price book computed (``priced`` says which; ``None`` means the
    model has no known price).
    """

    event_id: str
    ts: float
    use_case: str
    kind: str = "llm_call"
    provider: str | None = None
    model: str | None = None
    requested_model: str | None = None
    fallback: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float | None = None
    session_id: str | None = None
    request_id: str | None = None
    agent_id: str | None = None
    tool_name: str | None = None
    content_hash: str | None = None
    environment: str | None = None
    team: str | None = None
    latency_ms: float | None = None
    status: str | None = None
    extra: dict[str, Any] = msgspec.field(default_factory=dict)
    #: Where the event came from: "native", "otlp", "litellm".
    source_format: str = "native"
    #: True when cost_usd came from the price book rather than the producer.
    cost_estimated: bool = False

    @property
    def rerouted(self) -> bool:
        """The call was served by another model than the one requested."""
        return bool(self.requested_model) and self.requested_model != self.model

    def to_dict(self) -> dict[str, Any]:
        """The event as a contract-shaped JSON object (extra fields included)."""
        from spendsentry.timeutil import format_ts

        out: dict[str, Any] = dict(self.extra)
        out.update(
            type="usage",
            event_id=self.event_id,
            ts=format_ts(self.ts),
            use_case=self.use_case,
            kind=self.kind,
            fallback=self.fallback,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cached_input_tokens=self.cached_input_tokens,
            reasoning_tokens=self.reasoning_tokens,
        )
        for name in _OPTIONAL_USAGE_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


#: to_dict() always writes these; the other contract fields only when set.
_ALWAYS_WRITTEN = frozenset(
    {"event_id", "ts", "use_case", "kind", "fallback", "input_tokens", "output_tokens",
     "cached_input_tokens", "reasoning_tokens"}
)  # fmt: skip
INGEST_ONLY_FIELDS = frozenset({"extra", "source_format", "cost_estimated"})
_OPTIONAL_USAGE_FIELDS = tuple(
    n for n in UsageEvent.__struct_fields__ if n not in _ALWAYS_WRITTEN | INGEST_ONLY_FIELDS
)


@dataclass(slots=True)
class OutcomeEvent:
    """One business result a use case exists to produce."""

    event_id: str
    ts: float
    use_case: str
    outcome: str
    session_id: str | None = None
    success: bool | None = None
    value: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    source_format: str = "native"

    def to_dict(self) -> dict[str, Any]:
        from spendsentry.timeutil import format_ts

        out: dict[str, Any] = dict(self.extra)
        out.update(
            type="outcome",
            event_id=self.event_id,
            ts=format_ts(self.ts),
            use_case=self.use_case,
            outcome=self.outcome,
        )
        for name in ("session_id", "success", "value"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


Event = UsageEvent | OutcomeEvent
