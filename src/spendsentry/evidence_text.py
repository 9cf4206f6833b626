"""Evidence numbers as a person reads them: log-scale metrics back in their own unit.

Some detectors watch the logarithm of a quantity (the model mix's price tier is
``price_tier_ln_usd_per_mtok``: ln of USD per million tokens), because that is
where their statistics are well behaved; "-0.89 -> 0.90" means nothing to an
engineer, "$0.41 -> $2.46 per Mtok" does.

>>> readable({"metric": "price_tier_ln_usd_per_mtok", "baseline": -0.89, "observed": 0.9})
(0.4107, 2.4596, 'USD/Mtok')
>>> readable({"metric": "input_tokens_per_call", "baseline": 10, "observed": 30, "unit": "tokens"})
(10.0, 30.0, 'tokens')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["readable"]

#: Metric name suffix of a natural logarithm -> the unit of the quantity itself.
_LOG_SUFFIXES = {"_ln_usd_per_mtok": "USD/Mtok"}


def readable(evidence: Mapping[str, Any]) -> tuple[float | None, float | None, str | None]:
    """(baseline, observed, unit) of an alert's evidence, log metrics exponentiated."""
    baseline, observed = _num(evidence.get("baseline")), _num(evidence.get("observed"))
    unit = evidence.get("unit")
    unit = unit if isinstance(unit, str) and unit else None
    metric = str(evidence.get("metric") or "")
    for suffix, real_unit in _LOG_SUFFIXES.items():
        if metric.endswith(suffix):
            return _exp(baseline), _exp(observed), real_unit
    return baseline, observed, unit


def _exp(x: float | None) -> float | None:
    return None if x is None or x > 700 else round(math.exp(x), 4)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
