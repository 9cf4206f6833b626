"""Model sizes, price tiers and routing savings, read from the engine's price book.

The price book is the engine's (:class:`~spendsentry.pricing.PriceBook`,
overrides from ``streams/prices.toml`` first, then the genai-prices
catalogue), so a self-hosted or negotiated model priced only in the override
file counts here exactly as it is priced.

>>> from spendsentry.pricing import ModelRates, PriceBook
>>> sizes = ModelSizes(PriceBook({"our-llama": ModelRates(3e-6, 3e-6, 9e-6)}))
>>> sizes.is_large("our-llama"), sizes.is_large("gpt-4o"), sizes.is_large("gpt-4o-mini")
(True, True, False)
"""

from __future__ import annotations

import math

from spendsentry.pricing import PriceBook
from spendsentry.windows import MinuteSignals

#: Input $/Mtok at or above which a model counts as "large" (gpt-4o, Sonnet, Opus,
#: gpt-4.1 are; the -mini, Haiku and Flash tiers are not).
LARGE_MODEL_INPUT_USD_PER_MTOK = 2.0
#: Size assumed for a routine small request when pricing the saving (half the bounds).
_SMALL_INPUT, _SMALL_OUTPUT = 250, 75


class ModelSizes:
    """What the price book says about the models of a minute."""

    def __init__(self, prices: PriceBook) -> None:
        self.prices = prices

    def is_large(self, model: str) -> bool:
        """Whether ``model`` is priced as a large (expensive) model."""
        rates = self.prices.rates(model)
        return rates is not None and rates.input * 1e6 >= LARGE_MODEL_INPUT_USD_PER_MTOK

    def price_tier(self, s: MinuteSignals) -> tuple[float, float]:
        """Sum over priced LLM calls of ln(input $/Mtok), and those calls.

        The mean is the model mix's price tier: a switch from gpt-4o-mini to
        gpt-4o moves it by ln(16.7) whatever the prompt sizes do, and the log
        keeps one stray premium call from dominating a quiet minute.
        """
        total = 0.0
        calls = 0
        for name, m in s.models.items():
            rates = self.prices.rates(name)
            if rates is None or rates.input <= 0:
                continue
            total += m.calls * math.log(rates.input * 1e6)
            calls += m.calls
        return total, float(calls)

    def small_calls_on_large_models(self, s: MinuteSignals) -> tuple[float, float]:
        """Routine small requests served by a large model, and all routine small requests."""
        large = total = 0
        for name, m in s.models.items():
            total += m.small_calls
            if m.small_calls and self.is_large(name):
                large += m.small_calls
        return float(large), float(total)

    def routing_saving(self, s: MinuteSignals) -> tuple[str | None, float]:
        """The smaller model to route routine requests to, and the saving in $/h.

        The smaller model is the cheapest model the use case already uses that is
        not large (else gpt-4o-mini); each routine request on a large model is
        priced at half the "small" bounds on both models.

        >>> from spendsentry.windows import ModelMinute
        >>> sig = MinuteSignals("u", 0, llm_calls=100, models={
        ...     "gpt-4o": ModelMinute(60, 0.3, 12000, 4000, 60),
        ...     "gpt-4o-mini": ModelMinute(40, 0.01, 8000, 3000, 40)})
        >>> model, per_hour = ModelSizes(PriceBook()).routing_saving(sig)
        >>> model, round(per_hour, 2)
        ('gpt-4o-mini', 4.65)
        """
        candidates = []
        for name in s.models:
            rates = self.prices.rates(name)
            if rates is not None and not self.is_large(name):
                candidates.append((rates.input + rates.output, name))
        smaller = min(candidates)[1] if candidates else "gpt-4o-mini"
        small = self.prices.rates(smaller)
        if small is None:
            return None, 0.0
        saving = 0.0
        for name, m in s.models.items():
            big = self.prices.rates(name)
            if big is None or not m.small_calls or not self.is_large(name):
                continue
            per_call = (big.input - small.input) * _SMALL_INPUT + (
                big.output - small.output
            ) * _SMALL_OUTPUT
            saving += max(0.0, per_call) * m.small_calls
        return smaller, saving * 60.0
