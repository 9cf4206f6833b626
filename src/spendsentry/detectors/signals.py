"""The numbers alert kinds read from a closed minute and from their use case's windows.

Each extractor returns a ``(numerator, denominator)`` pair for a
:class:`~spendsentry.detectors.shift.RatioShiftDetector`; the helpers price the
excess spend a finding reports. None of them needs the price book (see
:mod:`spendsentry.detectors.sizing` for those that do).

>>> s = MinuteSignals("u", 0, retrievals=12, retrieval_requests=4)
>>> retrievals_per_request(s)
(12.0, 4.0)
"""

from __future__ import annotations

import math

from spendsentry.detectors.base import UseCaseContext
from spendsentry.windows import MinuteSignals


def log_input_tokens_per_call(s: MinuteSignals) -> tuple[float, float]:
    """Sum of ln(1 + input tokens) and LLM calls: a geometric mean of prompt sizes."""
    return s.llm_log_input / 1e6, float(s.llm_calls)


def retrievals_per_request(s: MinuteSignals) -> tuple[float, float]:
    return float(s.retrievals), float(s.retrieval_requests)


def fallback_share(s: MinuteSignals) -> tuple[float, float]:
    return float(s.fallback_calls), float(s.llm_calls)


def cost_per_outcome(s: MinuteSignals) -> tuple[float, float]:
    return s.cost, float(s.outcomes)


def duplicate_share(s: MinuteSignals) -> tuple[float, float]:
    return float(s.embedding_duplicates), float(s.embeddings)


def top_model(signals: MinuteSignals) -> str | None:
    """The model with the most calls in the minute (ties: the greatest name)."""
    if not signals.models:
        return None
    return max(signals.models.items(), key=lambda kv: (kv[1].calls, kv[0]))[0]


def excess_from_ratio(ctx: UseCaseContext, ratio: float) -> float:
    """Excess $/h when cost scales with the shifted metric: rate x (1 - 1/ratio)."""
    rate_per_hour = ctx.last_5m.cost / max(ctx.last_5m.minutes_filled, 1) * 60.0
    if not math.isfinite(ratio) or ratio <= 1.0:
        return 0.0
    return rate_per_hour * (1.0 - 1.0 / ratio)


def excess_over_hour(ctx: UseCaseContext) -> float:
    """Excess $/h of the last 5 minutes over the last hour's average."""
    now = ctx.last_5m.cost / max(ctx.last_5m.minutes_filled, 1)
    hour = ctx.last_1h.cost / max(ctx.last_1h.minutes_filled, 1)
    return max(0.0, now - hour) * 60.0


def times(ratio: float) -> str:
    """A ratio as a sentence says it ("3.2x", or "far above" when unbounded)."""
    return f"{ratio:.1f}x" if math.isfinite(ratio) else "far above"


def finite(x: float) -> float:
    """A ratio for a finding's details (JSON has no infinity)."""
    return round(x, 3) if math.isfinite(x) else 1e9
