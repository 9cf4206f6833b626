"""The labelled traffic simulator: determinism, event shape, and incident effects."""

from __future__ import annotations

import json
import random
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from spendsentry import cli
from spendsentry.simulate import KINDS, Incident, Scenario, TraceProfile, plan_incidents
from spendsentry.simulate.incidents import (
    BIG_MODELS,
    ELIGIBLE,
    NEWCOMER_KINDS,
    NORMAL,
    default_params,
    incident_effects,
)
from spendsentry.simulate.newcomers import TRIAL_MODELS
from spendsentry.simulate.profile import QuantileSampler
from spendsentry.simulate.traffic import USE_CASES

START = datetime(2026, 11, 2, 8, tzinfo=UTC)  # a Monday morning: every use case is busy
USAGE_FIELDS = {
    "type", "event_id", "ts", "use_case", "kind", "provider", "model", "requested_model",
    "fallback", "input_tokens", "output_tokens", "cached_input_tokens", "session_id",
    "request_id", "agent_id", "tool_name", "content_hash", "environment", "team",
    "latency_ms", "status",
}  # fmt: skip
OUTCOME_FIELDS = {"type", "event_id", "ts", "use_case", "outcome", "session_id", "success"}


def at(minutes: int) -> datetime:
    return START + timedelta(minutes=minutes)


def incident(kind: str, use_case: str, params: dict[str, Any], **kw: Any) -> Incident:
    return Incident(
        incident_id=f"t-{kind}-{use_case}",
        kind=kind,
        use_case=use_case,
        shape=kw.pop("shape", "step"),
        start=at(120),
        end=at(180),
        params=params,
        **kw,
    )


def window(events: list[dict[str, Any]], use_case: str, lo: int, hi: int) -> list[dict[str, Any]]:
    """Events of one use case with START + lo min <= ts < START + hi min."""
    a, b = _ts(at(lo)), _ts(at(hi))
    return [e for e in events if e["use_case"] == use_case and a <= e["ts"] < b]


