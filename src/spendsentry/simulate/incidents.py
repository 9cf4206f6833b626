"""Labelled incidents: what goes wrong, where, when, and how it changes the traffic.

An :class:`Incident` is one labelled anomaly on one use case. :func:`plan_incidents`
places a run's incidents (after a warm-up, non-overlapping per use case, spread
over different use cases); :func:`incident_effects` says how an incident of each
kind bends that use case's traffic at a given intensity, as an :class:`Effects`
value the traffic generator consults per arrival and per call.

Effect sizes (drawn per incident, recorded in ``params``):

===========================  ===================================================
prompt_inflation             input tokens per llm call x2-3 (step) or ramping to
                             x2.5 over 20-40 min (chat and RAG use cases)
agent_chatter                30-60 % of new agent runs loop with x5-20 the steps
                             (``loop``), or one run calls every 4-10 s for the
                             whole incident (``runaway``)
fallback_drift               ``flagged``: 30-60 % of calls served by the bigger
                             model with ``fallback: true``; ``silent``: the
                             default model itself becomes the bigger one
retrieval_amplification      retrievals per RAG request x3-6
cost_spike                   arrival rate x4-8 of the normal mix
budget_burn                  arrival rate x3 (steady, 60-90 min)
cost_per_outcome             ``outcome_drop``: outcomes x0.3-0.5, usage as usual;
                             ``cost_per_call``: input and output tokens x2
embedding_duplication        3-12 content hashes re-embedded over and over: extra
                             embedding calls at x1.5-3 the normal rate
model_oversizing             70-100 % of the routine small llm calls (< 300 input
                             and < 100 output tokens; 15-30 % of normal calls) go
                             to the big model instead of the small one
cache_regression             a step: 90-100 % of the tokens the provider used to
                             serve from its prompt cache are billed as fresh input
                             (chat and agent use cases, which cache their prefix)
shared_embedding_duplication a RAG use case starts embedding the documents the
                             embedding pipeline (``source``) embeds, one minute
                             behind it: 8-20 shared chunks a minute, embedded by
                             both (the labelled use case is the later embedder)
===========================  ===================================================

The kinds added after the first nine (:data:`EXTRA_KINDS`) are planned after
them, from the same random stream once the first nine are placed, in slots the
first nine left free: adding them left the plan of every seed's first nine
incidents (kinds, use cases, times, parameters and ids) as it was.

>>> from datetime import UTC, datetime, timedelta
>>> t0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
>>> inc = Incident("inc-01", "prompt_inflation", "support_chat", "ramp", t0,
...                t0 + timedelta(minutes=60), t0 + timedelta(minutes=20), {"factor": 2.5})
>>> incident_effects(inc, 0.5).input_tokens
1.75
>>> incident_effects(inc, 1.0).input_tokens
2.5
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from spendsentry.alerts import ALERT_KINDS

__all__ = [
    "BIG_MODELS",
    "CORE_KINDS",
    "DURATION_MINUTES",
    "ELIGIBLE",
    "EXTRA_KINDS",
    "KINDS",
    "NEWCOMER_KINDS",
    "NORMAL",
    "Effects",
    "Incident",
    "incident_effects",
    "incident_effects_by_use_case",
    "intensity",
    "plan_incidents",
]

#: The fixed vocabulary of incident (and alert) kinds.
KINDS: tuple[str, ...] = ALERT_KINDS
#: Kinds planned after the first nine, from the rest of the same random stream.
EXTRA_KINDS: tuple[str, ...] = ("cache_regression", "shared_embedding_duplication")
#: Kinds whose incidents are use cases of their own, planned by the scenario
#: (:mod:`spendsentry.simulate.newcomers`), never by :func:`plan_incidents`.
NEWCOMER_KINDS: tuple[str, ...] = ("unowned_spend",)
#: The first nine kinds, planned exactly as before the extra ones existed.
CORE_KINDS: tuple[str, ...] = tuple(
    k for k in KINDS if k not in EXTRA_KINDS and k not in NEWCOMER_KINDS
)
#: The embedding pipeline whose documents a shared-embedding incident repeats.
EMBEDDING_SOURCE = "doc_embeddings"

#: Which use cases each kind may hit (the shapes where it makes sense).
ELIGIBLE: dict[str, tuple[str, ...]] = {
    "prompt_inflation": ("support_chat", "underwriting_rag", "kb_search_rag"),
    "agent_chatter": ("research_agent", "ops_agent"),
    "fallback_drift": (
        "support_chat", "claims_triage", "underwriting_rag", "code_assistant",
        "kb_search_rag", "ops_agent", "research_agent",
    ),
    "retrieval_amplification": ("underwriting_rag", "kb_search_rag"),
    "cost_spike": ("support_chat", "claims_triage", "code_assistant", "kb_search_rag",
                   "underwriting_rag", "research_agent"),
    # The use cases whose policies carry budgets.
    "budget_burn": ("support_chat", "claims_triage", "underwriting_rag"),
    "cost_per_outcome": ("support_chat", "claims_triage", "underwriting_rag", "kb_search_rag"),
    "embedding_duplication": ("doc_embeddings",),
    "model_oversizing": ("claims_triage", "code_assistant", "sales_email_drafts"),
    # The use cases whose calls resend a cached prefix (chat turns, agent steps).
    "cache_regression": ("support_chat", "research_agent", "ops_agent"),
    # RAG use cases that could build their own index of the pipeline's documents.
    "shared_embedding_duplication": ("kb_search_rag", "underwriting_rag"),
}  # fmt: skip

#: The bigger, pricier model a use case drifts or is oversized to.
BIG_MODELS: dict[str, str] = {
    "support_chat": "gpt-4o",
    "claims_triage": "claude-sonnet-4-0",
    "sales_email_drafts": "gpt-4o",
    "underwriting_rag": "gpt-4.1",
    "code_assistant": "gpt-4.1",
    "kb_search_rag": "gpt-4o",
    "ops_agent": "gpt-4.1",
    "research_agent": "claude-opus-4-0",
}

#: Inclusive duration range of each kind, in minutes.
DURATION_MINUTES: dict[str, tuple[int, int]] = {
    "prompt_inflation": (40, 90),
    "agent_chatter": (30, 60),
    "fallback_drift": (40, 90),
    "retrieval_amplification": (30, 75),
    "cost_spike": (30, 60),
    "budget_burn": (60, 90),
    "cost_per_outcome": (60, 90),  # outcomes are sparse: give the ratio time to move
    "embedding_duplication": (30, 60),
    "model_oversizing": (40, 90),
    "cache_regression": (40, 90),
    "shared_embedding_duplication": (30, 60),
}
_RAMP_KINDS = {"prompt_inflation": 0.5, "fallback_drift": 0.3, "cost_per_outcome": 0.3}


@dataclass(frozen=True, slots=True)
class Effects:
    """How the traffic of one use case deviates from normal in one minute.

    Multipliers are 1 and shares 0 when nothing is going on (:data:`NORMAL`).
    """

    incident_id: str | None = None
    rate: float = 1.0  # arrivals (sessions, requests, calls) per minute
    input_tokens: float = 1.0  # per llm call
    output_tokens: float = 1.0
    retrievals: float = 1.0  # per RAG request
    fallback_share: float = 0.0  # calls re-routed to big_model with fallback: true
    switch_share: float = 0.0  # calls whose default model silently became big_model
    oversize_share: float = 0.0  # routine small calls served by big_model instead
    big_model: str | None = None
    outcomes: float = 1.0  # probability multiplier of a business outcome
    loop_share: float = 0.0  # share of new agent runs that loop
    loop_calls: float = 1.0  # step multiplier of a looping run
    runaway_interval_s: float = 0.0  # > 0: one run calls every ~interval until the end
    duplicate_share: float = 0.0  # embedding calls that re-embed duplicate_hashes
    duplicate_hashes: tuple[str, ...] = ()
    cache_loss: float = 0.0  # share of the cacheable prefix billed as fresh input
    #: Shared-embedding corpus: its seed (the incident id), this use case's
    #: role ("source" embeds a minute's chunks, "copy" the previous minute's)
    #: and chunks per minute. Emitted without random draws.
    corpus: str | None = None
    corpus_role: str = ""
    corpus_chunks: int = 0
    #: Whether llm calls are bent per call (False: the effect is applied by the
    #: workload without random draws, so the use case's random stream, and so
    #: the rest of its day, stays what it was).
    changes_calls: bool = True


NORMAL = Effects()


@dataclass(frozen=True, slots=True)
class Incident:
    """One labelled anomaly: ``kind`` on ``use_case`` from ``start`` to ``end``.

    A ``ramp`` reaches full strength at ``ramp_end``; a ``step`` is at full
    strength from ``start``. ``params`` holds the drawn effect sizes.
    """

    incident_id: str
    kind: str
    use_case: str
    shape: str
    start: datetime
    end: datetime
    ramp_end: datetime | None = None
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown incident kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.shape not in ("step", "ramp"):
            raise ValueError(f"incident shape must be 'step' or 'ramp', not {self.shape!r}")
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("incident times must be timezone-aware")
        if not self.start < self.end:
            raise ValueError(f"incident {self.incident_id} ends before it starts")
        if self.shape == "ramp" and (
            self.ramp_end is None or not self.start < self.ramp_end <= self.end
        ):
            raise ValueError(f"ramp incident {self.incident_id} needs start < ramp_end <= end")

    def to_label(self) -> dict[str, Any]:
        """The incident as a labels.json entry."""
        return {
            "incident_id": self.incident_id,
            "kind": self.kind,
            "use_case": self.use_case,
            "shape": self.shape,
            "start": rfc3339(self.start),
            "ramp_end": rfc3339(self.ramp_end) if self.ramp_end else None,
            "end": rfc3339(self.end),
            "params": dict(self.params),
        }

    @classmethod
    def from_label(cls, label: Mapping[str, Any]) -> Incident:
        """Read a labels.json entry back (``params`` is optional)."""
        ramp_end = label.get("ramp_end")
        return cls(
            incident_id=str(label["incident_id"]),
            kind=str(label["kind"]),
            use_case=str(label["use_case"]),
            shape=str(label.get("shape") or "step"),
            start=parse_rfc3339(label["start"]),
            end=parse_rfc3339(label["end"]),
            ramp_end=parse_rfc3339(ramp_end) if ramp_end else None,
            params=dict(label.get("params") or {}),
        )


def rfc3339(when: datetime) -> str:
    """UTC RFC 3339 with a ``Z``; milliseconds only when there are any.

    >>> rfc3339(datetime(2026, 11, 2, 9, 30, tzinfo=UTC))
    '2026-11-02T09:30:00Z'
    """
    when = when.astimezone(UTC)
    if when.microsecond:
        return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 time; a missing offset means UTC.

    >>> parse_rfc3339("2026-11-02T09:30:00Z").isoformat()
    '2026-11-02T09:30:00+00:00'
    """
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def intensity(incident: Incident, when: datetime) -> float:
    """How strong the incident is at ``when``: 0 outside it, ramping 0 to 1, else 1.

    >>> t0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
    >>> inc = Incident("i", "cost_spike", "claims_triage", "step", t0, t0 + timedelta(hours=1))
    >>> intensity(inc, t0 - timedelta(seconds=1)), intensity(inc, t0)
    (0.0, 1.0)
    """
    if not incident.start <= when < incident.end:
        return 0.0
    if incident.shape == "ramp" and incident.ramp_end is not None and when < incident.ramp_end:
        span = (incident.ramp_end - incident.start).total_seconds()
        return max(0.0, min(1.0, (when - incident.start).total_seconds() / span))
    return 1.0


