"""The worker's status page as a person sees it: headless Chromium against a live worker.

A small scenario (two and a half hours of the simulator's traffic, a cost spike
after the two-hour warm-up) goes to the embedded broker; a real
``spendsentry worker`` process consumes it; Chromium loads ``/`` and we check
the rendered DOM for what matters to a reader (use-case names, a cost figure,
the alert's kind and summary, one card per incident, an SVG chart), then take a
screenshot (docs/status-page.png is one).

Needs Debian's ``chromium`` package (``.ci/run`` installs it); skipped without.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from spendsentry.broker import EmbeddedBroker, ensure_topics, free_port
from spendsentry.demo.feed import Feed
from spendsentry.demo.plan import DemoPlan
from spendsentry.simulate import Incident
from spendsentry.timeutil import parse_ts
from spendsentry.worker.topics import TopicsConfig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: Screenshot kept for a human to look at (CI artefact), besides the tmp dir.
SCREENSHOT_COPY = Path(os.environ.get("SPENDSENTRY_SCREENSHOT", "/tmp/spendsentry-status.png"))


def _topics_file(path: Path, prefix: str) -> TopicsConfig:
    parts = {"usage": 3, "outcomes": 3, "alerts": 1, "throttle": 1, "deadletter": 1, "control": 1}
    lines = []
    for logical, n in parts.items():
        lines += [f"[topics.{logical}]", f'name = "{prefix}.{logical}"', f"partitions = {n}", ""]
    path.write_text("\n".join(lines))
    return TopicsConfig.load(path)


def _minute_of(event: dict[str, Any]) -> int:
    ts = event["ts"]
    return int((parse_ts(ts) if isinstance(ts, str) else ts) // 60)


def _has_kind(alerts: list[dict[str, Any]], kind: str) -> bool:
    return any(a["kind"] == kind for a in alerts)


async def _publish(bootstrap: str, topics: TopicsConfig, plan: DemoPlan) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks=1)
    await producer.start()
    try:
        feed = Feed(plan, topics, producer)
        # Minute by minute, as the demo feed publishes: one send() of the whole
        # scenario would put hours of one use case before the next in a
        # partition, disorder far beyond the allowed lateness.
        minute: list[dict[str, Any]] = []
        for event in plan.scenario().iter_events():
            if minute and _minute_of(event) != _minute_of(minute[0]):
                await feed.send(minute)
                minute = []
            minute.append(event)
        await feed.send(minute)
        await producer.flush()
        return feed.stats.messages
    finally:
        await producer.stop()


class _Worker:
    def __init__(self, bootstrap: str, topics_file: Path, tmp: Path, group: str) -> None:
        self.port = free_port()
        self.log = tmp / "worker.log"
        self._fh = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        argv = [
            sys.executable, "-m", "spendsentry", "worker",
            "--broker", bootstrap, "--web-port", str(self.port),
            "--topics", str(topics_file), "--group", group,
            "--state-dir", str(tmp / "state"),
            "--policies", str(REPO / "streams" / "policies"),
            "--idle-partition", "2", "--session-timeout-ms", "6000",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            argv,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def status(self) -> dict[str, Any] | None:
        try:
            url = f"http://127.0.0.1:{self.port}/status"
            with urllib.request.urlopen(url, timeout=5) as r:
                doc: dict[str, Any] = json.loads(r.read())
                return doc
        except OSError:
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._fh.close()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    argv = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", f"--user-data-dir={profile}", *args,
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_status_page_in_a_browser(broker: EmbeddedBroker, unique_name: Any, tmp_path: Path) -> None:
    # A past weekday morning: daytime traffic; a cost spike right after the warm-up.
    now = datetime.now(UTC)
    base = DemoPlan.create(now=now, speed=60.0, duration_s=60.0)
    spike_at = base.live_from + timedelta(minutes=2)
    incident = Incident(
        "browser-1", "cost_spike", "claims_triage", "step", spike_at,
        spike_at + timedelta(minutes=25), params={"factor": 7.0},
    )  # fmt: skip

    class _Plan(DemoPlan):
        def incidents(self) -> list[Incident]:
            return [incident]

    plan = _Plan(start=base.start, hours=2.5, speed=60.0)
    prefix = unique_name("page")
    topics_file = tmp_path / "topics.toml"
    topics = _topics_file(topics_file, prefix)
    asyncio.run(ensure_topics(broker.bootstrap, topics.specs()))
    messages = asyncio.run(_publish(broker.bootstrap, topics, plan))
    worker = _Worker(broker.bootstrap, topics_file, tmp_path, unique_name("group"))
    try:
        deadline = time.monotonic() + 90
        status: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            assert worker.proc.poll() is None, worker.tail()
            status = worker.status()
            alerts = status["view"]["alerts"] if status else []
            if status and status["records"] >= messages and _has_kind(alerts, "cost_spike"):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"no alert on the page in time: {status}\n{worker.tail()}")
        view = status["view"]
        spike = next(a for a in view["alerts"] if a["kind"] == "cost_spike")
        url = f"http://127.0.0.1:{worker.port}/"

        dom = _chromium("--dump-dom", url, profile=tmp_path / "profile-dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
        page = dom.stdout
        for name in ("claims_triage", "support_chat", "code_assistant"):
            assert name in page
        assert "cost_spike" in page
        # The summary as the browser shows it (HTML-escaped in the source).
        summary = spike["summary"].replace("&", "&amp;")
        assert summary in page, summary
        assert "<svg" in page and "<polyline" in page
        assert "$" in page and "cost / min" in page
        assert 'http-equiv="refresh"' in page
        # One card per incident (issue 14): the spike's symptoms (a budget burning
        # with it) sit inside its card, with what drives the spend.
        incidents = {a.get("incident_id") or a["alert_id"] for a in view["alerts"]}
        assert page.count('<div class="card ') == len(incidents)
        assert spike.get("incident_id", "").startswith("inc-")
        if len(view["alerts"]) > len(incidents):
            assert "symptoms" in page
        if spike.get("drivers"):
            assert "what drives it" in page

        shot = tmp_path / "status.png"
        result = _chromium(
            f"--screenshot={shot}", "--window-size=1400,1000", "--hide-scrollbars", url,
            profile=tmp_path / "profile-shot",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
        with contextlib.suppress(OSError):
            SCREENSHOT_COPY.write_bytes(data)
    finally:
        worker.stop()
