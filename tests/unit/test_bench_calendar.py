"""benchmarks/bench_calendar.py: where false alerts fall, and a short calendar run end to end."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load() -> ModuleType:
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(
        "bench_calendar", BENCHMARKS / "bench_calendar.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load()


def quiet_run(false: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "seed": 1,
        "no_incidents": True,
        "start": "2026-11-28T00:00:00Z",  # a Saturday
        "utc_offsets": {"claims_triage": 1.0, "code_assistant": -8.0},
        "engine": {"incidents": [], "false": false, "use_case_hours": 2016.0},
    }


def test_false_alerts_placed_in_local_time() -> None:
    run = quiet_run(
        [
            # Monday 07:10 UTC is 08:10 in UTC+1: the morning step, after two days.
            {"kind": "cost_spike", "use_case": "claims_triage", "at": "2026-11-30T07:10:00Z"},
            # Monday 07:10 UTC is Sunday 23:10 in UTC-8: night, not a step.
            {"kind": "cost_spike", "use_case": "code_assistant", "at": "2026-11-30T07:10:00Z"},
            # Saturday 18:30 UTC+1: a step, but inside the first two days.
            {"kind": "cost_per_outcome", "use_case": "claims_triage", "at": "2026-11-28T17:30:00Z"},
        ]
    )
    profile = bench.false_alert_profile([run])
    assert profile["false_alerts"] == 3
    assert profile["false_per_100h"] == pytest.approx(300 / 2016)
    assert profile["by_kind"] == {"cost_spike": 2, "cost_per_outcome": 1}
    assert profile["by_day"] == {"Mon": 1, "Sun": 1, "Sat": 1}
    assert profile["by_hour"][8] == 1 and profile["by_hour"][23] == 1
    assert profile["by_hour"][18] == 1
    steps = profile["at_steps_after_history"]
    assert [(s["use_case"], s["day"], s["hour"]) for s in steps] == [("claims_triage", "Mon", 8)]


def test_report_prints(capsys: pytest.CaptureFixture[str]) -> None:
    run = quiet_run(
        [{"kind": "cost_spike", "use_case": "claims_triage", "at": "2026-11-30T07:10:00Z"}]
    )
    bench.print_quiet(bench.false_alert_profile([run]), run["start"])
    out = capsys.readouterr().out
    assert "by local day: Sat 0  Sun 0  Mon 1" in out
    assert "by use case: claims_triage 1" in out
    assert "after the first 2 days: 1" in out


def test_short_calendar_run_through_the_engine() -> None:
    # Half a day from Monday 03:00 UTC: European office hours start in it.
    run = bench.run_week(1, 0.5, True, "2026-11-30T03:00:00Z")
    assert run["no_incidents"] and run["engine"]["incidents"] == []
    assert run["engine"]["use_case_hours"] == pytest.approx(12 * 12)
    assert run["utc_offsets"]["kb_search_rag"] == 5.5
    assert run["seconds"] > 0
    profile = bench.false_alert_profile([run])
    assert sum(profile["by_hour"].values()) == profile["false_alerts"]


def test_incident_report_prints(capsys: pytest.CaptureFixture[str]) -> None:
    run = quiet_run([])
    run["no_incidents"] = False
    run["engine"]["incidents"] = [
        {"kind": "cost_spike", "use_case": "claims_triage", "diagnosed": True, "delay": 4.0,
         "id": "inc-01-cost_spike", "shape": "step", "ramp_min": None},
        {"kind": "cost_spike", "use_case": "kb_search_rag", "diagnosed": False, "delay": None,
         "id": "inc-02-cost_spike", "shape": "step", "ramp_min": None},
    ]  # fmt: skip
    bench.print_incidents(bench.detection.aggregate([run], "engine"))
    out = capsys.readouterr().out
    assert "1/2 diagnosed" in out
    assert "cost_spike" in out and "4.0" in out