def incident_effects(incident: Incident, level: float) -> Effects:
    """The traffic change of ``incident`` at intensity ``level`` (0 to 1).

    Parameters missing from ``incident.params`` take middle-of-the-range defaults.
    """
    if level <= 0.0:
        return NORMAL
    effects = _EFFECTS.get(incident.kind)
    if effects is None:  # pragma: no cover - checked in Incident
        raise ValueError(f"unknown incident kind {incident.kind!r}")
    p = {**default_params(incident), **incident.params}
    return effects(incident.incident_id, p, level)


# One function per kind: (incident id, parameters, intensity) -> its effects.


def _prompt_inflation_effects(iid: str, p: dict[str, Any], level: float) -> Effects:
    return Effects(iid, input_tokens=1.0 + (float(p["factor"]) - 1.0) * level)


def _agent_chatter_effects(iid: str, p: dict[str, Any], level: float) -> Effects:
    if p.get("variant") == "runaway":
        return Effects(iid, runaway_interval_s=float(p["interval_s"]))
    return Effects(iid, loop_share=float(p["share"]), loop_calls=float(p["call_factor"]))


def _fallback_drift_effects(iid: str, p: dict[str, Any], level: float) -> Effects:
    share = float(p["share"]) * level
    if p.get("variant") == "silent":
        return Effects(iid, switch_share=share, big_model=str(p["model"]))
    return Effects(iid, fallback_share=share, big_model=str(p["model"]))


