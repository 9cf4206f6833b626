"""Ladders that would do less than they say: policy check warnings and start-up lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from spendsentry.actions import ThrottleKeys
from spendsentry.policy import PolicySet
from spendsentry.policy_review import ladder_warnings
from spendsentry.worker.readiness import COMPOSE_DEFAULT_KEY, throttle_warnings

REPO = Path(__file__).resolve().parents[2]
LOOSENING = """
[use_cases.chat]
auto_throttle = "on"
[[use_cases.chat.ladder]]
at = "warning"
action = "limit_rate"
requests_per_minute = 600
[[use_cases.chat.ladder]]
at = "critical"
action = "route_model"
target_model = "small"
"""


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spendsentry", "policy", "check", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_the_shipped_ladders_never_ask_for_a_step_the_planner_would_hold_back() -> None:
    assert ladder_warnings(PolicySet.load(REPO / "streams" / "policies")) == []


def test_policy_check_warns_about_a_loosening_ladder_and_a_dominant_route_target(
    tmp_path: Path,
) -> None:
    (tmp_path / "p.toml").write_text(LOOSENING)
    done = check(str(tmp_path / "p.toml"))
    assert done.returncode == 0 and done.stdout.startswith("ok: 1 policies")
    assert "warning: chat: the critical step (route_model) would lift" in done.stderr
    events = tmp_path / "events.jsonl"
    rows = [
        {"event_id": f"e{i}", "ts": 1793610000.0 + i, "use_case": "chat",
         "model": "small" if i % 10 else "large", "input_tokens": 10, "output_tokens": 5}
        for i in range(50)
    ]  # fmt: skip
    events.write_text("\n".join(json.dumps(r) for r in rows))
    done = check(str(tmp_path / "p.toml"), "--events", str(events))
    assert done.returncode == 0
    assert "routes to small, which already serves 45 of its 50 calls" in done.stderr
    # A target that serves a minority is what routing is for: no warning.
    events.write_text("\n".join(json.dumps({**r, "model": "large"}) for r in rows))
    assert "routes to" not in check(str(tmp_path / "p.toml"), "--events", str(events)).stderr


def test_the_worker_warns_when_it_cannot_sign_or_signs_with_the_compose_default() -> None:
    throttling = PolicySet.from_toml_text(LOOSENING)
    lines = throttle_warnings(throttling, ThrottleKeys())
    assert lines[0].startswith("THROTTLING DISABLED") and "SPENDSENTRY_THROTTLE_KEY" in lines[0]
    assert any("would lift" in line for line in lines)
    default = throttle_warnings(throttling, ThrottleKeys.of(COMPOSE_DEFAULT_KEY))
    assert any("docker-compose default key" in line for line in default)
    assert not any(COMPOSE_DEFAULT_KEY in line for line in default)
    quiet = PolicySet.from_toml_text('[defaults]\nauto_throttle = "off"\n')
    assert throttle_warnings(quiet, ThrottleKeys()) == []
