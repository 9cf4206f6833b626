"""The replay command's one-line summary counts incidents and alert records apart.

An incident is published as one ``firing`` record, then ``escalated`` and
``resolved`` ones: "22 alerts" next to an ``alerts.jsonl`` of 51 lines read as a
mismatch (issue 18, item 5).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "sample-6h.jsonl.gz"


def test_the_summary_line_names_incidents_and_alert_records(tmp_path: Path) -> None:
    alerts = tmp_path / "alerts.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "spendsentry", "replay", "--alerts-out", str(alerts), str(SAMPLE)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found = re.search(r"(\d+) incidents \((\d+) alert records\)", done.stderr)
    assert found, done.stderr
    records = [orjson.loads(line) for line in alerts.read_bytes().splitlines() if line]
    incidents = {r["alert_id"] for r in records if r["status"] == "firing"}
    assert int(found[2]) == len(records)
    assert int(found[1]) == len(incidents)
    assert len(records) > len(incidents)  # the sample escalates and resolves some
    assert " alerts;" not in done.stderr