def _retrieval_amplification_effects(iid: str, p: dict[str, Any], level: float) -> Effects:
    return Effects(iid, retrievals=float(p["factor"]))


def _rate_effects(iid: str, p: dict[str, Any], level: float) -> Effects:
    return Effects(iid, rate=float(p["factor"]))


def _cost_per_outcome_effects(iid: str, p: dict[str, Any], level: float) -> Effects:
    if p.get("variant") == "cost_per_call":
        factor = 1.0 + (float(p["cost_factor"]) - 1.0) * level
        return Effects(iid, input_tokens=factor, output_tokens=factor)
    return Effects(iid, outcomes=1.0 - (1.0 - float(p["outcome_factor"])) * level)


def _embedding_duplication_effects(iid: str, p: dict[str, Any], level: float) -> Effects:
    extra = float(p["extra_rate"])
    return Effects(
        iid,
        rate=1.0 + extra,
        duplicate_share=extra / (1.0 + extra),
        duplicate_hashes=tuple(p["hashes"]),
    )


def _model_oversizing_effects(iid: str, p: dict[str, Any], level: float) -> Effects:
    return Effects(iid, oversize_share=float(p["share"]), big_model=str(p["model"]))


def _cache_regression_effects(iid: str, p: dict[str, Any], level: float) -> Effects:
    return Effects(iid, cache_loss=float(p["loss"]) * level, changes_calls=False)


