"""The status page's pure parts: the snapshot from a real engine, rendering and escaping."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest

from spendsentry.engine import Engine
from spendsentry.events import UsageEvent
from spendsentry.policy import PolicySet
from spendsentry.worker.status_page import StatusBoard, build_snapshot, render, sparkline

pytestmark = pytest.mark.timeout(30)

EVIL = '<script>alert("x")</script>&"\''


class _Text(HTMLParser):
    """Collects the text a browser would show, and every tag seen."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> _Text:
    parser = _Text()
    parser.feed(html)
    parser.close()
    return parser


def _alert(**over: Any) -> dict[str, Any]:
    doc = {
        "alert_id": "a1",
        "kind": "cost_spike",
        "use_case": "support_chat",
        "severity": "critical",
        "status": "firing",
        "summary": "support_chat is spending $15.10/h, 6.4x its recent $2.36/h",
        "detected_at": "2026-11-02T09:07:00.000Z",
        "started_at": "2026-11-02T09:02:00.000Z",
        "evidence": {"metric": "cost_usd_per_minute", "baseline": 0.04, "observed": 0.25,
                     "window_s": 600, "score": 2.06, "example_model": "gpt-4o"},
        "impact": {"excess_cost_per_hour_usd": 12.6, "projected_monthly_usd": 9211.5},
        "owner": "#support-ai-oncall",
    }  # fmt: skip
    doc.update(over)
    return doc


def test_untrusted_strings_are_escaped_everywhere() -> None:
    snapshot = {
        "group_id": EVIL,
        "use_cases": [{"name": EVIL, "tier": EVIL, "history": [1.0, 2.0], "firing": 1}],
        "alerts": [_alert(use_case=EVIL, kind=EVIL, summary=EVIL, severity=EVIL, owner=EVIL,
                          evidence={"metric": EVIL, "example_session": EVIL})],
        "throttles": [{"scope_key": EVIL, "action": EVIL, "params": {EVIL: EVIL},
                       "reason": {"kind": EVIL, "summary": EVIL}, "seconds_left": 60}],
        "recent": [_alert(summary=EVIL, status=EVIL)],
    }  # fmt: skip
    html = render(snapshot)
    assert "<script" not in html
    page = parse(html)
    assert "script" not in page.tags
    # The text survives, shown literally.
    assert any(EVIL in t for t in page.text)


def test_page_shows_what_a_person_needs() -> None:
    html = render(
        {
            "event_time": 1793610000.0,
            "use_cases": [
                {"name": "support_chat", "cost_per_min": 0.25, "cost_last_hour": 9.5,
                 "tokens_per_min": 51234, "cost_per_outcome": 0.0071,
                 "cost_per_outcome_target": 0.005, "history": [0.1, 0.2, 0.3], "firing": 1},
                {"name": "claims_triage", "cost_per_min": 0.05, "history": []},
            ],
            "alerts": [_alert()],
            "throttles": None,
        }
    )  # fmt: skip
    text = " ".join(parse(html).text)
    assert "support_chat" in text and "claims_triage" in text
    assert "$0.250" in text  # cost per minute
    assert "51.2k" in text  # tokens per minute
    assert "cost_spike" in text and "6.4x its recent" in text
    assert "$12.600/h" in text and "month" in text  # impact
    assert "0.04 → 0.25" in text  # evidence, rounded
    assert html.count("<svg") == 2 and "<polyline" in html
    assert 'class="over"' in html  # cost per outcome above its target is marked
    assert "Active throttles" not in text  # no throttle data yet: no section
    assert 'http-equiv="refresh"' in html


def test_throttle_section_once_throttle_data_exists() -> None:
    empty = render({"throttles": []})
    assert "Active throttles (0)" in empty and "No throttle in force" in empty
    html = render(
        {
            "throttles": [
                {"scope_key": "support_chat/model=gpt-4o", "action": "route_model",
                 "params": {"target_model": "gpt-4o-mini"}, "dry_run": True,
                 "seconds_left": 754, "reason": {"kind": "cost_spike", "summary": "6x"}}
            ]
        }
    )  # fmt: skip
    text = " ".join(parse(html).text)
    assert "support_chat/model=gpt-4o" in text and "route_model" in text
    assert "12m 34s" in text and "dry run" in text and "target_model=gpt-4o-mini" in text


def test_render_tolerates_missing_and_odd_values() -> None:
    html = render({"use_cases": [{"name": "x", "cost_per_min": float("nan"), "history": ["a"]}],
                   "alerts": [{"kind": "k"}], "recent": [{}]})  # fmt: skip
    assert "<svg" in html and "nan" not in html.lower().replace("nanos", "")
    assert render({}).startswith("<!DOCTYPE html>")


