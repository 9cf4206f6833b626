"""What drives the spend: bounded per dimension, heavy values kept, learning paused in incidents."""

from __future__ import annotations

import random

from _snapshots import plain

from spendsentry.drivers import SpendDrivers, headline
from spendsentry.snapshot.windows import dump_drivers, load_drivers


def _key(model: str, agent: str | None = None, session: str | None = None) -> tuple:
    return (model, agent, None, session, None, None)


def _minute(rng: random.Random, minute: int, runaway: bool) -> dict[tuple, int]:
    spend = {
        _key("gpt-4o-mini", "helper", f"s{minute}-{i}"): rng.randrange(1, 5) * 1_000_000
        for i in range(200)  # 200 new sessions a minute: far past the capacity
    }
    if runaway:
        spend[_key("gpt-4o", "planner", "run-7")] = 400_000_000
    return spend


def test_memory_is_bounded_and_the_heavy_value_survives_churn_and_is_named() -> None:
    rng = random.Random(4)
    drivers = SpendDrivers(capacity=16)
    for minute in range(180):
        drivers.close_minute(_minute(rng, minute, False), {}, True)
    assert drivers.drivers() == [] or drivers.drivers()[0]["share"] < 1.0
    for minute in range(180, 190):
        drivers.close_minute(_minute(rng, minute, True), {}, False)
    assert all(len(h.rates) <= 16 for h in drivers.dimensions.values())
    top = drivers.drivers()
    named = {(d["dimension"], d["value"]) for d in top}
    assert ("session", "run-7") in named and ("agent+model", "planner on gpt-4o") in named
    session = next(d for d in top if d["dimension"] == "session")
    assert session["share"] > 0.8
    assert headline(top) is not None and "planner on gpt-4o" in str(headline(top))


def test_learning_pauses_so_an_incident_does_not_become_the_baseline() -> None:
    rng = random.Random(5)
    paused, learning = SpendDrivers(), SpendDrivers()
    for minute in range(120):
        for d in (paused, learning):
            d.close_minute(_minute(rng, minute, False), {}, True)
    for minute in range(120, 240):
        spend = _minute(rng, minute, True)
        paused.close_minute(spend, {}, False)
        learning.close_minute(spend, {}, True)
    assert paused.drivers() and paused.drivers()[0]["share"] > 0.8
    # Two hours of learning made the runaway the level: it drives little excess now.
    still = [d for d in learning.drivers() if d["value"] == "run-7"]
    assert not still or still[0]["excess_cost_per_hour_usd"] < (
        paused.drivers()[0]["excess_cost_per_hour_usd"] / 2
    )


def test_tags_from_extra_fields_are_dimensions_and_snapshots_keep_everything() -> None:
    drivers = SpendDrivers(capacity=4)
    for minute in range(90):
        big = minute >= 80
        drivers.close_minute(
            # The tagged spend is part of the same events' spend.
            {_key("gpt-4o", "a"): 55_000_000 if big else 10_000_000},
            {("customer", "acme"): 50_000_000 if big else 5_000_000, ("customer", "b"): 5_000_000},
            minute < 80,
        )
    assert ("customer", "acme") in {(d["dimension"], d["value"]) for d in drivers.drivers()}
    fresh = SpendDrivers(capacity=4)
    load_drivers(fresh, plain(dump_drivers(drivers)))
    assert fresh.drivers() == drivers.drivers()
    assert fresh.total == drivers.total and fresh.minutes == drivers.minutes


def test_a_minute_bucket_splits_cost_by_key_and_by_the_tags_events_carry() -> None:
    from spendsentry.events import UsageEvent
    from spendsentry.windows import MinuteBucket

    bucket = MinuteBucket(0)
    bucket.add_usages(
        [
            UsageEvent("e1", 0.0, "u", model="m", agent_id="a", cost_usd=0.5,
                       extra={"customer": "acme", "tags": {"feature": "search", "n": 3}}),
            UsageEvent("e2", 1.0, "u", model="m", agent_id="a", cost_usd=0.25),
            UsageEvent("e3", 2.0, "u", kind="tool_call", tool_name="t"),  # no cost: not spend
        ]
    )  # fmt: skip
    assert bucket.spend == {("m", "a", None, None, None, None): 750_000_000}
    assert bucket.tag_spend == {
        ("customer", "acme"): 500_000_000,
        ("tag:feature", "search"): 500_000_000,
    }