def _ts(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def llm(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e.get("kind") == "llm_call"]


# One run with an incident of most kinds (different use cases), one without.
INCIDENTS_A = [
    incident("prompt_inflation", "support_chat", {"factor": 2.5}),
    incident("agent_chatter", "research_agent",
             {"variant": "loop", "share": 0.5, "call_factor": 10.0}),
    incident("agent_chatter", "ops_agent", {"variant": "runaway", "interval_s": 5.0}),
    incident("retrieval_amplification", "kb_search_rag", {"factor": 4.0}),
    incident("fallback_drift", "underwriting_rag",
             {"variant": "flagged", "share": 0.5, "model": "gpt-4.1"}),
    incident("cost_spike", "code_assistant", {"factor": 6.0}),
    incident("embedding_duplication", "doc_embeddings",
             {"hashes": ["a" * 32, "b" * 32, "c" * 32], "extra_rate": 2.0}),
    incident("model_oversizing", "claims_triage",
             {"share": 1.0, "model": "claude-sonnet-4-0"}),
]  # fmt: skip
INCIDENTS_B = [
    incident("cost_per_outcome", "claims_triage",
             {"variant": "outcome_drop", "outcome_factor": 0.3}),
    incident("budget_burn", "support_chat", {"factor": 3.0}),
    incident("fallback_drift", "kb_search_rag",
             {"variant": "silent", "share": 1.0, "model": "gpt-4o"}),
]  # fmt: skip


@pytest.fixture(scope="module")
def run_a() -> list[dict[str, Any]]:
    return list(Scenario(seed=5, start=START, hours=4, incidents=INCIDENTS_A).iter_events())


@pytest.fixture(scope="module")
def run_b() -> list[dict[str, Any]]:
    return list(Scenario(seed=6, start=START, hours=4, incidents=INCIDENTS_B).iter_events())


@pytest.fixture(scope="module")
def quiet() -> list[dict[str, Any]]:
    return list(Scenario(seed=5, start=START, hours=4, no_incidents=True).iter_events())


# -- determinism and shape ---------------------------------------------------------


def test_same_seed_same_bytes_and_different_seeds_differ(tmp_path: Path) -> None:
    paths = [Scenario(seed=s, hours=2.75).write(tmp_path / str(i)) for i, s in enumerate((7, 7, 8))]
    events = [p[0].read_bytes() for p in paths]
    labels = [p[1].read_bytes() for p in paths]
    assert events[0] == events[1] and labels[0] == labels[1]
    assert events[0] != events[2]


def test_events_are_time_ordered_unique_and_well_formed(quiet: list[dict[str, Any]]) -> None:
    assert len(quiet) > 40_000
    stamps = [e["ts"] for e in quiet]
    assert stamps == sorted(stamps)
    assert stamps[0] >= _ts(START) and stamps[-1] < _ts(at(240))
    assert len({e["event_id"] for e in quiet}) == len(quiet)
    llm_requests = {e["request_id"] for e in quiet if e.get("kind") == "llm_call"}
    last_minutes = _ts(at(235))  # a request's llm call may finish after the run ends
    for e in quiet:
        datetime.fromisoformat(e["ts"])
        if e["type"] == "outcome":
            assert set(e) == OUTCOME_FIELDS and e["success"] is True
            continue
        assert set(e) == USAGE_FIELDS and "cost_usd" not in e
        assert e["kind"] in ("llm_call", "tool_call", "retrieval", "embedding")
        assert e["environment"] in ("production", "experiment") and e["status"] == "ok"
        assert 0 <= e["cached_input_tokens"] <= e["input_tokens"]
        if e["kind"] in ("tool_call", "retrieval"):
            assert e["input_tokens"] == e["output_tokens"] == 0
            assert e["request_id"] in llm_requests or e["ts"] >= last_minutes
        if e["kind"] == "llm_call":
            assert e["input_tokens"] > 0 and e["output_tokens"] > 0
            assert isinstance(e["model"], str) and e["requested_model"]
    assert {e["use_case"] for e in quiet} == set(USE_CASES)


def test_models_price_in_the_catalogue(quiet: list[dict[str, Any]]) -> None:
    from spendsentry.pricing import PriceBook

    book = PriceBook()
    models = {
        (e["model"], e["provider"]) for e in quiet if e.get("kind") in ("llm_call", "embedding")
    }
    models |= {(m, "openai" if m.startswith("gpt") else "anthropic") for m in BIG_MODELS.values()}
    for model, provider in models:
        assert book.rates(model, provider) is not None, model


def test_incident_on_one_use_case_leaves_the_others_alone(quiet: list[dict[str, Any]]) -> None:
    one = [incident("cost_spike", "support_chat", {"factor": 6.0})]
    other = list(Scenario(seed=5, start=START, hours=4, incidents=one).iter_events())

    def strip(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in e.items() if k != "event_id"} for e in events
                if e["use_case"] == "claims_triage"]  # fmt: skip

    assert strip(other) == strip(quiet)


def test_translation_is_sparse(quiet: list[dict[str, Any]]) -> None:
    per_hour = Counter(e["ts"][:13] for e in quiet if e["use_case"] == "translation")
    assert max(per_hour.values()) < 20


def test_sales_emails_only_in_office_hours() -> None:
    events = Scenario(seed=2, start="2026-11-02T06:00:00Z", hours=3, no_incidents=True)
    hours = {
        int(e["ts"][11:13]) for e in events.iter_events() if e["use_case"] == "sales_email_drafts"
    }
    assert hours == {8}


# -- incident effects ------------------------------------------------------------------


def test_prompt_inflation_step_inflates_input_tokens(run_a: list[dict[str, Any]]) -> None:
    before = llm(window(run_a, "support_chat", 60, 120))
    during = llm(window(run_a, "support_chat", 125, 180))
    ratio = statistics.mean(e["input_tokens"] for e in during) / statistics.mean(
        e["input_tokens"] for e in before
    )
    assert ratio >= 1.8
    after = llm(window(run_a, "support_chat", 200, 240))
    assert statistics.mean(e["input_tokens"] for e in after) < 1.4 * statistics.mean(
        e["input_tokens"] for e in before
    )


