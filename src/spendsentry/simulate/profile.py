"""The real-traffic profile the simulator samples from.

Token sizes and burstiness are calibrated on the Azure Public Dataset (Microsoft),
AzureLLMInferenceTrace, CC-BY 4.0: ``scripts/build_trace_profile.py`` turns the two
raw CSVs (code completion and conversation, one hour each) into
``spendsentry/data/azure_trace_profile.json``, which ships with the package.

>>> profile = TraceProfile.load()
>>> profile.credit
'Azure Public Dataset (Microsoft), AzureLLMInferenceTrace, CC-BY 4.0'
>>> sampler = profile.context_sampler("conv")
>>> sampler.sample(0.0), sampler.sample(1.0)
(2.0, 14050.0)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from itertools import pairwise
from typing import Any

__all__ = ["QuantileSampler", "TraceArrivals", "TraceProfile"]

TRACE_NAMES = ("code", "conv")


class QuantileSampler:
    """Inverse-CDF sampling from evenly spaced quantiles.

    ``quantiles[i]`` is the value at probability ``i / (len(quantiles) - 1)``;
    a uniform draw is mapped through the piecewise-linear inverse CDF, which
    costs two list reads, so it is cheap enough to call per event.

    >>> s = QuantileSampler([0.0, 10.0, 100.0])
    >>> s.sample(0.25), s.sample(0.5), s.sample(0.75)
    (5.0, 10.0, 55.0)
    >>> round(s.mean(), 2)
    30.0
    """

    __slots__ = ("_last", "_quantiles", "_steps")

    def __init__(self, quantiles: list[float]) -> None:
        if len(quantiles) < 2 or any(b < a for a, b in pairwise(quantiles)):
            raise ValueError("need at least two non-decreasing quantiles")
        self._quantiles = [float(q) for q in quantiles]
        self._steps = len(quantiles) - 1
        self._last = self._quantiles[-1]

    def sample(self, u: float) -> float:
        """The value at probability ``u`` (a uniform draw in [0, 1])."""
        x = u * self._steps
        i = int(x)
        if i >= self._steps:
            return self._last
        lo = self._quantiles[i]
        return lo + (x - i) * (self._quantiles[i + 1] - lo)

    def mean(self) -> float:
        """Mean of the piecewise-linear distribution (the trapezoid rule)."""
        q = self._quantiles
        return sum((a + b) / 2 for a, b in pairwise(q)) / self._steps


@dataclass(frozen=True, slots=True)
class TraceArrivals:
    """Arrival statistics of one trace (see ``scripts/build_trace_profile.py``)."""

    rate_per_s: float
    interarrival_cv: float
    per_second_dispersion: float
    per_minute_cv: float
    per_minute_lag1_autocorr: float
    #: Lag-1 autocorrelation of per-minute counts once the slow drift is removed.
    detrended_lag1_autocorr: float
    #: Standard deviation of a mean-one lognormal per-minute rate multiplier that
    #: reproduces the trace's extra-Poisson per-minute variance (drift removed).
    minute_log_sigma: float


@dataclass(frozen=True, slots=True)
class TraceProfile:
    """Token quantiles and arrival statistics of the code and conv traces."""

    credit: str
    license: str
    traces: dict[str, dict[str, Any]]

    @classmethod
    def load(cls) -> TraceProfile:
        """The profile shipped in ``spendsentry/data`` (parsed once per process)."""
        return _load_packaged()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TraceProfile:
        traces = data["traces"]
        missing = [name for name in TRACE_NAMES if name not in traces]
        if missing:
            raise ValueError(f"trace profile lacks traces {missing}")
        return cls(credit=data["credit"], license=data["license"], traces=traces)

    def context_sampler(self, trace: str) -> QuantileSampler:
        """Sampler of the trace's context (input) token counts."""
        return QuantileSampler(self.traces[trace]["context_tokens"]["quantiles"])

    def generated_sampler(self, trace: str) -> QuantileSampler:
        """Sampler of the trace's generated (output) token counts."""
        return QuantileSampler(self.traces[trace]["generated_tokens"]["quantiles"])

    def arrivals(self, trace: str) -> TraceArrivals:
        a = self.traces[trace]["arrivals"]
        return TraceArrivals(
            rate_per_s=a["rate_per_s"],
            interarrival_cv=a["interarrival_cv"],
            per_second_dispersion=a["per_second_dispersion"],
            per_minute_cv=a["per_minute_cv"],
            per_minute_lag1_autocorr=a["per_minute_lag1_autocorr"],
            detrended_lag1_autocorr=a["detrended_lag1_autocorr"],
            minute_log_sigma=a["minute_log_sigma"],
        )


@lru_cache(maxsize=1)
def _load_packaged() -> TraceProfile:
    text = resources.files("spendsentry").joinpath("data/azure_trace_profile.json").read_text()
    return TraceProfile.from_dict(json.loads(text))
