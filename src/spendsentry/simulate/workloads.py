"""What one arrival starts, per pattern: a chat, a call, a RAG request, an agent run, a document."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from spendsentry.simulate.calls import MINUTE_MS, CallEmitter
from spendsentry.simulate.incidents import corpus_chunk


@dataclass(slots=True)
class _Session:
    """An agent run's state, so a runaway run can be continued call by call."""

    session_id: str
    context: int
    looping: bool = False


class Workloads:
    """The multi-call shapes of one use case's arrivals, built from its :class:`CallEmitter`.

    Each method starts one arrival at run-relative ``t`` (ms) and emits all of
    its events. Draws come from the emitter's ``rng`` in a fixed order (see
    :class:`CallEmitter`).

    >>> from spendsentry.simulate.incidents import NORMAL
    >>> from spendsentry.simulate.profile import TraceProfile
    >>> from spendsentry.simulate.traffic import USE_CASES
    >>> got = []
    >>> calls = CallEmitter(USE_CASES["underwriting_rag"], TraceProfile.load(), random.Random(2),
    ...                     lambda minute: NORMAL, lambda ms, event: got.append(event))
    >>> Workloads(calls).rag(0)
    >>> got[0]["kind"], [e for e in got if e["type"] == "usage"][-1]["kind"]
    ('retrieval', 'llm_call')
    """

    def __init__(self, calls: CallEmitter) -> None:
        self.calls = calls
        self.shape = calls.shape
        self.rng: random.Random = calls.rng
        self.effects = calls.effects
        self._recent_docs: deque[tuple[str, int]] = deque(maxlen=2000)
        self._corpus_minute = -1

    def _cached(self, t: int, cached: int) -> int:
        """The cached prefix the provider actually serves (a cache regression bills it all)."""
        loss = self.effects(t // MINUTE_MS).cache_loss
        return int(cached * (1.0 - loss)) if loss else cached

    def shared_corpus(self, t: int) -> None:
        """Once a minute during a shared-embedding incident: embed the minute's corpus chunks.

        The source embeds the chunks of this minute, the copy those the source
        embedded the minute before (so the source owns the content). No random
        draws: the rest of the use case's traffic stays what it was.
        """
        minute = t // MINUTE_MS
        eff = self.effects(minute)
        if eff.corpus is None or minute == self._corpus_minute:
            return
        self._corpus_minute = minute
        of_minute = minute if eff.corpus_role == "source" else minute - 1
        if self.effects(of_minute).corpus != eff.corpus:
            return  # the copy starts one minute after the source
        offset = 0 if eff.corpus_role == "source" else 30_000
        for i in range(eff.corpus_chunks):
            content, tokens = corpus_chunk(eff.corpus, of_minute, i)
            end = minute * MINUTE_MS + offset + 1000 * i // 2 + 200
            self.calls.embedding(
                end, tokens, content, f"{eff.corpus}.{minute}.{i}", 30.0 + 0.02 * tokens
            )

    def single(self, t: int) -> None:
        shape, rng = self.shape, self.rng
        request_id = self.calls.new_id("req")
        if shape.routine_share and rng.random() < shape.routine_share:
            tokens = rng.randint(40, 290), rng.randint(5, 95)  # routine: a small model's job
        else:
            tokens = self.calls.input(shape.input_scale), self.calls.output(shape.output_scale)
        end = self.calls.llm(t, *tokens, request_id=request_id)
        self.calls.outcome(end, request_id)

    def chat(self, t: int) -> None:
        """A support conversation: each turn resends the growing history."""
        shape, rng = self.shape, self.rng
        session_id = self.calls.new_id(shape.id_prefix)
        context = 300 + self.calls.input(shape.input_scale)  # system prompt + first message
        cached = 0
        for _turn in range(rng.randint(*shape.calls)):
            output = self.calls.output(shape.output_scale)
            end = self.calls.llm(
                t,
                context,
                output,
                cached=self._cached(t, cached),
                session_id=session_id,
                request_id=self.calls.new_id("req"),
            )
            # The provider caches the prefix already sent, in 128-token blocks past 1024.
            cached = context // 128 * 128 if context >= 1024 else 0
            context += output + 20 + self.calls.input(0.08)
            t = end + 5000 + int(rng.expovariate(1 / 35_000))  # the user reads and types
        self.calls.outcome(t, session_id)

    def rag(self, t: int) -> None:
        """A question: retrievals, then one llm call (top-k kept after re-ranking)."""
        shape, rng = self.shape, self.rng
        self.shared_corpus(t)
        session_id = self.calls.new_id(shape.id_prefix)
        request_id = self.calls.new_id("req")
        retrievals = rng.randint(*shape.calls) * self.effects(t // MINUTE_MS).retrievals
        for _ in range(max(1, round(retrievals))):
            t = self.calls.auxiliary(
                t + rng.randint(5, 40),
                "retrieval",
                rng.lognormvariate(4.1, 0.5),
                session_id=session_id,
                request_id=request_id,
            )
        end = self.calls.llm(
            t + rng.randint(5, 40),
            self.calls.input(shape.input_scale),
            self.calls.output(shape.output_scale),
            session_id=session_id,
            request_id=request_id,
        )
        self.calls.outcome(end, session_id)

    def agent(self, t: int) -> None:
        """An agent run: llm call -> tool call(s) -> llm call ... -> final answer."""
        shape, rng = self.shape, self.rng
        session = _Session(
            self.calls.new_id(shape.id_prefix), 400 + self.calls.input(shape.input_scale)
        )
        steps = rng.randint(*shape.calls)
        eff = self.effects(t // MINUTE_MS)
        if eff.loop_share and rng.random() < eff.loop_share:
            session.looping = True
            steps = round(steps * eff.loop_calls)
        step = 0
        while True:
            step += 1
            last = step >= steps
            if session.looping and step > 1 and not self.effects(t // MINUTE_MS).loop_share:
                last = True  # the loop stops when the incident ends
            t = self._agent_step(t, session, final=last)
            if last:
                break
        self.calls.outcome(t, session.session_id)

    def _agent_step(self, t: int, session: _Session, *, final: bool) -> int:
        """One llm call and, unless final, the tool call(s) it asks for."""
        shape, rng = self.shape, self.rng
        request_id = self.calls.new_id("req")
        output = self.calls.output(shape.output_scale)
        cached = session.context // 128 * 128 if session.context >= 1024 else 0
        t = self.calls.llm(
            t,
            session.context,
            output,
            cached=self._cached(t, cached),
            session_id=session.session_id,
            request_id=request_id,
        )
        session.context = min(shape.max_input, session.context + output)
        if final:
            return t
        for _ in range(2 if rng.random() < 0.2 else 1):  # sometimes parallel tool calls
            t = self.calls.auxiliary(
                t + rng.randint(10, 200),
                "tool_call",
                rng.lognormvariate(6.3, 0.8),
                session_id=session.session_id,
                request_id=request_id,
                tool_name=rng.choice(shape.tools),
            )
            session.context = min(shape.max_input, session.context + 200 + self.calls.input(0.3))
        return t + rng.randint(50, 500)

    def runaway(self, t: int, interval_s: float) -> None:
        """One agent run that never stops until the incident ends."""
        shape, rng = self.shape, self.rng
        session = _Session(
            self.calls.new_id(shape.id_prefix), 400 + self.calls.input(shape.input_scale)
        )
        while self.effects(t // MINUTE_MS).runaway_interval_s:
            t = self._agent_step(t, session, final=False)
            t += int(rng.uniform(0.5, 1.5) * interval_s * 1000)

    def document(self, t: int) -> None:
        """A document split into chunks, each embedded once (rarely re-embedded)."""
        shape, rng = self.shape, self.rng
        self.shared_corpus(t)
        eff = self.effects(t // MINUTE_MS)
        request_root = self.calls.new_id("doc")
        for i in range(rng.randint(*shape.calls)):
            if eff.duplicate_share and rng.random() < eff.duplicate_share:
                content_hash = rng.choice(eff.duplicate_hashes)
                # Same content, same size: derive the token count from the hash.
                tokens = 200 + int(content_hash[:6], 16) % 800
            elif self._recent_docs and rng.random() < 0.02:
                content_hash, tokens = rng.choice(self._recent_docs)  # a natural re-embed
            else:
                content_hash = f"{rng.getrandbits(128):032x}"
                tokens = min(shape.max_input, 16 + self.calls.input(shape.input_scale))
                self._recent_docs.append((content_hash, tokens))
            latency = (30.0 + 0.02 * tokens) * rng.lognormvariate(0.0, 0.3)
            t += rng.randint(5, 60)
            self.calls.embedding(
                t + int(latency), tokens, content_hash, f"{request_root}.{i}", latency
            )
