"""Alert text an engineer can act on (issue 14, item 5): units, no "$0/h", no repeats, clocks."""

from __future__ import annotations

import json
from typing import Any

from spendsentry.alerts import Finding, IncidentTracker
from spendsentry.slack.blocks import render_alert
from spendsentry.worker.status_page import render


def _tier_alert(**over: Any) -> dict[str, Any]:
    doc = {
        "alert_id": "a1", "kind": "fallback_drift", "use_case": "ops_agent",
        "severity": "critical", "status": "firing", "summary": "pricier model mix",
        "detected_at": "2026-11-02T09:07:00Z", "started_at": "2026-11-02T09:02:00Z",
        "evidence": {"metric": "price_tier_ln_usd_per_mtok", "baseline": -0.89,
                     "observed": 0.9, "window_s": 300, "score": 3.0},
        "impact": {"excess_cost_per_hour_usd": 0.0, "projected_monthly_usd": 0.0},
    }  # fmt: skip
    doc.update(over)
    return doc


def test_a_log_metric_reads_in_dollars_and_an_unpriced_excess_is_not_zero_dollars() -> None:
    slack = json.dumps(render_alert(_tier_alert()).blocks)
    assert "0.4107 USD/Mtok" in slack and "2.46 USD/Mtok" in slack
    assert "-0.89" not in slack
    assert "$0/h" not in slack and "not priced by this detector" in slack
    page = render({"alerts": [_tier_alert()]})
    assert "USD/Mtok" in page and "-0.89" not in page
    assert "not priced by this detector" in page


def test_a_resolution_says_it_is_over_rather_than_repeating_the_firing_sentence() -> None:
    tracker = IncidentTracker("research_agent", "agent_chatter", resolve_after=1)
    finding = Finding(
        "agent_chatter", "warning", 5.0, "session_calls", 40.0, 400.0, 60,
        "session run-7 is at 400 calls and still running",
    )  # fmt: skip
    tracker.observe(finding, 600.0)
    (resolved,) = tracker.observe(None, 1800.0)
    assert "still running" not in resolved.summary
    assert "back to normal after 21 min" in resolved.summary


def test_event_time_behind_the_wall_clock_is_said_and_long_reasons_wrap() -> None:
    reason = {"alert_id": "a", "kind": "cost_spike", "summary": "x" * 400}
    page = render(
        {
            "event_time": 1_793_610_000.0,
            "generated_at": 1_793_610_000.0 + 86_400,
            "throttles": [{"scope_key": "u", "action": "limit_rate", "reason": reason}],
        }
    )
    assert "24h 00m behind the wall clock" in page
    assert '<td class="reason">' in page and "td.reason{white-space:normal" in page
