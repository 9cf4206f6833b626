"""Normal traffic: the dozen use-case shapes and the events each one emits.

A :class:`UseCaseShape` says what a use case looks like (chat sessions, single
calls, RAG requests, agent loops, an embedding pipeline, batch jobs, sparse calls
or erratic experiments), how busy it is and when. :class:`UseCaseTraffic` turns
a shape into usage and outcome events one minute at a time: Poisson arrivals at
a rate that follows a diurnal curve (or, in calendar mode, a per-minute load
table from :mod:`spendsentry.simulate.calendar`), slow growth, benign short bursts and a
per-minute burstiness multiplier; token sizes drawn by inverse-CDF sampling from
the Azure Public Dataset (Microsoft), AzureLLMInferenceTrace, CC-BY 4.0 (see
:mod:`spendsentry.simulate.profile`), scaled per use case. Incidents reach the
traffic only through :class:`~spendsentry.simulate.incidents.Effects`.

>>> [s.name for s in DEFAULT_USE_CASES][:3]
['support_chat', 'claims_triage', 'underwriting_rag']
>>> shape = USE_CASES["support_chat"]
>>> round(diurnal_factor(shape, 14 * 60, weekday=0), 2)  # at its peak hour
1.6
>>> round(diurnal_factor(USE_CASES["sales_email_drafts"], 3 * 60, weekday=0), 2)  # 03:00
0.0
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from spendsentry.simulate.calls import MINUTE_MS, PROVIDERS, CallEmitter
from spendsentry.simulate.incidents import Effects
from spendsentry.simulate.profile import TraceProfile
from spendsentry.simulate.workloads import Workloads

__all__ = [
    "DEFAULT_USE_CASES",
    "LAB_MODELS",
    "PROVIDERS",
    "USE_CASES",
    "BenignBurst",
    "Calendar",
    "UseCaseShape",
    "UseCaseTraffic",
    "diurnal_factor",
    "plan_bursts",
]

DAY_MINUTES = 1440

LAB_MODELS = (
    "gpt-4o",
    "gpt-4.1",
    "gpt-4.1-nano",
    "o3",
    "o4-mini",
    "claude-sonnet-4-0",
    "claude-3-5-haiku-latest",
    "gemini-2.5-pro",
    "gemini-2.0-flash",
)


@dataclass(frozen=True, slots=True)
class UseCaseShape:
    """What one use case's normal traffic looks like.

    ``rate_per_min`` counts *arrivals* (chat sessions, RAG requests, agent runs,
    documents, calls) per minute at the diurnal mean on day 0; ``calls`` is the
    inclusive range of turns per chat session, tool steps per agent run,
    retrievals per RAG request or chunks per document.
    """

    name: str
    pattern: str  # chat | single | rag | agent | embedding | batch | lab
    team: str
    model: str
    big_model: str  # the fallback / larger, pricier model
    rate_per_min: float
    peak_hour: float = 14.0  # UTC hour of the diurnal peak
    diurnal_amplitude: float = 0.6  # peak 1 + a, trough 1 - a times the mean
    office_hours: bool = False  # weekdays 08:00-18:00 UTC only
    growth_per_day: float = 0.1
    trace: str = "conv"  # which Azure trace sizes the tokens and the burstiness
    input_scale: float = 1.0
    output_scale: float = 1.0
    max_input: int = 120_000
    calls: tuple[int, int] = (1, 1)
    #: Share of single calls that are routine small requests (< 300 in, < 100 out).
    routine_share: float = 0.0
    outcome: str | None = None
    outcome_prob: float = 0.0
    environment: str = "production"
    agent_id: str | None = None
    tools: tuple[str, ...] = ()
    fallback_rate: float = 0.003  # natural, benign flagged fallbacks
    benign_bursts: bool = True
    id_prefix: str = "x"

    @property
    def provider(self) -> str:
        return PROVIDERS[self.model]


DEFAULT_USE_CASES: tuple[UseCaseShape, ...] = (
    UseCaseShape(
        "support_chat", "chat", "customer-care", "gpt-4o-mini", "gpt-4o", 6.0,
        peak_hour=14, growth_per_day=0.10, input_scale=0.5, output_scale=0.8,
        calls=(3, 8), outcome="ticket_resolved", outcome_prob=0.7, id_prefix="chat",
    ),
    UseCaseShape(
        "claims_triage", "single", "claims", "claude-3-5-haiku-latest", "claude-sonnet-4-0",
        22.0, peak_hour=11, growth_per_day=0.05, input_scale=1.1, output_scale=0.7,
        routine_share=0.3, outcome="claim_triaged", outcome_prob=0.9, id_prefix="claim",
    ),
    UseCaseShape(
        "underwriting_rag", "rag", "underwriting", "gpt-4.1-mini", "gpt-4.1", 7.0,
        peak_hour=13, growth_per_day=0.08, input_scale=1.5, output_scale=1.0, calls=(2, 4),
        outcome="underwriting_decision", outcome_prob=0.85, id_prefix="uw",
    ),
    UseCaseShape(
        "code_assistant", "single", "platform-eng", "gpt-4.1-mini", "gpt-4.1", 50.0,
        peak_hour=15, growth_per_day=0.15, trace="code", input_scale=1.2, routine_share=0.15,
        outcome="suggestion_accepted", outcome_prob=0.25, id_prefix="code",
    ),
    UseCaseShape(
        "research_agent", "agent", "research", "claude-sonnet-4-0", "claude-opus-4-0", 1.2,
        peak_hour=16, growth_per_day=0.20, input_scale=0.6, output_scale=0.6, max_input=60_000,
        calls=(3, 6), outcome="report_delivered", outcome_prob=0.8, agent_id="research-agent",
        tools=("web_search", "fetch_url", "read_pdf", "python"), id_prefix="run",
    ),
    UseCaseShape(
        "sales_email_drafts", "single", "sales", "gpt-4o-mini", "gpt-4o", 25.0,
        peak_hour=13, diurnal_amplitude=0.3, office_hours=True, growth_per_day=0.05,
        input_scale=0.7, output_scale=1.3, routine_share=0.2, outcome="email_sent",
        outcome_prob=0.6,
        id_prefix="mail",
    ),
    UseCaseShape(
        "doc_embeddings", "embedding", "knowledge", "text-embedding-3-small",
        "text-embedding-3-large", 12.0, peak_hour=2, diurnal_amplitude=0.3,
        growth_per_day=0.05, input_scale=0.5, max_input=8191, calls=(1, 8), id_prefix="doc",
    ),
    UseCaseShape(
        "kb_search_rag", "rag", "knowledge", "gpt-4o-mini", "gpt-4o", 9.0,
        peak_hour=14, growth_per_day=0.10, input_scale=1.2, output_scale=0.8, calls=(2, 4),
        outcome="answer_accepted", outcome_prob=0.4, id_prefix="kb",
    ),
    UseCaseShape(
        "ops_agent", "agent", "sre", "gpt-4.1-mini", "gpt-4.1", 0.8,
        peak_hour=10, diurnal_amplitude=0.3, growth_per_day=0.05, input_scale=0.5,
        output_scale=0.5, max_input=60_000, calls=(3, 6), outcome="incident_remediated",
        outcome_prob=0.85, agent_id="ops-agent",
        tools=("query_metrics", "search_logs", "kubectl", "create_ticket"), id_prefix="ops",
    ),
    UseCaseShape(
        # rate_per_min is the rate *inside* a batch job; jobs come every 3-5 h.
        "summarizer_batch", "batch", "data", "gpt-4.1-nano", "gpt-4.1-mini", 220.0,
        diurnal_amplitude=0.0, growth_per_day=0.05, input_scale=2.5, output_scale=1.0,
        benign_bursts=False, id_prefix="batch",
    ),
    UseCaseShape(
        # Sparse: about five calls an hour.
        "translation", "single", "localization", "claude-3-5-haiku-latest",
        "claude-sonnet-4-0", 5.0 / 60, peak_hour=12, growth_per_day=0.02,
        input_scale=0.4, output_scale=1.0, benign_bursts=False, id_prefix="tr",
    ),
    UseCaseShape(
        # rate_per_min is the background; experiments add erratic episodes.
        "lab_experiments", "lab", "ml-lab", "gpt-4o", "gpt-4o", 0.5, peak_hour=15,
        diurnal_amplitude=0.5, growth_per_day=0.0, environment="experiment",
        benign_bursts=False, fallback_rate=0.0, id_prefix="exp",
    ),
)  # fmt: skip
USE_CASES: dict[str, UseCaseShape] = {s.name: s for s in DEFAULT_USE_CASES}


def diurnal_factor(shape: UseCaseShape, minute_of_day: int, weekday: int) -> float:
    """Rate multiplier for the UTC minute of day (mean one over a day, except office hours).

    Office-hours use cases run weekdays 08:00-18:00 UTC at their full rate and
    are silent otherwise.
    """
    hour = minute_of_day / 60.0
    if shape.office_hours and (weekday >= 5 or not 8.0 <= hour < 18.0):
        return 0.0
    return 1.0 + shape.diurnal_amplitude * math.cos(2 * math.pi * (hour - shape.peak_hour) / 24)


@dataclass(frozen=True, slots=True)
class BenignBurst:
    """A short rate burst of a use case's *normal* mix: not an incident."""

    use_case: str
    start_minute: int
    minutes: int
    factor: float = 3.0