def _shared_embedding_effects(iid: str, p: dict[str, Any], level: float) -> Effects:
    chunks = int(p["chunks_per_minute"])
    return Effects(iid, corpus=iid, corpus_role="copy", corpus_chunks=chunks, changes_calls=False)


def incident_effects_by_use_case(incident: Incident, level: float) -> dict[str, Effects]:
    """The traffic change of ``incident`` per use case it touches (see :func:`incident_effects`).

    A shared-embedding incident also makes its ``source`` embed the corpus the
    labelled use case repeats; every other kind touches its own use case only.

    >>> t0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
    >>> inc = Incident("s", "shared_embedding_duplication", "kb_search_rag", "step", t0,
    ...                t0 + timedelta(minutes=30))
    >>> {u: e.corpus_role for u, e in incident_effects_by_use_case(inc, 1.0).items()}
    {'kb_search_rag': 'copy', 'doc_embeddings': 'source'}
    """
    effects = incident_effects(incident, level)
    touched = {incident.use_case: effects}
    if incident.kind == "shared_embedding_duplication" and effects is not NORMAL:
        source = str({**default_params(incident), **incident.params}["source"])
        touched[source] = replace(effects, corpus_role="source")
    return touched


def corpus_chunk(corpus: str, minute: int, index: int) -> tuple[str, int]:
    """(content hash, tokens) of chunk ``index`` the source embeds in run ``minute``.

    >>> corpus_chunk("inc-1", 5, 0) == corpus_chunk("inc-1", 5, 0)
    True
    """
    content = hashlib.sha256(f"{corpus}:{minute}:{index}".encode()).hexdigest()[:32]
    return content, 200 + int(content[:6], 16) % 800


_EFFECTS: dict[str, Callable[[str, dict[str, Any], float], Effects]] = {
    "prompt_inflation": _prompt_inflation_effects,
    "agent_chatter": _agent_chatter_effects,
    "fallback_drift": _fallback_drift_effects,
    "retrieval_amplification": _retrieval_amplification_effects,
    "cost_spike": _rate_effects,
    "budget_burn": _rate_effects,
    "cost_per_outcome": _cost_per_outcome_effects,
    "embedding_duplication": _embedding_duplication_effects,
    "model_oversizing": _model_oversizing_effects,
    "cache_regression": _cache_regression_effects,
    "shared_embedding_duplication": _shared_embedding_effects,
}


