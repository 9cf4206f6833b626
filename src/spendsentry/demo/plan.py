"""What the demo simulates: a dozen use cases with incidents early after the warm-up.

Detectors learn each use case's normal behaviour first, so the simulator plans
incidents at least two hours of event time into a run. The demo therefore runs
those first hours as fast as it can (the *pre-roll*), then paces event time at
``speed`` times the wall clock, with five incidents starting in the first event
minutes after the pre-roll and a second wave an hour and a half later.

The run lies in the past, ending about when it would end at the requested speed
(the worker rejects events more than 5 minutes in the future), and starts at
07:00 UTC of a past day, so the incidents fall in busy daytime traffic.

>>> from datetime import UTC, datetime
>>> now = datetime(2026, 11, 30, 7, 17, tzinfo=UTC)
>>> plan = DemoPlan.create(now=now, speed=60.0, duration_s=600.0)
>>> plan.start.isoformat(), plan.hours
('2026-11-29T07:00:00+00:00', 12.0)
>>> [i.kind for i in plan.incidents()][:5]
['cost_spike', 'prompt_inflation', 'fallback_drift', 'retrieval_amplification', 'agent_chatter']
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from spendsentry.simulate import Incident, Scenario

__all__ = ["PREROLL_MINUTES", "DemoPlan"]

#: Event minutes run as fast as possible before pacing (the detectors' warm-up).
PREROLL_MINUTES = 120
#: Event hours simulated when the demo runs until Ctrl-C.
OPEN_ENDED_HOURS = 24.0
#: The run starts at this UTC hour of a past day (daytime traffic for the incidents).
START_HOUR = 7

# (minutes after the pre-roll, kind, use case, minutes long, params): the first
# wave, staggered so each alert shows up on its own line.
_WAVES: tuple[tuple[int, str, str, int, dict[str, object]], ...] = (
    (2, "cost_spike", "claims_triage", 40, {"factor": 6.0}),
    (4, "prompt_inflation", "support_chat", 60, {"factor": 2.8}),
    (6, "fallback_drift", "code_assistant", 60, {"variant": "flagged", "share": 0.5}),
    (8, "retrieval_amplification", "kb_search_rag", 50, {"factor": 4.5}),
    (10, "agent_chatter", "research_agent", 45, {"variant": "runaway", "interval_s": 5.0}),
    # A second wave for longer runs.
    (95, "embedding_duplication", "doc_embeddings", 40, {}),
    (100, "cost_per_outcome", "underwriting_rag", 70, {"variant": "outcome_drop"}),
    (110, "model_oversizing", "claims_triage", 60, {}),
    (150, "cost_spike", "kb_search_rag", 30, {"factor": 5.0}),
)


@dataclass(frozen=True, slots=True)
class DemoPlan:
    """The demo's scenario: when it starts, how long, how fast.

    Parameters
    ----------
    start : datetime
        Event time of the run's first minute (UTC, whole minute).
    hours : float
        Event hours simulated (pre-roll included).
    speed : float
        Event seconds per wall second after the pre-roll.
    seed : int
        The simulator's seed.
    """

    start: datetime
    hours: float
    speed: float
    seed: int = 7

    @classmethod
    def create(
        cls,
        *,
        now: datetime | None = None,
        speed: float = 60.0,
        duration_s: float | None = None,
        seed: int = 7,
    ) -> DemoPlan:
        """Plan a run that never gets ahead of the wall clock ``now``.

        Raises
        ------
        ValueError
            If ``speed`` or ``duration_s`` is not a positive finite number.
        """
        if not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be a positive number, not {speed!r}")
        if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
            raise ValueError(f"duration must be a positive number of seconds, not {duration_s!r}")
        now = now or datetime.now(UTC)
        if duration_s is None:
            hours = OPEN_ENDED_HOURS
        else:
            # Whole hours, at least the pre-roll plus the first wave.
            paced = duration_s * speed / 3600.0
            hours = float(min(72, max(3, math.ceil(PREROLL_MINUTES / 60 + paced))))
        latest = now - timedelta(hours=hours)
        start = latest.replace(hour=START_HOUR, minute=0, second=0, microsecond=0)
        if start > latest:
            start -= timedelta(days=1)
        return cls(start=start, hours=hours, speed=speed, seed=seed)

    def incidents(self) -> list[Incident]:
        """The incidents that fit in the run, in start order."""
        total = round(self.hours * 60)
        found = []
        for n, (after, kind, use_case, minutes, params) in enumerate(_WAVES, 1):
            begin = PREROLL_MINUTES + after
            if begin + minutes > total:
                continue
            t0 = self.start + timedelta(minutes=begin)
            found.append(
                Incident(
                    f"demo-{n:02d}-{kind}",
                    kind,
                    use_case,
                    "step",
                    t0,
                    t0 + timedelta(minutes=minutes),
                    params=params,
                )
            )
        return found

    def scenario(self) -> Scenario:
        """The simulator run (events in event-time order via ``iter_events``)."""
        incidents = self.incidents()
        if not incidents:
            return Scenario(seed=self.seed, start=self.start, hours=self.hours, no_incidents=True)
        return Scenario(seed=self.seed, start=self.start, hours=self.hours, incidents=incidents)

    @property
    def live_from(self) -> datetime:
        """Event time at which pacing starts (the end of the pre-roll)."""
        return self.start + timedelta(minutes=PREROLL_MINUTES)
