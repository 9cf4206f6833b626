"""Labelled synthetic AI traffic: the simulator behind ``spendsentry simulate``.

Twelve use cases of different shapes (chat, single calls, RAG, agents, an
embedding pipeline, batch jobs, sparse calls, erratic experiments) with diurnal
load, slow growth, benign bursts and Poisson-ish arrivals; token sizes and
burstiness are calibrated on the Azure Public Dataset (Microsoft),
AzureLLMInferenceTrace, CC-BY 4.0. On top, labelled incidents of the nine alert
kinds. :meth:`Scenario.write` produces ``events.jsonl`` (one usage or outcome
event per line, in event-time order, without ``cost_usd``) and ``labels.json``::

    {"seed": 1, "start": "2026-11-02T00:00:00Z", "hours": 24,
     "use_cases": ["support_chat", ...],
     "incidents": [{"incident_id": "inc-01-cost_spike", "kind": "cost_spike",
                    "use_case": "claims_triage", "shape": "step",
                    "start": "...", "ramp_end": null, "end": "...",
                    "params": {"factor": 5.2}}, ...],
     "benign_bursts": [{"use_case": "...", "start": "...", "end": "...",
                        "factor": 3.0}, ...]}

Calendar runs (``Scenario(calendar=True)``, ``simulate --calendar --days 7``)
replace the compressed diurnal day with weekdays, weekends, office hours in each
use case's time zone and scheduled batches (:mod:`.calendar`); their labels add
``"calendar": {use_case: load profile}``.

>>> from spendsentry.simulate import Scenario
>>> sc = Scenario(seed=1, hours=0.1, no_incidents=True)
>>> next(sc.iter_events())["type"] in ("usage", "outcome")
True
"""

from spendsentry.simulate.incidents import KINDS, Effects, Incident, plan_incidents
from spendsentry.simulate.profile import QuantileSampler, TraceProfile
from spendsentry.simulate.scenario import DEFAULT_START, Scenario
from spendsentry.simulate.traffic import DEFAULT_USE_CASES, USE_CASES, UseCaseShape

__all__ = [
    "DEFAULT_START",
    "DEFAULT_USE_CASES",
    "KINDS",
    "USE_CASES",
    "Effects",
    "Incident",
    "QuantileSampler",
    "Scenario",
    "TraceProfile",
    "UseCaseShape",
    "plan_incidents",
]