def test_sparkline_scales_to_the_maximum_and_right_aligns() -> None:
    svg = sparkline([0.0, 1.0, 0.5], width=100, height=20)
    points = re.search(r'<polyline points="([^"]+)"', svg)
    assert points is not None
    xy = [tuple(map(float, p.split(","))) for p in points.group(1).split()]
    assert xy[-1][0] == pytest.approx(99.0)  # newest minute on the right edge
    assert min(y for _, y in xy) == pytest.approx(2.0)  # the maximum touches the top
    assert xy[0][1] == pytest.approx(18.0)  # zero on the baseline


def _usage(n: int, ts: float, use_case: str, cost: float) -> UsageEvent:
    return UsageEvent(event_id=f"e{n}", ts=ts, use_case=use_case, model="gpt-4o-mini",
                      input_tokens=1000, output_tokens=100, cost_usd=cost)  # fmt: skip


def test_snapshot_from_a_real_engine() -> None:
    engine = Engine(PolicySet.empty())
    t0 = 1793610000.0
    events = [
        _usage(m * 10 + k, t0 + m * 60 + k, uc, 0.01 * (m + 1))
        for m in range(70)
        for k, uc in enumerate(("big", "small", "small"))
    ]
    engine.process(events)
    engine.advance(t0 + 70 * 60 + engine.config.allowed_lateness_s)
    board = StatusBoard()
    board.observe_alert(_alert(alert_id="gone", use_case="big"))  # not firing in the engine
    snap = build_snapshot(engine, board, watermark=t0 + 70 * 60, header={"group_id": "g"})
    assert snap["group_id"] == "g" and snap["use_case_count"] == 2
    rows = {r["name"]: r for r in snap["use_cases"]}
    assert len(rows["big"]["history"]) == 60  # the last hour, bounded
    assert rows["big"]["history"][-1] == pytest.approx(0.70)  # newest minute last
    assert rows["small"]["cost_per_min"] == pytest.approx(2 * 0.01 * 68)  # mean of 5 minutes
    assert rows["small"]["tokens_per_min"] == pytest.approx(2 * 1100)
    # The board's record is not an open incident of the engine; the engine's own are
    # listed (the defaults' owner hears of "big", which no policy names, at $0.70 a minute).
    assert [a["alert_id"] for a in snap["alerts"]] == [aid for _, _, aid in engine.firing()]
    assert "gone" not in {a["alert_id"] for a in snap["alerts"]}
    assert snap["throttles"] is None


def test_board_keeps_the_latest_record_and_drops_released_or_expired_throttles() -> None:
    board = StatusBoard(max_open=2, max_recent=3)
    for i in range(4):
        board.observe_alert(_alert(alert_id=f"a{i}"))
    assert list(board.open) == ["a2", "a3"] and len(board.recent) == 3
    board = StatusBoard()
    board.observe_throttle({"scope_key": "s1", "action": "block",
                            "expires_at": "2026-11-02T10:00:00.000Z"})  # fmt: skip
    board.observe_throttle({"scope_key": "s2", "action": "block",
                            "expires_at": "2026-11-02T08:00:00.000Z"})  # fmt: skip
    board.observe_throttle({"scope_key": "s3", "action": "block"})
    board.observe_throttle({"scope_key": "s3", "action": "release"})
    board.observe_throttle({"action": "block"})  # no scope: ignored
    # Time left is by the wall clock (commands are published on it), not event time.
    snap = build_snapshot(
        Engine(PolicySet.empty()), board, watermark=1793000000.0, now=1793610000.0
    )  # 09:00 on the wall clock; event time a week behind
    assert [t["scope_key"] for t in snap["throttles"]] == ["s1"]
    assert snap["throttles"][0]["seconds_left"] == pytest.approx(3600)


def test_one_card_per_incident_with_its_symptoms_and_what_drives_it() -> None:
    incident = {"incident_id": "inc-" + "ab" * 12, "root_cause": "agent_chatter"}
    alerts = [
        _alert(alert_id="a1", kind="cost_spike", severity="critical", **incident),
        _alert(
            alert_id="a2",
            kind="agent_chatter",
            severity="warning",
            summary="session run-7 at 400 calls",
            drivers=[{"dimension": "session", "value": "run-7", "share": 0.82}],
            **incident,
        ),
        _alert(alert_id="a3", kind="prompt_inflation", use_case="other"),
    ]
    html = render({"alerts": alerts})
    assert html.count('<div class="card ') == 2  # two incidents, three alerts
    assert "Firing alerts (3) in 2 incidents" in html
    card = html[html.index('<div class="card ') : html.rindex('<div class="card ')]
    # The cause heads the card, at the incident's worst severity; the spike is inside.
    assert card.index("agent_chatter") < card.index("symptoms") < card.index("cost_spike")
    assert 'class="card critical"' in card
    assert "session run-7: 82% of the excess" in card
