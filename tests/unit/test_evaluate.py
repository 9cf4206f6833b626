"""Scoring alerts against labels, and the static-threshold baseline."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from spendsentry import cli
from spendsentry.evaluate import (
    Labels,
    evaluate,
    minute_costs,
    read_alerts,
    read_hourly_budgets,
    static_threshold_alerts,
)

T0 = datetime(2026, 11, 2, tzinfo=UTC)


def ts(minutes: float) -> str:
    when = T0 + timedelta(minutes=minutes)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


LABELS: dict[str, Any] = {
    "seed": 1,
    "start": ts(0),
    "hours": 6,
    "use_cases": ["support_chat", "claims_triage", "kb_search_rag", "doc_embeddings"],
    "incidents": [
        {"incident_id": "i1", "kind": "prompt_inflation", "use_case": "support_chat",
         "shape": "step", "start": ts(120), "ramp_end": None, "end": ts(180)},
        {"incident_id": "i2", "kind": "cost_spike", "use_case": "claims_triage",
         "shape": "ramp", "start": ts(200), "ramp_end": ts(220), "end": ts(260)},
        {"incident_id": "i3", "kind": "embedding_duplication", "use_case": "doc_embeddings",
         "shape": "step", "start": ts(240), "ramp_end": None, "end": ts(300)},
    ],
}  # fmt: skip


def alert(
    alert_id: str, kind: str, use_case: str, detected: float, started: float | None = None,
    status: str = "firing", severity: str = "warning",
) -> dict[str, Any]:  # fmt: skip
    return {
        "schema_version": 1,
        "alert_id": alert_id,
        "kind": kind,
        "use_case": use_case,
        "severity": severity,
        "status": status,
        "detected_at": ts(detected),
        "started_at": ts(detected if started is None else started),
    }


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


@pytest.fixture
def labels_path(tmp_path: Path) -> Path:
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(LABELS))
    return path


ALERTS = [
    # i1 diagnosed after 6 min; its later updates and a re-fire of the same id count once.
    alert("aa01", "prompt_inflation", "support_chat", 126, 121),
    alert("aa01", "prompt_inflation", "support_chat", 140, 121, status="escalated"),
    alert("aa01", "prompt_inflation", "support_chat", 185, 121, status="resolved"),
    alert("aa01", "prompt_inflation", "support_chat", 190, 121),
    # Another kind during i1 on the same use case: collateral, not false.
    alert("bb02", "cost_per_outcome", "support_chat", 150, 140),
    # i2 (cost_spike) diagnosed in the grace period after its end: delay 70 min.
    alert("cc03", "cost_spike", "claims_triage", 270, 255),
    # A second cost_spike alert id on i2, earlier: the earliest one sets the delay.
    alert("dd04", "cost_spike", "claims_triage", 230, 225),
    # False: nothing labelled on kb_search_rag; and support_chat long after i1.
    alert("ee05", "retrieval_amplification", "kb_search_rag", 100),
    alert("ff06", "prompt_inflation", "support_chat", 300, 290, severity="critical"),
    # Info-severity model_oversizing counts like any alert (here: false).
    alert("ff07", "model_oversizing", "claims_triage", 30, 25, severity="info"),
    # Right kind, right use case, but too late for i3: not a diagnosis; it started
    # inside i3, so collateral.
    alert("gg08", "embedding_duplication", "doc_embeddings", 330, 290),
    # A budget burn after an incident the same day on its use case: that incident's
    # spend counts against the day's budget, so collateral; before it, or on a use
    # case with no incident, false.
    alert("ii10", "budget_burn", "support_chat", 300, 298),
    alert("jj11", "budget_burn", "support_chat", 60, 58),
    alert("kk12", "budget_burn", "kb_search_rag", 200, 198),
    # An escalation without a firing record is not an alert; junk lines are skipped.
    alert("hh09", "cost_spike", "kb_search_rag", 50, status="escalated"),
    {"alert_id": "zz"},
]


def test_scoring_rules(tmp_path: Path, labels_path: Path) -> None:
    alerts_path = write_jsonl(tmp_path / "alerts.jsonl", ALERTS)
    report = evaluate(labels_path, alerts_path)
    engine = report.engine
    assert report.baseline is None and report.skipped_alert_records == 1

    results = {r.incident_id: r for r in engine.incidents}
    assert results["i1"].diagnosed and results["i1"].delay_min == 6.0
    assert results["i1"].alert_id == "aa01"
    assert results["i2"].diagnosed and results["i2"].delay_min == 30.0
    assert results["i2"].alert_id == "dd04"
    assert not results["i3"].diagnosed

    verdicts = {v.alert_id: v.verdict for v in engine.alerts}
    # aa01 counted once; hh09 (never firing) and the junk record not at all.
    assert verdicts == {
        "aa01": "diagnosis", "bb02": "collateral", "cc03": "diagnosis", "dd04": "diagnosis",
        "ee05": "false", "ff06": "false", "ff07": "false", "gg08": "collateral",
        "ii10": "collateral", "jj11": "false", "kk12": "false",
    }  # fmt: skip

    rows = {r.kind: r for r in engine.rows}
    assert (rows["prompt_inflation"].incidents, rows["prompt_inflation"].diagnosed) == (1, 1)
    assert rows["prompt_inflation"].false_alerts == 1
    assert rows["cost_per_outcome"].collateral_alerts == 1
    assert rows["cost_spike"].median_delay_min == 30.0
    assert rows["model_oversizing"].false_alerts == 1
    assert rows["embedding_duplication"].diagnosed == 0
    total = engine.total
    assert (total.incidents, total.diagnosed, total.false_alerts) == (3, 2, 5)
    assert total.collateral_alerts == 3
    assert (total.median_delay_min, total.max_delay_min) == (18.0, 30.0)
    # i2 is a ramp (full strength after 20 min), caught after 30: not within the ramp;
    # steps alone: i1 after 6 min.
    assert (rows["cost_spike"].ramps, rows["cost_spike"].ramps_within) == (1, 0)
    assert rows["cost_spike"].step_median_delay_min is None
    assert (total.ramps, total.ramps_within, total.step_median_delay_min) == (1, 0, 6.0)
    # 5 false alerts over 4 use cases x 6 h.
    assert engine.false_alerts_per_100_use_case_hours == pytest.approx(5 / 24 * 100, abs=1e-3)


def test_read_alerts_counts_first_firing_only(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", ALERTS)
    path.write_bytes(path.read_bytes() + b"not json\n\n")
    alerts, skipped = read_alerts(path)
    assert [a.alert_id for a in alerts].count("aa01") == 1
    assert alerts[0].detected_at == (T0 + timedelta(minutes=126)).timestamp()
    assert skipped == 2


def test_hourly_budgets_from_policy_files(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(
        "[defaults.budgets]\ncost_per_hour_usd = 9.0\n"
        "[use_cases.support_chat.budgets]\ncost_per_hour_usd = 2.5\n"
        "[use_cases.claims_triage]\nowner = '#x'\n"
    )
    (tmp_path / "b.toml").write_text("[use_cases.kb_search_rag.budgets]\ncost_per_day_usd = 5\n")
    budgets = read_hourly_budgets(
        tmp_path, ["support_chat", "claims_triage", "kb_search_rag", "new"]
    )
    # claims_triage and kb_search_rag have policies without an hourly budget; "new" has none.
    assert budgets == {"support_chat": 2.5, "new": 9.0}
    assert read_hourly_budgets(tmp_path / "missing", ["x"]) == {}


def usage(minute: float, use_case: str, **kw: Any) -> dict[str, Any]:
    return {"type": "usage", "event_id": f"e{minute}-{use_case}", "ts": ts(minute),
            "use_case": use_case, "kind": "llm_call", **kw}  # fmt: skip


def baseline_events() -> list[dict[str, Any]]:
    """support_chat: $0.60/h, x7 during i1 (120-180); claims_triage: $0.30/h, x4.5 at 200-260."""
    events: list[dict[str, Any]] = []
    for m in range(360):
        events.append(usage(m + 0.5, "support_chat", cost_usd=0.01 * (7 if 120 <= m < 180 else 1)))
        events.append(
            usage(m + 0.2, "claims_triage", cost_usd=0.005 * (4.5 if 200 <= m < 260 else 1))
        )
        if 300 <= m < 310:  # a benign 10-minute kb_search_rag surge: a false baseline alert
            events.append(usage(m + 0.3, "kb_search_rag", cost_usd=0.2))
    events.append({"type": "outcome", "event_id": "o1", "ts": ts(5), "use_case": "support_chat",
                   "outcome": "ticket_resolved"})  # fmt: skip
    return events


def test_static_threshold_baseline(tmp_path: Path, labels_path: Path) -> None:
    events_path = write_jsonl(tmp_path / "events.jsonl", baseline_events())
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "p.toml").write_text(
        "[use_cases.support_chat.budgets]\ncost_per_hour_usd = 1.55\n"
        "[use_cases.kb_search_rag.budgets]\ncost_per_hour_usd = 1.0\n"
    )
    alerts_path = write_jsonl(tmp_path / "alerts.jsonl", [])
    report = evaluate(labels_path, alerts_path, events_path, policies)
    base = report.baseline
    assert base is not None and not base.names_kind
    th = report.baseline_thresholds
    assert th["support_chat"]["usd_per_hour"] == 1.55
    # claims_triage has no hourly budget: 2 x its mean hourly cost of the first 2 h.
    assert th["claims_triage"]["usd_per_hour"] == pytest.approx(0.6)
    assert "note" in th["doc_embeddings"]  # no spend at all: not evaluated

    results = {r.incident_id: r for r in base.incidents}
    # support_chat: the rolling hour passes $1.55 once 0.6 + 0.06 k > 1.55: k = 16 min.
    assert results["i1"].diagnosed and results["i1"].delay_min == 16.0
    # claims_triage: it passes $0.6 once 0.3 + 0.0175 k > 0.6: k = 18 min.
    assert results["i2"].diagnosed and results["i2"].delay_min == 18.0
    assert not results["i3"].diagnosed
    assert base.total.false_alerts == 1  # the kb_search_rag surge
    rows = {r.kind: r for r in base.rows}
    assert rows["cost_spike"].false_alerts == 1
    assert rows["prompt_inflation"].diagnosed == 1  # kind-blind: it counts anyway


def test_minute_costs_prices_events_without_cost(tmp_path: Path) -> None:
    labels = Labels(T0, 1.0, ["support_chat"], [])
    events = [
        usage(1, "support_chat", provider="openai", model="gpt-4o-mini",
              input_tokens=1_000_000, output_tokens=0, cached_input_tokens=0),
        usage(2, "support_chat", kind="tool_call", provider="internal", model="tool-runtime"),
        usage(90, "support_chat", cost_usd=5.0),  # after the labelled run: ignored
    ]  # fmt: skip
    costs = minute_costs(write_jsonl(tmp_path / "e.jsonl", events), labels)
    assert costs["support_chat"][1] == pytest.approx(0.15)  # $0.15 per M input tokens
    assert sum(costs["support_chat"]) == pytest.approx(0.15)


def test_minute_costs_read_what_replay_reads(tmp_path: Path) -> None:
    """Gzip, arrays of events on one line, and junk lines (which replay dead-letters)."""
    labels = Labels(T0, 1.0, ["support_chat"], [])
    events = [usage(m, "support_chat", cost_usd=1.0) for m in range(4)]
    plain = write_jsonl(tmp_path / "e.jsonl", events)
    mixed = (
        orjson.dumps(events[:2])
        + b"\nnot json\n"
        + b"".join(orjson.dumps(e) + b"\n" for e in events[2:])
    )
    packed = tmp_path / "e.jsonl.gz"
    packed.write_bytes(gzip.compress(mixed))
    assert minute_costs(packed, labels) == minute_costs(plain, labels)
    assert sum(minute_costs(packed, labels)["support_chat"]) == 4.0


def test_baseline_fires_once_per_excursion() -> None:
    labels = Labels(T0, 4.0, ["u"], [])
    row = [0.01] * 240
    for m in list(range(130, 140)) + list(range(200, 210)):
        row[m] = 0.1
    alerts, _ = static_threshold_alerts({"u": row}, labels, {"u": 1.0})
    # 0.6 + 0.09 k > 1.0 after k = 5 hot minutes; the first excursion ends at minute 190.
    expected = [T0 + timedelta(minutes=135), T0 + timedelta(minutes=205)]
    assert [a.detected_at for a in alerts] == [t.timestamp() for t in expected]
    assert len({a.alert_id for a in alerts}) == 2


def test_cli_prints_tables_and_writes_json(
    tmp_path: Path, labels_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alerts_path = write_jsonl(tmp_path / "alerts.jsonl", ALERTS)
    events_path = write_jsonl(tmp_path / "events.jsonl", baseline_events())
    out = tmp_path / "report.json"
    code = cli.main(["evaluate", str(labels_path), str(alerts_path), "--events", str(events_path),
                     "--policies", str(tmp_path / "none"), "--json", str(out)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "prompt_inflation" in printed and "static-threshold baseline" in printed
    assert "cannot name the kind" in printed
    report = json.loads(out.read_text())
    assert report["engine"]["total"]["diagnosed"] == 2
    assert report["baseline"]["detector"] == "static-threshold baseline"
    assert cli.main(["evaluate", str(tmp_path / "missing.json"), str(alerts_path)]) == 2


def test_minute_costs_use_the_given_price_book(tmp_path: Path) -> None:
    """The baseline prices with the engine's book: a model priced only by an override counts."""
    from spendsentry.pricing import ModelRates, PriceBook

    labels = Labels(T0, 1.0, ["support_chat"], [])
    events = [usage(1, "support_chat", model="house-model", input_tokens=1_000_000)]
    path = write_jsonl(tmp_path / "e.jsonl", events)
    assert sum(minute_costs(path, labels)["support_chat"]) == 0.0  # unknown to the catalogue
    book = PriceBook(overrides={"house-model": ModelRates(2e-6, 2e-6, 4e-6)})
    assert minute_costs(path, labels, book)["support_chat"][1] == pytest.approx(2.0)