def default_params(incident: Incident) -> dict[str, Any]:
    """Middle-of-the-range parameters for an incident given without them.

    >>> t0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
    >>> inc = Incident("x", "cost_spike", "claims_triage", "step", t0, t0 + timedelta(hours=1))
    >>> default_params(inc)
    {'factor': 6.0}
    """
    big = BIG_MODELS.get(incident.use_case, "gpt-4o")
    defaults: dict[str, dict[str, Any]] = {
        "prompt_inflation": {"factor": 2.5},
        "agent_chatter": {"variant": "loop", "share": 0.5, "call_factor": 10.0, "interval_s": 6.0},
        "fallback_drift": {"variant": "flagged", "share": 0.5, "model": big},
        "retrieval_amplification": {"factor": 4.0},
        "cost_spike": {"factor": 6.0},
        "budget_burn": {"factor": 3.0},
        "cost_per_outcome": {"variant": "outcome_drop", "outcome_factor": 0.4, "cost_factor": 2.0},
        "embedding_duplication": {
            "hashes": [
                hashlib.sha256(f"{incident.incident_id}:{i}".encode()).hexdigest()[:32]
                for i in range(6)
            ],
            "extra_rate": 2.0,
        },
        "model_oversizing": {"share": 0.9, "model": big},
        "cache_regression": {"loss": 1.0},
        "shared_embedding_duplication": {"source": EMBEDDING_SOURCE, "chunks_per_minute": 12},
    }
    return defaults[incident.kind]


def draw_params(rng: random.Random, kind: str, use_case: str, shape: str) -> dict[str, Any]:
    """Draw the effect sizes of one incident (see the module table)."""
    draw = _DRAWS.get(kind)
    if draw is None:
        raise ValueError(f"unknown incident kind {kind!r}")
    return draw(rng, BIG_MODELS.get(use_case, "gpt-4o"), shape)


# One function per kind: (rng, the use case's big model, shape) -> parameters.
# The simulator's traffic is seeded: each draws exactly what it always drew, in
# the same order, or every benchmark result changes.


def _draw_prompt_inflation(rng: random.Random, big: str, shape: str) -> dict[str, Any]:
    return {"factor": 2.5 if shape == "ramp" else round(rng.uniform(2.0, 3.0), 2)}


def _draw_agent_chatter(rng: random.Random, big: str, shape: str) -> dict[str, Any]:
    if rng.random() < 0.3:
        return {"variant": "runaway", "interval_s": round(rng.uniform(4.0, 10.0), 1)}
    return {
        "variant": "loop",
        "share": round(rng.uniform(0.3, 0.6), 2),
        "call_factor": round(rng.uniform(5.0, 20.0), 1),
    }


def _draw_fallback_drift(rng: random.Random, big: str, shape: str) -> dict[str, Any]:
    if rng.random() < 0.5:
        return {"variant": "silent", "share": 1.0, "model": big}
    return {"variant": "flagged", "share": round(rng.uniform(0.3, 0.6), 2), "model": big}


def _draw_retrieval_amplification(rng: random.Random, big: str, shape: str) -> dict[str, Any]:
    return {"factor": round(rng.uniform(3.0, 6.0), 1)}


def _draw_cost_spike(rng: random.Random, big: str, shape: str) -> dict[str, Any]:
    return {"factor": round(rng.uniform(4.0, 8.0), 1)}


def _draw_budget_burn(rng: random.Random, big: str, shape: str) -> dict[str, Any]:
    return {"factor": 3.0}


def _draw_cost_per_outcome(rng: random.Random, big: str, shape: str) -> dict[str, Any]:
    if shape == "step" and rng.random() < 0.4:
        return {"variant": "cost_per_call", "cost_factor": 2.0}
    return {"variant": "outcome_drop", "outcome_factor": round(rng.uniform(0.3, 0.5), 2)}


def _draw_embedding_duplication(rng: random.Random, big: str, shape: str) -> dict[str, Any]:
    hashes = [f"{rng.getrandbits(128):032x}" for _ in range(rng.randint(3, 12))]
    return {"hashes": hashes, "extra_rate": round(rng.uniform(1.5, 3.0), 2)}


def _draw_model_oversizing(rng: random.Random, big: str, shape: str) -> dict[str, Any]:
    return {
        "share": round(rng.uniform(0.7, 1.0), 2),
        "model": big,
        "max_input": 299,
        "max_output": 99,
    }