def test_prompt_inflation_ramp_grows_gradually() -> None:
    ramp = incident("prompt_inflation", "kb_search_rag", {"factor": 2.5}, shape="ramp",
                    ramp_end=at(150))  # fmt: skip
    events = list(Scenario(seed=9, start=START, hours=3.5, incidents=[ramp]).iter_events())

    def mean_in(lo: int, hi: int) -> float:
        return statistics.mean(
            e["input_tokens"] for e in llm(window(events, "kb_search_rag", lo, hi))
        )

    base, early, full = mean_in(60, 120), mean_in(120, 130), mean_in(155, 180)
    assert base < early < full and full >= 2.0 * base


def _sessions(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    sessions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e["type"] == "usage" and e["session_id"]:
            sessions[e["session_id"]].append(e)
    return sessions


def test_agent_chatter_sessions_are_longer(run_a: list[dict[str, Any]]) -> None:
    sessions = _sessions([e for e in run_a if e["use_case"] == "research_agent"])
    started = {sid: calls[0]["ts"] for sid, calls in sessions.items()}
    normal = [len(c) for s, c in sessions.items() if started[s] < _ts(at(110))]
    looping = [len(c) for s, c in sessions.items() if _ts(at(120)) <= started[s] < _ts(at(170))]
    assert max(normal) <= 20
    assert statistics.mean(looping) >= 2.5 * statistics.mean(normal)
    assert max(looping) >= 5 * statistics.median(normal)


def test_runaway_agent_session(run_a: list[dict[str, Any]]) -> None:
    sessions = _sessions([e for e in run_a if e["use_case"] == "ops_agent"])
    longest = max(sessions.values(), key=len)
    assert len(longest) > 200  # one call every ~5 s for an hour
    assert _ts(at(120)) <= longest[0]["ts"] and longest[-1]["ts"] < _ts(at(181))
    assert {e["kind"] for e in longest} == {"llm_call", "tool_call"}


def test_retrieval_amplification(run_a: list[dict[str, Any]]) -> None:
    def per_request(lo: int, hi: int) -> float:
        calls = Counter(
            e["request_id"] for e in window(run_a, "kb_search_rag", lo, hi)
            if e.get("kind") == "retrieval"
        )  # fmt: skip
        return statistics.mean(calls.values())

    assert 2.0 <= per_request(60, 120) <= 4.0
    assert per_request(125, 175) >= 3.0 * per_request(60, 120)


def test_fallback_drift_flagged(run_a: list[dict[str, Any]]) -> None:
    during = llm(window(run_a, "underwriting_rag", 120, 180))
    before = llm(window(run_a, "underwriting_rag", 60, 120))
    flagged = [e for e in during if e["fallback"]]
    assert 0.35 <= len(flagged) / len(during) <= 0.65
    assert all(e["model"] == "gpt-4.1" and e["requested_model"] == "gpt-4.1-mini" for e in flagged)
    assert sum(e["fallback"] for e in before) / len(before) < 0.03


def test_fallback_drift_silent(run_b: list[dict[str, Any]]) -> None:
    # Effects follow the call's start; ts is when it finished: skip the onset minute.
    during = llm(window(run_b, "kb_search_rag", 121, 180))
    assert all(e["model"] == "gpt-4o" for e in during)
    assert not any(e["fallback"] for e in during)
    assert all(e["model"] == "gpt-4o-mini" or e["fallback"]
               for e in llm(window(run_b, "kb_search_rag", 60, 120)))  # fmt: skip


def test_cost_spike_and_budget_burn_raise_the_rate(
    run_a: list[dict[str, Any]], run_b: list[dict[str, Any]]
) -> None:
    spike = len(llm(window(run_a, "code_assistant", 120, 180)))
    assert spike >= 3.5 * len(llm(window(run_a, "code_assistant", 60, 120)))
    burn = len(llm(window(run_b, "support_chat", 130, 180)))
    assert burn >= 2.0 * len(llm(window(run_b, "support_chat", 70, 120)))


def test_embedding_duplication(run_a: list[dict[str, Any]], quiet: list[dict[str, Any]]) -> None:
    def top_repeats(events: list[dict[str, Any]]) -> int:
        return max(
            Counter(e["content_hash"] for e in events if e.get("kind") == "embedding").values()
        )

    assert top_repeats(window(quiet, "doc_embeddings", 0, 240)) <= 5  # a few natural re-embeds
    during = window(run_a, "doc_embeddings", 120, 180)
    assert top_repeats(during) >= 300
    hashes = Counter(e["content_hash"] for e in during)
    assert {h for h, n in hashes.items() if n > 5} == {"a" * 32, "b" * 32, "c" * 32}


def test_model_oversizing_sends_small_requests_to_the_big_model(
    run_a: list[dict[str, Any]],
) -> None:
    def small_on_big(lo: int, hi: int) -> list[dict[str, Any]]:
        return [
            e for e in llm(window(run_a, "claims_triage", lo, hi))
            if e["model"] == "claude-sonnet-4-0" and not e["fallback"]
        ]  # fmt: skip

    assert small_on_big(60, 120) == []
    during = small_on_big(120, 180)
    assert len(during) >= 300
    assert all(e["input_tokens"] < 300 and e["output_tokens"] < 100 for e in during)


def test_cost_per_outcome_outcome_drop(run_b: list[dict[str, Any]]) -> None:
    def ratio(lo: int, hi: int) -> float:
        events = window(run_b, "claims_triage", lo, hi)
        return sum(e["type"] == "outcome" for e in events) / len(llm(events))

    assert ratio(125, 180) <= 0.5 * ratio(60, 120)


# -- the plan and the labels ------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_default_plan(seed: int) -> None:
    start = datetime(2026, 11, 2, tzinfo=UTC)
    everything = Scenario(seed=seed, start=start, hours=24).incidents
    # Newcomers (simulate/newcomers.py) are traffic of their own: two use cases no
    # policy names and a model trial on a use case that is free then.
    newcomers = [i for i in everything if i.kind in NEWCOMER_KINDS]
    assert sorted(i.kind for i in newcomers) == ["new_model", "unowned_spend", "unowned_spend"]
    plan = [i for i in everything if i.kind not in NEWCOMER_KINDS]
    assert sorted(i.kind for i in plan) == sorted(set(KINDS) - set(NEWCOMER_KINDS))
    assert len({i.use_case for i in plan}) >= 6  # spread over use cases
    for inc in newcomers:
        assert start + timedelta(hours=2) <= inc.start < inc.end
        assert inc.end <= start + timedelta(hours=24) - timedelta(minutes=15)
        if inc.kind == "new_model":
            assert (
                inc.use_case in TRIAL_MODELS and inc.params["model"] == TRIAL_MODELS[inc.use_case]
            )
            assert not [o for o in plan if o.use_case == inc.use_case]  # its only incident
    for inc in plan:
        assert inc.use_case in ELIGIBLE[inc.kind]
        assert inc.start >= start + timedelta(hours=2)
        assert timedelta(minutes=30) <= inc.end - inc.start <= timedelta(minutes=90)
        assert inc.end <= start + timedelta(hours=24) - timedelta(minutes=15)
        for other in plan:
            if other is not inc and other.use_case == inc.use_case:
                assert inc.end <= other.start or other.end <= inc.start
        if inc.use_case == "sales_email_drafts":
            assert inc.start.hour >= 8 and (inc.end - timedelta(seconds=1)).hour < 18


def test_labels_schema_and_no_incident_in_warmup() -> None:
    sc = Scenario(seed=4, hours=6)
    labels = json.loads(json.dumps(sc.labels()))
    assert set(labels) >= {"seed", "start", "hours", "use_cases", "incidents"}
    assert (
        labels["seed"] == 4 and labels["hours"] == 6 and labels["start"] == "2026-11-02T00:00:00Z"
    )
    assert labels["use_cases"] == list(USE_CASES)
    assert labels["incidents"], "a 6 h run has room for incidents"
    for inc in labels["incidents"]:
        assert set(inc) >= {"incident_id", "kind", "use_case", "shape", "start", "ramp_end", "end"}
        assert inc["kind"] in KINDS and inc["shape"] in ("step", "ramp")
        assert inc["start"] >= "2026-11-02T02:00:00Z"
        assert (inc["ramp_end"] is not None) == (inc["shape"] == "ramp")
        assert Incident.from_label(inc).to_label() == inc


def test_plan_skips_kinds_that_do_not_fit() -> None:
    start = datetime(2026, 11, 2, tzinfo=UTC)
    assert plan_incidents(random.Random(1), start, 2.5) == []
    short = plan_incidents(random.Random(1), start, 3.0)
    assert short and all(i.end - i.start <= timedelta(minutes=45) for i in short)


@pytest.mark.parametrize("kind", [k for k in KINDS if k not in NEWCOMER_KINDS])
def test_incidents_without_params_use_defaults(kind: str) -> None:
    use_case = ELIGIBLE[kind][0]
    bare = Incident("bare", kind, use_case, "step", at(120), at(150))
    effects = incident_effects(bare, 1.0)
    assert effects != NORMAL and effects.incident_id == "bare"
    sc = Scenario(seed=1, start=START, hours=3, incidents=[bare])
    assert sc.labels()["incidents"][0]["params"] == default_params(bare)


def test_no_incidents_and_chosen_kinds() -> None:
    assert Scenario(seed=1, hours=6, no_incidents=True).labels()["incidents"] == []
    chosen = Scenario(seed=1, hours=6, incidents=["cost_spike", "agent_chatter"]).incidents
    assert sorted(i.kind for i in chosen) == ["agent_chatter", "cost_spike"]
    with pytest.raises(ValueError):
        Scenario(seed=1, hours=6, incidents=["cost_spike", "cost_spike"])
    with pytest.raises(ValueError):
        Scenario(seed=1, hours=6, incidents=["nonsense"])


def test_profile_is_small_credited_and_samples() -> None:
    path = Path(__file__).parents[2] / "src/spendsentry/data/azure_trace_profile.json"
    assert path.stat().st_size < 50_000
    data = json.loads(path.read_text())
    assert "Azure Public Dataset" in data["credit"] and data["license"] == "CC-BY-4.0"
    profile = TraceProfile.load()
    conv = profile.context_sampler("conv")
    rng = random.Random(0)
    draws = [conv.sample(rng.random()) for _ in range(20_000)]
    median = data["traces"]["conv"]["context_tokens"]["quantiles"][100]
    assert abs(statistics.median(draws) - median) / median < 0.05
    with pytest.raises(ValueError):
        QuantileSampler([3.0, 1.0])


# -- the command -------------------------------------------------------------------------


def test_cli_writes_events_and_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sim"
    assert cli.main(["simulate", "--out", str(out), "--hours", "0.5", "--seed", "3",
                     "--no-incidents"]) == 0  # fmt: skip
    lines = (out / "events.jsonl").read_bytes().splitlines()
    labels = json.loads((out / "labels.json").read_text())
    assert labels["seed"] == 3 and labels["incidents"] == []
    assert f"{len(lines):,} events" in capsys.readouterr().out
    assert orjson.loads(lines[0])["ts"].startswith("2026-11-02T00:00")

    assert cli.main(["simulate", "--out", str(out), "--hours", "2.75", "--start",
                     "2026-11-03T06:00:00Z", "--incidents", "cost_spike"]) == 0  # fmt: skip
    labels = json.loads((out / "labels.json").read_text())
    assert [i["kind"] for i in labels["incidents"]] == ["cost_spike"]
    assert labels["start"] == "2026-11-03T06:00:00Z"
