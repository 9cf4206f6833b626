"""No blind first hour (issue 20, item 2): a new use case is compared with the fleet."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import pytest
from test_unowned_spend import _calls, _run  # the same calls; one engine, flushed

from spendsentry.detectors.base import PeriodTotals, UseCaseContext
from spendsentry.detectors.registry import kind_class
from spendsentry.engine import Engine
from spendsentry.events import UsageEvent
from spendsentry.policy import FleetPrior, Policy, PolicySet
from spendsentry.pricing import PriceBook
from spendsentry.snapshot.detectors import dump_monitor, load_monitor
from spendsentry.snapshot.fields import Fields
from spendsentry.timeutil import parse_ts
from spendsentry.windows import CostWindow, MinuteSignals, ModelMinute
from spendsentry.worker import PartitionSet

T0 = 1_793_577_600.0  # 2026-11-02T00:00:00Z, a Monday
HOUR = 3600.0
PILOT = "shadow-ai-pilot"
OFF = "[defaults.fleet_prior]\nwarmup_minutes = 0\n"


def _fleet() -> list[UsageEvent]:
    """Six hours of an established chat use case that doubles its prompts at 5:00;
    from 2:00 the shadow pilot (gpt-4o twice a second, 10k-token prompts), a benign
    new feature (cents an hour) and a new one with large prompts but few calls."""
    established = _calls("support_chat", T0, T0 + 5 * HOUR, 2.0, "gpt-4o-mini", 1500, 1)
    established += _calls("support_chat", T0 + 5 * HOUR, T0 + 6 * HOUR, 2.0, "gpt-4o-mini", 3000, 5)
    for i, e in enumerate(established):
        e.event_id = f"support-{i}"
    pilot = _calls(PILOT, T0 + 2 * HOUR, T0 + 4 * HOUR, 0.5, "gpt-4o", 10_000, 2)
    benign = _calls("release-notes", T0 + 2 * HOUR, T0 + 4 * HOUR, 120.0, "gpt-4o-mini", 800, 3)
    sparse = _calls("contract-review", T0 + 2 * HOUR, T0 + 4 * HOUR, 60.0, "gpt-4o", 12_000, 4)
    return established + pilot + benign + sparse


@pytest.fixture(scope="module")
def fleet() -> list[UsageEvent]:
    return _fleet()


def _fleet_alerts(alerts: list[dict], use_case: str) -> list[dict]:
    return [
        a
        for a in alerts
        if a["use_case"] == use_case
        and a["status"] == "firing"
        and (a["evidence"].get("details") or {}).get("compared_with") == "fleet"
    ]


@pytest.mark.parametrize("policy", ["", f'[use_cases.{PILOT}]\nowner = "#growth-ai"\n'])
def test_the_shadow_pilot_is_compared_with_the_fleet_within_ten_minutes(
    fleet: list[UsageEvent], policy: str
) -> None:
    # With no policy (unowned) and with one that names it (owned but new): either
    # way its own baseline would learn it, so the fleet judges its first minutes.
    alerts = _run(PolicySet.from_toml_text(policy, auto_throttle="off"), fleet)
    found = _fleet_alerts(alerts, PILOT)
    assert {a["kind"] for a in found} == {"prompt_inflation", "cost_spike"}, found
    first_event = min(e.ts for e in fleet if e.use_case == PILOT)
    for alert in found:
        assert parse_ts(alert["detected_at"]) - first_event <= 600
        assert "Compared with the fleet, not with its own history" in alert["summary"]
        assert alert["evidence"]["example_model"] == "gpt-4o"
    prompt = next(a for a in found if a["kind"] == "prompt_inflation")
    details = prompt["evidence"]["details"]
    assert details["fleet_prompt_tokens_p95"] == 4000.0
    assert 2.0 <= details["ratio"] <= 3.5
    # Each gpt-4o call against a typical gpt-4o call of the fleet.
    assert details["cost_per_call_ratio"] > 3.0
    assert "a typical gpt-4o call in the fleet" in prompt["summary"]
    spend = next(a for a in found if a["kind"] == "cost_spike")
    assert spend["evidence"]["details"]["fleet_largest_use_case_per_hour_usd"] == 25.0
    assert spend["evidence"]["observed"] * 60 > 150.0  # $/h: twice a second at ~$0.03 a call


def test_benign_and_sparse_newcomers_get_none(fleet: list[UsageEvent]) -> None:
    alerts = _run(PolicySet.from_toml_text("", auto_throttle="off"), fleet)
    assert not [a for a in alerts if a["use_case"] == "release-notes"]
    # Large prompts, but a call a minute: a few dollars an hour is no one's emergency.
    assert not _fleet_alerts(alerts, "contract-review")


def test_an_established_use_case_is_judged_as_before(fleet: list[UsageEvent]) -> None:
    on = _run(PolicySet.from_toml_text("", auto_throttle="off"), fleet)
    off = _run(PolicySet.from_toml_text(OFF, auto_throttle="off"), fleet)
    assert not _fleet_alerts(off, PILOT)
    established = [a for a in on if a["use_case"] == "support_chat"]
    # Its own baseline caught the doubling at 5:00, the same with or without the fleet.
    assert any(a["kind"] == "prompt_inflation" for a in established)
    assert established == [a for a in off if a["use_case"] == "support_chat"]
    assert not _fleet_alerts(on, "support_chat")


def test_the_fleet_is_configured_once_in_defaults() -> None:
    text = (
        "[defaults.fleet_prior]\nprompt_tokens_p95 = 8000\nwarmup_minutes = 60\n"
        '[use_cases.chat]\nowner = "#chat"\n'
    )
    policies = PolicySet.from_toml_text(text, auto_throttle="off")
    for policy in (policies.for_use_case("chat"), policies.for_use_case("other")):
        assert policy.fleet_prior == FleetPrior(prompt_tokens_p95=8000.0, warmup_minutes=60)
    assert PolicySet.from_toml_text("", auto_throttle="off").defaults.fleet_prior == FleetPrior()


def _minute(m: int) -> MinuteSignals:
    return MinuteSignals(
        PILOT,
        m,
        llm_calls=120,
        llm_input_tokens=1_200_000,
        cost=3.6,
        models={"gpt-4o": ModelMinute(120, 3.6, 1_200_000, 48_000, 0)},
    )


@pytest.mark.parametrize("kind", ["prompt_inflation", "cost_spike"])
def test_the_lens_is_in_the_snapshot_and_an_older_snapshot_counts_as_established(
    kind: str,
) -> None:
    def build():  # type: ignore[no-untyped-def]
        return kind_class(kind).build(Policy(PILOT), PriceBook())

    running = build()
    ctx = UseCaseContext(
        PILOT, Policy(PILOT), CostWindow(1), CostWindow(5), CostWindow(60), PeriodTotals()
    )
    ctx.new_use_case = True  # met after the engine had watched a while
    found = []
    for m in range(4):
        s = _minute(1_000 + m)
        for w in (ctx.last_1m, ctx.last_5m, ctx.last_1h):
            w.push(s)
        found.append(running.observe(s, ctx))
    assert found[-1] is not None and found[-1].details["compared_with"] == "fleet"
    state = dump_monitor(running)
    restored = build()
    load_monitor(restored, Fields(state, "$"))
    assert restored.prior.minutes == 4 and restored.prior.persistence.active
    assert list(restored.prior.recent) == list(running.prior.recent)
    # A snapshot from before the lens: that use case was running, so it is established.
    lens = next(iter(state["lenses"].values()))
    del lens["prior"]
    older = build()
    load_monitor(older, Fields(state, "$"))
    assert older.prior.minutes > FleetPrior().warmup_minutes
    older.observe(_minute(1_004), ctx)
    assert not older.prior.persistence.active and not older.prior.recent


def test_warmup_zero_turns_the_lenses_off() -> None:
    policy = PolicySet.from_toml_text(OFF, auto_throttle="off").defaults
    for kind in ("prompt_inflation", "cost_spike"):
        assert kind_class(kind).build(policy, PriceBook()).prior is None  # type: ignore[attr-defined]


def test_a_use_case_there_when_the_engine_began_watching_is_established(
    fleet: list[UsageEvent],
) -> None:
    # The stream, not the use case, began: a fresh start (no snapshot) must not
    # page an established large use case against the fleet.
    policies = PolicySet.from_toml_text("", auto_throttle="off")
    alone = _run(policies, [e for e in fleet if e.use_case == PILOT])
    assert not _fleet_alerts(alone, PILOT)


def test_a_worker_with_the_pilot_alone_on_a_partition_judges_it_as_replay_does(
    fleet: list[UsageEvent],
) -> None:
    # Replay sees every use case in one engine; a worker has one engine per
    # partition, and the pilot's may hold nothing else: its engine starts two
    # hours in. The worker's engines share the earliest start, so it is new there too.
    policies = PolicySet.from_toml_text("", auto_throttle="off")
    replayed = [a for a in _run(policies, fleet) if a["use_case"] == PILOT]
    assert _fleet_alerts(replayed, PILOT)
    workers = PartitionSet(lambda: Engine(policies), inputs=("u",), idle_after_s=1e9)
    now = T0 + 7 * HOUR  # the records are not from the future
    for p in (0, 1):
        workers.fresh(p).watermarks.assign([("u", p)], now=now)
    events = sorted(fleet, key=lambda e: e.ts)
    offsets = [0, 0]
    got: list[dict] = []
    for start in range(0, len(events), 2_000):
        batch: dict[tuple[str, int], list[_Record]] = {("u", 0): [], ("u", 1): []}
        for e in events[start : start + 2_000]:
            p = 1 if e.use_case == PILOT else 0
            batch[("u", p)].append(_Record("u", p, offsets[p], orjson.dumps(e.to_dict())))
            offsets[p] += 1
        got += [a.to_dict() for a in workers.handle(batch, now=now).alerts]
    got += [a.to_dict() for pl in workers.values() for a in pl.engine.flush().alerts]
    fleet_kinds = ("prompt_inflation", "cost_spike")

    def pilot_firing(alerts: list[dict]) -> list[tuple[str, str, str]]:
        return [
            (a["kind"], a["status"], a["detected_at"])
            for a in alerts
            if a["use_case"] == PILOT and a["kind"] in fleet_kinds and a["status"] == "firing"
        ]

    assert pilot_firing(got) == pilot_firing(replayed) != []


@dataclass
class _Record:
    topic: str
    partition: int
    offset: int
    value: bytes | None
