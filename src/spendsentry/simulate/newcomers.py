"""Traffic that appears mid-run: use cases no policy names, and a use case trying a new model.

The twelve shapes of :mod:`.traffic` all have policies in ``streams/policies``;
real fleets also grow use cases nobody registered, and use cases try models
they never used. A run with incidents gets four such *newcomers*, planned from
their own random stream, each calling on its own random stream (the rest of
the run's bytes and labels are as they were, but for event ids, which number
every event in time order):

==============  ==============================================================
shadow_pilot    ``shadow-ai-pilot``: gpt-4o, 30-120 calls a minute with 6k-12k
                token prompts, for 60-120 minutes (an experiment nobody owns
                that spends like production); labelled ``unowned_spend``
backfill        ``search-reindex-backfill``: a team's batch job on gpt-4o-mini,
                200-400 calls a minute with 3k-6k token documents, for 45-90
                minutes; labelled ``unowned_spend``
benign_feature  ``release-notes-helper``: gpt-4o-mini, a call every 1-3 minutes,
                from its start to the end of the run (cents an hour): labelled
                as a newcomer, not an incident, so any alert on it is false
model_trial     an existing use case with no other incident in the run
                (:data:`TRIAL_MODELS`: its added calls would shift the baselines
                other incidents are judged against) sends 2-5 calls a minute to
                a model it never used, for 40-90 minutes, at least 4 hours into
                the run; labelled ``new_model`` (none when every candidate has
                an incident)
==============  ==============================================================

>>> from datetime import UTC, datetime
>>> plan = plan_newcomers(random.Random(1), datetime(2026, 11, 2, tzinfo=UTC), 8 * 60)
>>> [(n.role, n.use_case) for n in plan][:3]  # doctest: +NORMALIZE_WHITESPACE
[('shadow_pilot', 'shadow-ai-pilot'), ('backfill', 'search-reindex-backfill'),
 ('benign_feature', 'release-notes-helper')]
>>> [n.incident(i).kind for i, n in enumerate(plan, 1) if n.labelled]
['unowned_spend', 'unowned_spend', 'new_model']
>>> plan_newcomers(random.Random(1), datetime(2026, 11, 2, tzinfo=UTC), 60)
[]
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from spendsentry.simulate.calls import MINUTE_MS, PROVIDERS
from spendsentry.simulate.incidents import Incident, rfc3339

__all__ = [
    "NEWCOMER_KIND",
    "ROLES",
    "TRIAL_KIND",
    "TRIAL_MODELS",
    "Newcomer",
    "NewcomerTraffic",
    "plan_newcomers",
]

#: The incident kind a labelled new use case is.
NEWCOMER_KIND = "unowned_spend"
#: The incident kind of a model trial.
TRIAL_KIND = "new_model"
#: Use cases that may try a model, and the model (one they never call).
TRIAL_MODELS: dict[str, str] = {
    "claims_triage": "gpt-4o",
    "code_assistant": "o3",
    "kb_search_rag": "claude-sonnet-4-0",
    "support_chat": "gpt-4.1",
    "translation": "gpt-4.1",
}
#: A trial starts this far into the run: the use case's models are its own by then.
TRIAL_AFTER_MINUTES = 240


@dataclass(frozen=True, slots=True)
class _Role:
    use_case: str
    model: str
    calls_per_min: tuple[float, float]
    input_tokens: tuple[int, int]
    output_tokens: tuple[int, int]
    minutes: tuple[int, int] | None  # None: until the end of the run
    team: str | None
    agent_id: str | None
    service: str | None
    labelled: bool


#: The three newcomers, in planning order (see the module table).
ROLES: dict[str, _Role] = {
    "shadow_pilot": _Role(
        "shadow-ai-pilot", "gpt-4o", (30.0, 120.0), (6_000, 12_000), (300, 800), (60, 120),
        team=None, agent_id="pilot-bot", service="growth-pilot", labelled=True,
    ),
    "backfill": _Role(
        "search-reindex-backfill", "gpt-4o-mini", (200.0, 400.0), (3_000, 6_000), (150, 400),
        (45, 90), team="search", agent_id=None, service="reindex-job", labelled=True,
    ),
    "benign_feature": _Role(
        "release-notes-helper", "gpt-4o-mini", (0.33, 1.0), (500, 1_500), (100, 300), None,
        team="docs", agent_id=None, service="release-notes", labelled=False,
    ),
    # The use case and its team are the trial's (TRIAL_MODELS); sizes are a chat turn's.
    "model_trial": _Role(
        "", "", (2.0, 5.0), (1_500, 4_000), (200, 600), (40, 90),
        team=None, agent_id=None, service=None, labelled=True,
    ),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Newcomer:
    """A use case appearing at ``start_minute`` (of the run) and stopping before ``end_minute``."""

    role: str
    use_case: str
    start: datetime
    start_minute: int
    end_minute: int
    params: dict[str, Any]

    @property
    def labelled(self) -> bool:
        """Whether it is an incident (unowned spend worth an alert)."""
        return ROLES[self.role].labelled

    @property
    def kind(self) -> str:
        """The incident kind it is labelled as."""
        return TRIAL_KIND if self.role == "model_trial" else NEWCOMER_KIND

    def incident(self, n: int) -> Incident:
        """Its incident label (``labelled`` newcomers only)."""
        return Incident(
            incident_id=f"new-{n:02d}-{self.kind}",
            kind=self.kind,
            use_case=self.use_case,
            shape="step",
            start=self.start + timedelta(minutes=self.start_minute),
            end=self.start + timedelta(minutes=self.end_minute),
            params={"role": self.role, **self.params},
        )

    def to_label(self) -> dict[str, Any]:
        """The newcomer as a labels.json entry."""
        return {
            "role": self.role,
            "use_case": self.use_case,
            "start": rfc3339(self.start + timedelta(minutes=self.start_minute)),
            "end": rfc3339(self.start + timedelta(minutes=self.end_minute)),
            "labelled": self.labelled,
            "params": dict(self.params),
        }


def plan_newcomers(
    rng: random.Random,
    start: datetime,
    total_minutes: int,
    warmup_minutes: int = 120,
    tail_minutes: int = 15,
    free: Callable[[str, int, int], bool] | None = None,
    busy: Collection[str] = (),
) -> list[Newcomer]:
    """Place the newcomers after the warm-up, each ending ``tail_minutes`` before the
    run does (the evaluation's grace); none when the run is too short for them.

    ``free(use_case, first, end)`` says whether an existing use case may carry a
    model trial in those minutes (traffic in them; ``None``: always); a trial
    goes to one of the :data:`TRIAL_MODELS` use cases not in ``busy`` (those
    with incidents), and is left out when there is none or no window in 60 draws.
    """
    out = []
    for role, spec in ROLES.items():
        low, high = spec.minutes or (30, 30)
        earliest = TRIAL_AFTER_MINUTES if role == "model_trial" else warmup_minutes
        latest = total_minutes - tail_minutes - low
        if latest < earliest:
            if role == "model_trial":
                continue  # a short run: the trial alone is left out
            return []
        use_case, model = spec.use_case, spec.model
        if role == "model_trial":
            candidates = sorted(u for u in TRIAL_MODELS if u not in busy)
            if not candidates:
                continue
            use_case = rng.choice(candidates)
            model = TRIAL_MODELS[use_case]
        for _ in range(60):
            begin = rng.randint(earliest, latest)
            if spec.minutes is None:
                end = total_minutes
            else:
                end = min(begin + rng.randint(low, high), total_minutes - tail_minutes)
            if role != "model_trial" or free is None or free(use_case, begin, end):
                break
        else:
            continue  # a model trial with no free window
        params = {
            "model": model,
            "calls_per_min": round(rng.uniform(*spec.calls_per_min), 2),
            "input_tokens": rng.randint(*spec.input_tokens),
            "output_tokens": rng.randint(*spec.output_tokens),
            "team": spec.team,
            "agent_id": spec.agent_id,
            "service": spec.service,
        }
        out.append(Newcomer(role, use_case, start, begin, end, params))
    return out


class NewcomerTraffic:
    """A newcomer's calls, minute by minute, from its own random stream.

    Poisson arrivals at ``calls_per_min``; prompt and answer sizes spread
    lognormally (sigma 0.3) around the drawn sizes. ``emit(ms, event)`` as in
    :class:`~spendsentry.simulate.traffic.UseCaseTraffic`.
    """

    def __init__(
        self,
        newcomer: Newcomer,
        rng: random.Random,
        emit: Callable[[int, dict[str, Any]], None],
    ) -> None:
        self.newcomer = newcomer
        self.rng = rng
        self.emit = emit
        self._calls = 0

    def generate_minute(self, minute: int) -> None:
        n = self.newcomer
        if not n.start_minute <= minute < n.end_minute:
            return
        p, rng = n.params, self.rng
        t = 0.0
        while True:
            t += rng.expovariate(p["calls_per_min"])
            if t >= 1.0:
                return
            self._calls += 1
            self.emit(minute * MINUTE_MS + int(t * MINUTE_MS), self._event(p))

    def _event(self, p: dict[str, Any]) -> dict[str, Any]:
        rng = self.rng
        event = {
            "type": "usage",
            "event_id": "",
            "ts": "",
            "use_case": self.newcomer.use_case,
            "kind": "llm_call",
            "provider": PROVIDERS.get(p["model"], "openai"),
            "model": p["model"],
            "input_tokens": max(1, round(p["input_tokens"] * rng.lognormvariate(0.0, 0.3))),
            "output_tokens": max(1, round(p["output_tokens"] * rng.lognormvariate(0.0, 0.3))),
            "request_id": f"{self.newcomer.role}-{self._calls}",
            "status": "ok",
        }
        for name in ("team", "agent_id"):
            if p[name]:
                event[name] = p[name]
        if p["service"]:
            event["service"] = p["service"]  # not a contract field: kept in extra
        return event
