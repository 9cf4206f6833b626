"""One use case's single events (llm, tool, retrieval, embedding, outcome), effects applied."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from spendsentry.simulate.incidents import NORMAL, Effects
from spendsentry.simulate.profile import TraceProfile

if TYPE_CHECKING:
    from spendsentry.simulate.traffic import Emit, UseCaseShape

MINUTE_MS = 60_000

#: Provider of each model the simulator uses (all price in genai-prices).
PROVIDERS: dict[str, str] = {
    "gpt-4o": "openai",
    "gpt-4o-mini": "openai",
    "gpt-4.1": "openai",
    "gpt-4.1-mini": "openai",
    "gpt-4.1-nano": "openai",
    "o3": "openai",
    "o4-mini": "openai",
    "text-embedding-3-small": "openai",
    "text-embedding-3-large": "openai",
    "claude-3-5-haiku-latest": "anthropic",
    "claude-sonnet-4-0": "anthropic",
    "claude-opus-4-0": "anthropic",
    "gemini-2.0-flash": "google",
    "gemini-2.5-pro": "google",
}
# Tool calls and retrievals are not model calls: they carry an internal provider
# whose "model" the price catalogue does not know, so they cost nothing.
TOOL_PROVIDER, TOOL_MODEL, RETRIEVAL_MODEL = "internal", "tool-runtime", "vector-search"


class CallEmitter:
    """Emits one use case's events one at a time, with token sizes drawn from the trace.

    Every draw comes from the use case's own ``rng``, in the order the calls
    are made: the simulated traffic (and so every benchmark result) depends on
    that order. ``effects(minute)`` gives the incident effects of a minute;
    ``emit(ms, event)`` receives each event at the time it finished.

    >>> from spendsentry.simulate.traffic import USE_CASES
    >>> got = []
    >>> calls = CallEmitter(USE_CASES["claims_triage"], TraceProfile.load(), random.Random(1),
    ...                     lambda minute: NORMAL, lambda ms, event: got.append(event))
    >>> end = calls.llm(0, 500, 100, request_id=calls.new_id("req"))
    >>> got[0]["kind"], got[0]["input_tokens"], end > 0
    ('llm_call', 500, True)
    """

    def __init__(
        self,
        shape: UseCaseShape,
        profile: TraceProfile,
        rng: random.Random,
        effects: Callable[[int], Effects],
        emit: Emit,
    ) -> None:
        self.shape = shape
        self.rng = rng
        self.effects = effects
        self.emit = emit
        self._context = profile.context_sampler(shape.trace)
        self._generated = profile.generated_sampler(shape.trace)
        self._id_seq = 0

    def new_id(self, prefix: str) -> str:
        self._id_seq += 1
        return f"{prefix}-{self.rng.getrandbits(40):010x}{self._id_seq:x}"

    def input(self, scale: float) -> int:
        return max(1, int(self._context.sample(self.rng.random()) * scale))

    def output(self, scale: float) -> int:
        return max(1, int(self._generated.sample(self.rng.random()) * scale))

    def llm(
        self,
        t: int,
        input_tokens: int,
        output_tokens: int,
        *,
        cached: int = 0,
        session_id: str | None = None,
        request_id: str | None = None,
        model: str | None = None,
    ) -> int:
        """Emit one llm call starting at ``t``; return when it finished (ms)."""
        rng = self.rng
        shape = self.shape
        eff = self.effects(t // MINUTE_MS)
        requested = model or shape.model
        served = requested
        fallback = False
        if eff is not NORMAL and eff.changes_calls:
            input_tokens = int(input_tokens * eff.input_tokens)
            output_tokens = max(1, int(output_tokens * eff.output_tokens))
            r = rng.random()
            if eff.oversize_share:
                if input_tokens < 300 and output_tokens < 100 and r < eff.oversize_share:
                    # A routine small request that a large model now serves.
                    requested = served = str(eff.big_model)
            elif r < eff.switch_share:
                requested = served = str(eff.big_model)  # silent: the default changed
            elif r < eff.fallback_share:
                served, fallback = str(eff.big_model), True
        if served == shape.model and shape.fallback_rate and rng.random() < shape.fallback_rate:
            served, fallback = shape.big_model, True  # a natural, benign fallback
        input_tokens = max(1, min(input_tokens, shape.max_input))
        cached = min(cached, input_tokens)
        latency = (250.0 + 0.02 * input_tokens + 14.0 * output_tokens) * rng.lognormvariate(
            0.0, 0.25
        )
        if served != shape.model:
            latency *= 1.4
        end = t + int(latency)
        self.emit(
            end,
            {
                "type": "usage",
                "event_id": "",
                "ts": "",
                "use_case": shape.name,
                "kind": "llm_call",
                "provider": PROVIDERS.get(served, "openai"),
                "model": served,
                "requested_model": requested,
                "fallback": fallback,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cached_input_tokens": cached,
                "session_id": session_id,
                "request_id": request_id,
                "agent_id": shape.agent_id,
                "tool_name": None,
                "content_hash": None,
                "environment": shape.environment,
                "team": shape.team,
                "latency_ms": round(latency, 1),
                "status": "ok",
            },
        )
        return end

    def auxiliary(
        self,
        t: int,
        kind: str,
        latency: float,
        *,
        session_id: str | None,
        request_id: str | None,
        tool_name: str | None = None,
    ) -> int:
        """Emit a zero-token tool call or retrieval; return when it finished (ms)."""
        end = t + int(latency)
        self.emit(
            end,
            {
                "type": "usage",
                "event_id": "",
                "ts": "",
                "use_case": self.shape.name,
                "kind": kind,
                "provider": TOOL_PROVIDER,
                "model": TOOL_MODEL if kind == "tool_call" else RETRIEVAL_MODEL,
                "requested_model": None,
                "fallback": False,
                "input_tokens": 0,
                "output_tokens": 0,
                "cached_input_tokens": 0,
                "session_id": session_id,
                "request_id": request_id,
                "agent_id": self.shape.agent_id,
                "tool_name": tool_name,
                "content_hash": None,
                "environment": self.shape.environment,
                "team": self.shape.team,
                "latency_ms": round(latency, 1),
                "status": "ok",
            },
        )
        return end

    def outcome(self, t: int, session_id: str | None) -> None:
        """Maybe emit the business outcome some seconds after the work ended."""
        shape = self.shape
        if shape.outcome is None:
            return
        rng = self.rng
        t += 2000 + int(rng.expovariate(1 / 45_000))
        if rng.random() >= shape.outcome_prob * self.effects(t // MINUTE_MS).outcomes:
            return
        self.emit(
            t,
            {
                "type": "outcome",
                "event_id": "",
                "ts": "",
                "use_case": shape.name,
                "outcome": shape.outcome,
                "session_id": session_id,
                "success": True,
            },
        )

    def embedding(
        self, end: int, tokens: int, content_hash: str, request_id: str, latency: float
    ) -> None:
        """Emit one embedding of ``tokens`` tokens of content ``content_hash``."""
        shape = self.shape
        self.emit(
            end,
            {
                "type": "usage",
                "event_id": "",
                "ts": "",
                "use_case": shape.name,
                "kind": "embedding",
                "provider": shape.provider,
                "model": shape.model,
                "requested_model": shape.model,
                "fallback": False,
                "input_tokens": tokens,
                "output_tokens": 0,
                "cached_input_tokens": 0,
                "session_id": None,
                "request_id": request_id,
                "agent_id": None,
                "tool_name": None,
                "content_hash": content_hash,
                "environment": shape.environment,
                "team": shape.team,
                "latency_ms": round(latency, 1),
                "status": "ok",
            },
        )