def _draw_cache_regression(rng: random.Random, big: str, shape: str) -> dict[str, Any]:
    return {"loss": round(rng.uniform(0.9, 1.0), 2)}


def _draw_shared_embedding_duplication(rng: random.Random, big: str, shape: str) -> dict[str, Any]:
    return {"source": EMBEDDING_SOURCE, "chunks_per_minute": rng.randint(8, 20)}


_DRAWS: dict[str, Callable[[random.Random, str, str], dict[str, Any]]] = {
    "prompt_inflation": _draw_prompt_inflation,
    "agent_chatter": _draw_agent_chatter,
    "fallback_drift": _draw_fallback_drift,
    "retrieval_amplification": _draw_retrieval_amplification,
    "cost_spike": _draw_cost_spike,
    "budget_burn": _draw_budget_burn,
    "cost_per_outcome": _draw_cost_per_outcome,
    "embedding_duplication": _draw_embedding_duplication,
    "model_oversizing": _draw_model_oversizing,
    "cache_regression": _draw_cache_regression,
    "shared_embedding_duplication": _draw_shared_embedding_duplication,
}


def plan_incidents(
    rng: random.Random,
    start: datetime,
    hours: float,
    kinds: Iterable[str] | None = None,
    *,
    use_cases: Sequence[str] | None = None,
    warmup_minutes: int = 120,
    tail_minutes: int = 15,
    gap_minutes: int = 30,
    active: Callable[[str, int, int], bool] | None = None,
) -> list[Incident]:
    """Place one incident of each kind (all kinds by default) in the run.

    Kinds in :data:`NEWCOMER_KINDS` are left to the scenario (they are new use
    cases, not a change to an existing one).

    Incidents start on whole minutes no earlier than ``warmup_minutes`` into the
    run, end ``tail_minutes`` before it ends (the evaluation's grace period), keep
    ``gap_minutes`` apart on one use case and prefer use cases not hit yet. A
    kind that does not fit (a short run) is left out. Ids follow start order, the
    extra kinds' (:data:`EXTRA_KINDS`, planned last) after the first nine's.
    ``active(use_case, first_minute, end_minute)``, when given, rejects windows in
    which the use case has no traffic (an office-hours use case at night).

    >>> t0 = datetime(2026, 11, 2, tzinfo=UTC)
    >>> plan = plan_incidents(random.Random(7), t0, 24)
    >>> sorted(i.kind for i in plan) == sorted(set(KINDS) - set(NEWCOMER_KINDS))
    True
    >>> min(i.start for i in plan) >= t0 + timedelta(hours=2)
    True
    >>> plan_incidents(random.Random(7), t0, 2)
    []
    """
    wanted = list(KINDS if kinds is None else kinds)
    unknown = [k for k in wanted if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown incident kinds {unknown}; known: {', '.join(KINDS)}")
    if len(set(wanted)) != len(wanted):
        raise ValueError("each incident kind may be asked for once")
    wanted = [k for k in wanted if k not in NEWCOMER_KINDS]  # the scenario's business
    day_offset = start.hour * 60 + start.minute
    slots = _Slots(
        rng, round(hours * 60), use_cases, warmup_minutes, tail_minutes, gap_minutes, active,
        day_offset,
    )  # fmt: skip
    # The first nine kinds exactly as they were always planned; the extra kinds
    # after them, from the rest of the stream, in the slots left free.
    incidents = _incidents(rng, start, slots.place([k for k in wanted if k not in EXTRA_KINDS]))
    extra = slots.place([k for k in wanted if k in EXTRA_KINDS])
    incidents += _incidents(rng, start, extra, first_id=len(incidents) + 1)
    return sorted(incidents, key=lambda i: (i.start, i.use_case))


_Placed = tuple[str, str, int, int, int | None]  # kind, use case, start, end, ramp_end


def _incidents(
    rng: random.Random, start: datetime, placed: list[_Placed], first_id: int = 1
) -> list[Incident]:
    """The placed slots as incidents, numbered from ``first_id``, parameters drawn in order."""
    incidents = []
    for n, (kind, use_case, begin, end, ramp_end) in enumerate(placed, first_id):
        shape = "ramp" if ramp_end is not None else "step"
        incidents.append(
            Incident(
                incident_id=f"inc-{n:02d}-{kind}",
                kind=kind,
                use_case=use_case,
                shape=shape,
                start=start + timedelta(minutes=begin),
                end=start + timedelta(minutes=end),
                ramp_end=start + timedelta(minutes=ramp_end) if ramp_end is not None else None,
                params=draw_params(rng, kind, use_case, shape),
            )
        )
    return incidents


class _Slots:
    """Where a run's incidents go: one kind after another, least-hit use cases first."""

    def __init__(
        self,
        rng: random.Random,
        total: int,
        use_cases: Sequence[str] | None,
        warmup: int,
        tail: int,
        gap: int,
        active: Callable[[str, int, int], bool] | None,
        day_offset: int,
    ) -> None:
        self.rng = rng
        self.total = total
        self.available = set(use_cases) if use_cases is not None else None
        self.warmup, self.tail, self.gap = warmup, tail, gap
        self.active = active
        self.day_offset = day_offset
        self.placed: list[_Placed] = []
        self.used: dict[str, int] = {}

    def place(self, kinds: list[str]) -> list[_Placed]:
        """Place ``kinds`` (those that fit) clear of everything placed; in start order.

        The draws from ``rng`` are exactly those the planner always made (the
        first nine kinds' plan of every seed depends on it).
        """
        rng = self.rng
        # Most constrained kinds first, so they get their only use cases.
        order = sorted(kinds, key=lambda k: (len(ELIGIBLE[k]), rng.random()))
        new: list[_Placed] = []
        for kind in order:
            candidates = [
                u for u in ELIGIBLE[kind] if self.available is None or u in self.available
            ]
            rng.shuffle(candidates)
            candidates.sort(key=lambda u: self.used.get(u, 0))  # least-hit first (stable)
            for use_case in candidates:
                slot = _find_slot(
                    rng,
                    kind,
                    use_case,
                    self.placed,
                    self.total,
                    self.warmup,
                    self.tail,
                    self.gap,
                    self._active(kind),
                    self.day_offset,
                )
                if slot is not None:
                    self.placed.append((kind, use_case, *slot))
                    new.append((kind, use_case, *slot))
                    self.used[use_case] = self.used.get(use_case, 0) + 1
                    break
        new.sort(key=lambda p: (p[2], p[1]))
        return new

    def _active(self, kind: str) -> Callable[[str, int, int], bool] | None:
        if kind != "shared_embedding_duplication":
            return self.active
        # The source embeds the shared documents too: it must be free as well.
        gap = self.gap

        def free(use_case: str, begin: int, end: int) -> bool:
            if self.active is not None and not self.active(use_case, begin, end):
                return False
            return not any(
                u == EMBEDDING_SOURCE and begin < e + gap and end + gap > b
                for _, u, b, e, _r in self.placed
            )

        return free


#: Kinds whose label is only true at some times of day (UTC minutes): a x3 burn
#: exhausts a daily budget before the day ends only if enough of the day is left.
_TIME_OF_DAY: dict[str, tuple[int, int]] = {"budget_burn": (6 * 60, 14 * 60)}


def _find_slot(
    rng: random.Random,
    kind: str,
    use_case: str,
    placed: list[tuple[str, str, int, int, int | None]],
    total: int,
    warmup: int,
    tail: int,
    gap: int,
    active: Callable[[str, int, int], bool] | None,
    day_offset: int = 0,
) -> tuple[int, int, int | None] | None:
    low, high = DURATION_MINUTES[kind]
    for _ in range(60):
        duration = rng.randint(low, high)
        latest = total - tail - duration
        if latest < warmup:
            # Shorter is better than nothing in a short run, down to the minimum.
            duration = max(low, total - tail - warmup)
            latest = total - tail - duration
            if latest < warmup:
                return None
        begin = rng.randint(warmup, latest)
        end = begin + duration
        if any(u == use_case and begin < e + gap and end + gap > b for _, u, b, e, _r in placed):
            continue
        if active is not None and not active(use_case, begin, end):
            continue
        window = _TIME_OF_DAY.get(kind)
        if window is not None and not window[0] <= (day_offset + begin) % 1440 <= window[1]:
            continue
        ramp_end = None
        if kind in _RAMP_KINDS and rng.random() < _RAMP_KINDS[kind]:
            ramp_end = begin + min(rng.randint(20, 40), duration - 15)
            if ramp_end <= begin:
                ramp_end = None
        return begin, end, ramp_end
    return None
