"""unowned_spend through the engine: shadow AI with an empty policy directory (issue 20)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from spendsentry.engine import Engine
from spendsentry.events import UsageEvent
from spendsentry.policy import PolicySet
from spendsentry.pricing import PriceBook
from spendsentry.timeutil import parse_ts

T0 = 1_793_577_600.0  # 2026-11-02T00:00:00Z, a Monday
HOUR = 3600.0


def _calls(
    use_case: str,
    start: float,
    end: float,
    every_s: float,
    model: str,
    prompt: int,
    seed: int,
    **fields: str,
) -> list[UsageEvent]:
    """Calls every ``every_s`` seconds on average (exponential gaps), priced by the engine."""
    rng = random.Random(seed)
    out, t, n = [], start, 0
    while True:
        t += rng.expovariate(1.0 / every_s)
        if t >= end:
            return out
        n += 1
        tokens = max(1, round(prompt * rng.lognormvariate(0.0, 0.3)))
        out.append(
            UsageEvent(
                f"{use_case}-{n}",
                t,
                use_case,
                model=model,
                provider="openai",
                input_tokens=tokens,
                output_tokens=rng.randint(200, 600),
                **fields,  # type: ignore[arg-type]
            )
        )


def _spent(events: list[UsageEvent]) -> float:
    """What the events cost at the catalogue's prices."""
    price = PriceBook().cost
    return sum(
        price(e.model, e.provider, e.input_tokens, e.output_tokens, 0) or 0.0 for e in events
    )


def _run(policies: PolicySet, events: list[UsageEvent]) -> list[dict]:
    events = sorted(events, key=lambda e: e.ts)
    engine = Engine(policies)
    alerts = []
    for start in range(0, len(events), 2_000):
        out = engine.process(events[start : start + 2_000])
        out.extend(engine.advance())
        alerts += out.alerts
    alerts += engine.flush().alerts
    return [a.to_dict() for a in alerts]


def _fleet() -> list[UsageEvent]:
    """Four hours of an established chat use case; from 2:00 the shadow pilot (gpt-4o
    twice a second, 10k-token prompts) and a benign new feature (cents an hour)."""
    established = _calls("support_chat", T0, T0 + 4 * HOUR, 6.0, "gpt-4o-mini", 1500, 1)
    pilot = _calls(
        "shadow-ai-pilot",
        T0 + 2 * HOUR,
        T0 + 4 * HOUR,
        0.5,
        "gpt-4o",
        10_000,
        2,
        team="growth",
        agent_id="pilot-bot",
    )
    benign = _calls("release-notes", T0 + 2 * HOUR, T0 + 4 * HOUR, 120.0, "gpt-4o-mini", 800, 3)
    return established + pilot + benign


@pytest.fixture(scope="module")
def fleet() -> list[UsageEvent]:
    return _fleet()


def _firing(alerts: list[dict], kind: str) -> list[dict]:
    return [a for a in alerts if a["kind"] == kind and a["status"] == "firing"]


def test_shadow_pilot_is_caught_within_ten_minutes_with_an_empty_policy_directory(
    fleet: list[UsageEvent], tmp_path: Path
) -> None:
    alerts = _run(PolicySet.load(tmp_path), fleet)
    pilot = [a for a in _firing(alerts, "unowned_spend") if a["use_case"] == "shadow-ai-pilot"]
    assert len(pilot) == 1, pilot
    first_event = min(e.ts for e in fleet if e.use_case == "shadow-ai-pilot")
    assert parse_ts(pilot[0]["detected_at"]) - first_event <= 600
    # Whom to ask and what it runs on, from the events' fields.
    assert "team=growth agent=pilot-bot" in pilot[0]["summary"]
    assert pilot[0]["evidence"]["details"]["models"] == ["gpt-4o"]
    assert pilot[0]["evidence"]["example_model"] == "gpt-4o"
    # Alert only: the default ladder throttles nothing at warning.
    assert pilot[0]["severity"] == "warning" and pilot[0]["action"]["type"] == "none"


def test_a_benign_new_use_case_spending_cents_gets_none(
    fleet: list[UsageEvent], tmp_path: Path
) -> None:
    alerts = _run(PolicySet.load(tmp_path), fleet)
    spent = _spent([e for e in fleet if e.use_case == "release-notes"])
    assert 0 < spent < 0.5  # cents an hour over two hours
    assert not [a for a in alerts if a["use_case"] == "release-notes"]


def test_a_policy_that_names_the_use_case_owns_it(fleet: list[UsageEvent]) -> None:
    policies = PolicySet.from_toml_text(
        '[use_cases.shadow-ai-pilot]\nowner = "#growth-ai"\n', auto_throttle="off"
    )
    alerts = _run(policies, fleet)
    assert not [a for a in _firing(alerts, "unowned_spend") if a["use_case"] == "shadow-ai-pilot"]


def test_floors_come_from_defaults(fleet: list[UsageEvent]) -> None:
    policies = PolicySet.from_toml_text(
        "[defaults.unowned_spend]\nmin_cost_per_hour_usd = 1000.0\n", auto_throttle="off"
    )
    assert not _firing(_run(policies, fleet), "unowned_spend")


def test_once_per_use_case_even_when_it_stops_and_starts_again(tmp_path: Path) -> None:
    base = _calls("support_chat", T0, T0 + 6 * HOUR, 6.0, "gpt-4o-mini", 1500, 1)
    first = _calls("shadow-ai-pilot", T0 + HOUR, T0 + 2 * HOUR, 0.5, "gpt-4o", 10_000, 2)
    again = _calls("shadow-ai-pilot", T0 + 4 * HOUR, T0 + 5 * HOUR, 0.5, "gpt-4o", 10_000, 4)
    for i, e in enumerate(again):
        e.event_id = f"again-{i}"
    alerts = _run(PolicySet.load(tmp_path), base + first + again)
    assert len(_firing(alerts, "unowned_spend")) == 1
    resolved = [a for a in alerts if a["kind"] == "unowned_spend" and a["status"] == "resolved"]
    assert len(resolved) == 1 and parse_ts(resolved[0]["detected_at"]) < T0 + 4 * HOUR


def test_the_fleet_share_floor_spares_a_small_newcomer_in_a_big_fleet(tmp_path: Path) -> None:
    # $30 an hour is over the dollar floor but 1 % of a fleet spending ~$3,000 an hour.
    big = _calls("bulk_rag", T0, T0 + 3 * HOUR, 0.1, "gpt-4o", 8_000, 5)
    small = _calls("side-project", T0 + HOUR, T0 + 3 * HOUR, 6.0, "gpt-4o", 8_000, 6)
    policies = PolicySet.from_toml_text(
        '[defaults.unowned_spend]\nmin_fleet_share = 0.02\n[use_cases.bulk_rag]\nowner = "#rag"\n',
        auto_throttle="off",
    )
    assert 5.0 < _spent(small) / 2 < 0.02 * _spent(big) / 3
    assert not _firing(_run(policies, big + small), "unowned_spend")


def test_the_example_policy_owns_the_pilot(fleet: list[UsageEvent]) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "policies"
    policies = PolicySet.load(example)
    assert policies.for_use_case("shadow-ai-pilot").explicit
    assert not _firing(_run(policies, fleet), "unowned_spend")