def plan_bursts(
    rng: random.Random,
    total_minutes: int,
    incidents: list[tuple[str, int, int]],
    per_day: float = 6.0,
    shapes: tuple[UseCaseShape, ...] = DEFAULT_USE_CASES,
) -> list[BenignBurst]:
    """About ``per_day`` bursts a day of 1-3 minutes at x3, clear of incidents.

    ``incidents`` holds (use_case, start_minute, end_minute); a burst keeps 30
    minutes away from any incident on its use case so labels stay unambiguous.

    >>> bursts = plan_bursts(random.Random(1), 1440, [])
    >>> len(bursts), all(1 <= b.minutes <= 3 for b in bursts)
    (6, True)
    """
    eligible = [s.name for s in shapes if s.benign_bursts and not s.office_hours]
    count = round(per_day * total_minutes / DAY_MINUTES)
    bursts: list[BenignBurst] = []
    if not eligible or total_minutes < 20:
        return bursts
    for _ in range(count):
        for _attempt in range(50):
            use_case = rng.choice(eligible)
            minutes = rng.randint(1, 3)
            start = rng.randint(5, total_minutes - 5)
            clash = any(
                uc == use_case and start < end + 30 and start + minutes > begin - 30
                for uc, begin, end in incidents
            ) or any(b.use_case == use_case and abs(b.start_minute - start) < 30 for b in bursts)
            if not clash:
                bursts.append(BenignBurst(use_case, start, minutes))
                break
    bursts.sort(key=lambda b: (b.start_minute, b.use_case))
    return bursts


