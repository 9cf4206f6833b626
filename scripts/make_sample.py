"""Rebuild the bundled sample: examples/sample-6h.jsonl.gz and its labels.

Six hours of simulated traffic for a dozen use cases (seed 42, from 06:00 UTC),
with labelled incidents, plus a handful of deliberately bad records so a first
replay shows dead-lettering too. Token sizes and arrivals are calibrated on the
Azure LLM inference trace 2023 (Azure Public Dataset, CC-BY 4.0).

    python scripts/make_sample.py
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
from pathlib import Path

from spendsentry.simulate.scenario import Scenario

ROOT = Path(__file__).resolve().parents[1]
BAD_RECORDS = [
    b"this line is not JSON",
    b'{"event_id": "bad-1", "ts": "2026-11-02T09:00:00Z", "use_case": "support_chat",'
    b' "input_tokens": -40}',
    b'{"event_id": "bad-2", "ts": "the day after tomorrow", "use_case": "support_chat"}',
    b'{"event_id": "bad-3", "ts": "2026-11-02T09:00:00Z"}',
    b'[{"event_id": "bad-4", "ts": "2026-11-02T09:00:01Z", "use_case": "claims_triage",'
    b' "kind": "teleport"}]',
]


def main() -> None:
    out = ROOT / "examples"
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        events, labels = Scenario(seed=42, start="2026-11-02T06:00:00Z", hours=6).write(tmp)
        lines = Path(events).read_bytes().splitlines()
        # Bad records go in the middle, where a real feed would have them.
        middle = len(lines) // 2
        lines[middle:middle] = BAD_RECORDS
        with gzip.GzipFile(out / "sample-6h.jsonl.gz", "wb", compresslevel=9, mtime=0) as f:
            f.write(b"\n".join(lines) + b"\n")
        shutil.copy(labels, out / "sample-6h.labels.json")


if __name__ == "__main__":
    main()
