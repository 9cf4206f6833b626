"""Price usage events that arrive without ``cost_usd``.

Rates come from the genai-prices catalogue, looked up once per (provider,
model) and cached as plain per-token floats: a catalogue call costs ~76 us,
far too slow per event, while a dict hit costs ~50 ns. A user override table
(``streams/prices.toml``) wins over the catalogue, for negotiated rates and
self-hosted models.

Tiered prices (e.g. a higher rate above 200k context tokens) are simplified to
the base tier; spendsentry watches trends, not invoices.

>>> book = PriceBook(overrides={"my-model": ModelRates(1e-6, 0.5e-6, 2e-6)})
>>> round(book.cost("my-model", None, 1000, 100, 0), 6)
0.0012
>>> book.cost("no-such-model-anywhere", None, 10, 10, 0) is None
True
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from spendsentry.errors import ConfigError

_PER_MTOK = 1_000_000


@dataclass(frozen=True, slots=True)
class ModelRates:
    """Dollars per token for one model."""

    input: float
    cached_input: float
    output: float


class PriceBook:
    """Per-model token rates with a lookup cache and user overrides."""

    def __init__(self, overrides: dict[str, ModelRates] | None = None) -> None:
        self._overrides = dict(overrides or {})
        self._cache: dict[tuple[str | None, str], ModelRates | None] = {}

    @classmethod
    def from_file(cls, path: str | Path | None) -> PriceBook:
        """Load overrides from a TOML file with ``[models."name"]`` tables.

        Each table has ``input_per_mtok``, ``output_per_mtok`` and optionally
        ``cached_input_per_mtok`` (dollars per million tokens).
        """
        if path is None or not Path(path).exists():
            return cls()
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        overrides: dict[str, ModelRates] = {}
        for name, table in (data.get("models") or {}).items():
            try:
                inp = float(table["input_per_mtok"]) / _PER_MTOK
                out = float(table["output_per_mtok"]) / _PER_MTOK
                cached = float(table.get("cached_input_per_mtok", table["input_per_mtok"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"{path}: models.{name}: missing or invalid {exc}") from None
            if min(inp, out, cached) < 0:
                raise ConfigError(f"{path}: models.{name}: prices must not be negative")
            overrides[name] = ModelRates(inp, cached / _PER_MTOK, out)
        return cls(overrides)

    def rates(self, model: str, provider: str | None = None) -> ModelRates | None:
        """The model's rates, or None when neither overrides nor catalogue know it."""
        key = (provider, model)
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = self._overrides.get(model)
        if found is None:
            found = _catalogue_rates(model, provider)
        self._cache[key] = found
        return found

    def cost(
        self,
        model: str | None,
        provider: str | None,
        input_tokens: int,
        output_tokens: int,
        cached_input_tokens: int,
    ) -> float | None:
        """Dollar cost of one call, or None when the model has no known price."""
        if not model:
            return None
        rates = self.rates(model, provider)
        if rates is None:
            return None
        cached = min(cached_input_tokens, input_tokens)
        return (
            (input_tokens - cached) * rates.input
            + cached * rates.cached_input
            + output_tokens * rates.output
        )


def _catalogue_rates(model: str, provider: str | None) -> ModelRates | None:
    try:
        from genai_prices import Usage, calc_price
    except ImportError:  # pragma: no cover - it is a declared dependency
        return None

    def price(usage: Usage, provider_id: str | None) -> float:
        return float(calc_price(usage, model, provider_id=provider_id).total_price)

    # Try the stated provider first, then let the catalogue match by model name
    # (gateways often report provider names the catalogue spells differently).
    for provider_id in dict.fromkeys([provider, None]):
        try:
            inp = price(Usage(input_tokens=_PER_MTOK), provider_id)
            out = price(Usage(output_tokens=_PER_MTOK), provider_id)
            cached = price(Usage(input_tokens=_PER_MTOK, cache_read_tokens=_PER_MTOK), provider_id)
        except (LookupError, ValueError, TypeError, AttributeError):
            continue
        return ModelRates(inp / _PER_MTOK, cached / _PER_MTOK, out / _PER_MTOK)
    return None
