"""Kinds price models with the engine's price book, overrides included.

Before issue 13 ``price_tier`` and ``model_oversizing`` read a module-level
catalogue of their own, so a model priced only in ``streams/prices.toml`` (a
self-hosted or negotiated one) was unknown to them: a switch of routine
requests to such a large model went unseen.
"""

from __future__ import annotations

import random
from pathlib import Path

from spendsentry.engine import Engine
from spendsentry.events import UsageEvent
from spendsentry.pricing import PriceBook

PRICES = """
[models."acme-large-70b"]
input_per_mtok = 5.0
output_per_mtok = 15.0
"""
T0 = 1_780_000_000.0  # a whole minute


def _traffic(model_after: str, minutes: int = 600, switch_at: int = 420) -> list[UsageEvent]:
    """30 routine small requests a minute on gpt-4o-mini; from ``switch_at`` they go
    to ``model_after``."""
    rng = random.Random(5)
    events = []
    for m in range(minutes):
        model = model_after if m >= switch_at else "gpt-4o-mini"
        for i in range(30):
            events.append(
                UsageEvent(
                    event_id=f"{m}-{i}",
                    ts=T0 + 60.0 * m + 2.0 * i,
                    use_case="faq",
                    model=model,
                    input_tokens=rng.randint(100, 400),
                    output_tokens=rng.randint(20, 120),
                )
            )
    return events


def _kinds_firing(engine: Engine, events: list[UsageEvent]) -> set[str]:
    found = set()
    for start in range(0, len(events), 3_000):
        out = engine.process(events[start : start + 3_000])
        out.extend(engine.advance())
        found |= {a.kind for a in out.alerts if a.status == "firing"}
    found |= {a.kind for a in engine.flush().alerts if a.status == "firing"}
    return found


def test_a_large_model_priced_only_in_the_override_file_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(PRICES)
    engine = Engine(prices=PriceBook.from_file(path))
    fired = _kinds_firing(engine, _traffic("acme-large-70b"))
    assert "model_oversizing" in fired
    assert "fallback_drift" in fired  # the silent lens: the mix's price tier rose 30x


def test_the_same_switch_to_a_model_nobody_prices_is_not_called_oversized() -> None:
    fired = _kinds_firing(Engine(), _traffic("acme-large-70b"))
    assert "model_oversizing" not in fired