Emit = Callable[[int, dict[str, Any]], None]


@dataclass(slots=True)
class _Experiment:
    experiment_id: str
    model: str
    rate_per_min: float
    input_scale: float
    until_minute: int


@dataclass(frozen=True, slots=True)
class Calendar:
    """Maps a run-relative minute to the UTC minute of day and weekday (Monday = 0).

    >>> Calendar(start_minute_of_day=23 * 60, start_weekday=6).at(90)
    (30, 0)
    """

    start_minute_of_day: int
    start_weekday: int

    def at(self, minute: int) -> tuple[int, int]:
        absolute = self.start_minute_of_day + minute
        return absolute % DAY_MINUTES, (self.start_weekday + absolute // DAY_MINUTES) % 7


class UseCaseTraffic:
    """Generates one use case's events, one minute at a time.

    ``effects(minute)`` returns the incident effects active in that run-relative
    minute (``NORMAL`` almost always); ``emit(ms, event)`` receives each event with
    its run-relative event time in milliseconds, possibly in a later minute (a
    chat session spans several). Events get ``event_id`` and ``ts`` on output.
    """

    def __init__(
        self,
        shape: UseCaseShape,
        profile: TraceProfile,
        rng: random.Random,
        calendar: Calendar,
        effects: Callable[[int], Effects],
        emit: Emit,
        bursts: Sequence[BenignBurst] = (),
        load: Sequence[float] | None = None,
    ) -> None:
        self.shape = shape
        # Calendar mode: the rate multiplier of each run minute, growth included
        # (see spendsentry.simulate.calendar); None keeps the diurnal curve.
        self._load = load
        self._rng = rng
        self._calendar = calendar
        self._effects = effects
        self._calls = calls = CallEmitter(shape, profile, rng, effects, emit)
        self._workloads = Workloads(calls)
        arrivals = profile.arrivals(shape.trace)
        # AR(1) log-rate noise: the trace's extra-Poisson per-minute variance and
        # lag-1 autocorrelation with its slow drift removed (the diurnal curve
        # models that). conv: sigma ~0.13, smooth; code: sigma ~0.8, on/off bursts.
        self._sigma = arrivals.minute_log_sigma
        self._phi = max(0.0, min(0.95, arrivals.detrended_lag1_autocorr))
        self._log_noise = rng.gauss(0.0, self._sigma)
        self._burst_minutes: dict[int, float] = {}
        for b in bursts:
            if b.use_case == shape.name:
                for m in range(b.start_minute, b.start_minute + b.minutes):
                    self._burst_minutes[m] = b.factor
        self._runaways_started: set[str] = set()
        self._experiments: list[_Experiment] = []
        self._next_batch = rng.randint(30, 180) if shape.pattern == "batch" else -1
        self._batch_until = -1
        self._batch_id = ""

    # -- rates ---------------------------------------------------------------

    def rate(self, minute: int, effects: Effects) -> float:
        """Expected arrivals in this minute (before the burstiness noise)."""
        shape = self.shape
        if self._load is not None:
            rate = shape.rate_per_min * self._load[minute]
        else:
            minute_of_day, weekday = self._calendar.at(minute)
            rate = shape.rate_per_min * diurnal_factor(shape, minute_of_day, weekday)
            rate *= (1.0 + shape.growth_per_day) ** (minute / DAY_MINUTES)
        rate *= self._burst_minutes.get(minute, 1.0) * effects.rate
        return rate

    def _noise(self) -> float:
        # Mean-one lognormal multiplier following an AR(1) in log space.
        phi, sigma = self._phi, self._sigma
        self._log_noise = phi * self._log_noise + math.sqrt(1 - phi * phi) * self._rng.gauss(
            0.0, sigma
        )
        return math.exp(self._log_noise - sigma * sigma / 2)

    def _arrivals(self, minute: int, per_min: float) -> list[int]:
        """Poisson arrival times (run-relative ms) within the minute."""
        out: list[int] = []
        if per_min <= 0:
            return out
        expo = self._rng.expovariate
        lam = per_min / MINUTE_MS
        t = expo(lam)
        base = minute * MINUTE_MS
        while t < MINUTE_MS:
            out.append(base + int(t))
            t += expo(lam)
        return out

    # -- one minute ----------------------------------------------------------

    def generate_minute(self, minute: int) -> None:
        """Emit every event whose session or request starts in ``minute``."""
        effects = self._effects(minute)
        pattern = self.shape.pattern
        if pattern == "batch":
            if self._load is not None:
                self._scheduled_batch_minute(minute, effects)
            else:
                self._batch_minute(minute, effects)
            return
        if pattern == "lab":
            self._lab_minute(minute, effects)
            return
        if effects.runaway_interval_s and effects.incident_id not in self._runaways_started:
            self._runaways_started.add(str(effects.incident_id))
            self._workloads.runaway(minute * MINUTE_MS, effects.runaway_interval_s)
        noise = self._noise()
        per_min = self.rate(minute, effects) * noise
        work = self._workloads
        start = {
            "chat": work.chat,
            "single": work.single,
            "rag": work.rag,
            "agent": work.agent,
            "embedding": work.document,
        }[pattern]
        for t in self._arrivals(minute, per_min):
            start(t)

    def _batch_minute(self, minute: int, effects: Effects) -> None:
        """Batch jobs of a few minutes every few hours; silence in between."""
        shape, rng = self.shape, self._rng
        if minute == self._next_batch:
            self._batch_until = minute + rng.randint(2, 6)
            self._batch_id = self._calls.new_id(shape.id_prefix)
            self._next_batch = minute + rng.randint(180, 300)
        if minute >= self._batch_until:
            return
        growth = (1.0 + shape.growth_per_day) ** (minute / DAY_MINUTES)
        per_min = shape.rate_per_min * rng.uniform(0.7, 1.3) * growth * effects.rate
        self._batch_calls(minute, per_min)

    def _scheduled_batch_minute(self, minute: int, effects: Effects) -> None:
        """Calendar mode: a job runs while the load table says so (nightly, month start)."""
        assert self._load is not None
        level = self._load[minute]
        if level <= 0:
            self._batch_id = ""
            return
        if not self._batch_id:
            self._batch_id = self._calls.new_id(self.shape.id_prefix)
        per_min = self.shape.rate_per_min * level * self._rng.uniform(0.7, 1.3) * effects.rate
        self._batch_calls(minute, per_min)

    def _batch_calls(self, minute: int, per_min: float) -> None:
        shape = self.shape
        for t in self._arrivals(minute, per_min):
            self._calls.llm(
                t,
                self._calls.input(shape.input_scale),
                self._calls.output(shape.output_scale),
                session_id=self._batch_id,
                request_id=self._calls.new_id("req"),
            )

    def _lab_minute(self, minute: int, effects: Effects) -> None:
        """Erratic experiments: random models, volumes and prompt sizes."""
        shape, rng = self.shape, self._rng
        if self._load is not None:
            busy = self._load[minute]
        else:
            busy = diurnal_factor(shape, *self._calendar.at(minute))
        if rng.random() < busy / 90:  # roughly one new experiment every 1.5 h
            self._experiments.append(
                _Experiment(
                    self._calls.new_id(shape.id_prefix),
                    rng.choice(LAB_MODELS),
                    math.exp(rng.uniform(math.log(1.0), math.log(40.0))),
                    math.exp(rng.uniform(math.log(0.1), math.log(4.0))),
                    minute + rng.randint(5, 90),
                )
            )
        self._experiments = [e for e in self._experiments if e.until_minute > minute]
        runs: list[tuple[str | None, str, float, float]] = [
            (None, rng.choice(LAB_MODELS), shape.rate_per_min * busy * effects.rate, 1.0)
        ]
        runs += [
            (e.experiment_id, e.model, e.rate_per_min, e.input_scale) for e in self._experiments
        ]
        for session_id, model, per_min, scale in runs:
            for t in self._arrivals(minute, per_min):
                chosen = model if session_id else rng.choice(LAB_MODELS)
                self._calls.llm(
                    t,
                    self._calls.input(scale),
                    self._calls.output(rng.uniform(0.2, 2.0)),
                    session_id=session_id,
                    request_id=self._calls.new_id("req"),
                    model=chosen,
                )
