"""``spendsentry demo`` and ``spendsentry produce`` as a user runs them.

The demo runs as a real subprocess (broker, worker and all): alert lines must
appear, it must exit 0 at the end of ``--duration`` or on Ctrl-C, and no
process it started (Tansu, the worker) may survive it, checked in /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from spendsentry.broker import EmbeddedBroker, free_port
from spendsentry.demo.plan import PREROLL_MINUTES, DemoPlan
from spendsentry.demo.view import TerminalView, screen

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


# -- /proc helpers -------------------------------------------------------------


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of ``pid``, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rindex(")") + 2 :].split()
    return int(rest[1]), rest[0], int(rest[19])


def descendants(root: int) -> dict[int, int]:
    """pid -> start time of every live descendant of ``root``."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _stat(int(entry))
            if info is not None:
                children.setdefault(info[0], []).append(int(entry))
                starts[int(entry)] = info[2]
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = starts[child]
            todo.append(child)
    return found


def survivors(seen: dict[int, int]) -> list[int]:
    """Processes of ``seen`` still running (same pid and start time, not a zombie)."""
    alive = []
    for pid, start in seen.items():
        info = _stat(pid)
        if info is not None and info[2] == start and info[1] != "Z":
            alive.append(pid)
    return alive


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "?"


class Demo:
    """``python -m spendsentry demo`` in its own session, stdout to a file (not a TTY)."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.port = free_port()
        self.out = tmp / "demo.out"
        self._fh = open(self.out, "wb")  # noqa: SIM115 - closed in finish()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "spendsentry", "demo", "--web-port", str(self.port), *args],
            cwd=REPO,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.seen: dict[int, int] = {}
        self.names: dict[int, str] = {}

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def page(self) -> str | None:
        try:
            url = f"http://127.0.0.1:{self.port}/"
            with urllib.request.urlopen(url, timeout=3) as r:
                body: bytes = r.read()
                return body.decode()
        except OSError:
            return None

    def watch_until(self, done: Any, timeout: float) -> None:
        """Record descendants until ``done()`` or the demo exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            for pid, start in descendants(self.proc.pid).items():
                if pid not in self.seen:
                    self.seen[pid] = start
                    self.names[pid] = _comm(pid)
            if done():
                return
            time.sleep(0.5)

    def finish(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            raise AssertionError(f"the demo did not stop in time:\n{self.text()[-3000:]}") from None
        finally:
            self._fh.close()
            # Whatever happens, leave nothing behind ourselves.
            for pid in survivors(self.seen):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _check_nothing_left(demo: Demo) -> None:
    names = list(demo.names.values())
    assert any("tansu" in n for n in names), names  # the embedded broker was seen...
    assert any("spendsentry worker" in n for n in names), names  # ...and the worker
    deadline = time.monotonic() + 5  # the kernel's parent-death signal is asynchronous
    left = survivors(demo.seen)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = survivors(demo.seen)
    assert not left, f"left running: {[demo.names.get(p) for p in left]}"


@pytest.mark.timeout(120)
def test_demo_runs_for_its_duration_shows_alerts_and_leaves_nothing(tmp_path: Path) -> None:
    demo = Demo(tmp_path, "--duration", "40", "--speed", "600")
    pages: list[str] = []

    def worker_and_page_seen() -> bool:
        if not pages and len(demo.seen) >= 2:
            page = demo.page()
            if page and "claims_triage" in page:
                pages.append(page)
        return False  # keep watching (and recording children) to the end

    demo.watch_until(worker_and_page_seen, timeout=70)
    code = demo.finish(timeout=60)
    out = demo.text()
    assert code == 0, out[-3000:]
    alerts = [line for line in out.splitlines() if line.startswith("ALERT ")]
    kinds = {line.split()[4] for line in alerts if " firing " in line}
    assert {"cost_spike", "prompt_inflation", "fallback_drift"} <= kinds, out[-3000:]
    assert any(" on claims_triage:" in line for line in alerts)
    assert "\x1b[" not in out  # not a terminal: plain lines only
    assert "use case" in out and "cost/min" in out  # the periodic plain table
    assert pages and "<svg" in pages[0], "the worker's status page was not reachable"
    _check_nothing_left(demo)


@pytest.mark.timeout(90)
def test_ctrl_c_stops_everything_cleanly(tmp_path: Path) -> None:
    demo = Demo(tmp_path, "--speed", "60")
    demo.watch_until(lambda: len(demo.seen) >= 2 and demo.page() is not None, timeout=45)
    assert demo.page() is not None, demo.text()[-3000:]
    os.killpg(demo.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    code = demo.finish(timeout=45)
    assert code == 0, demo.text()[-3000:]
    assert "stopping the worker" in demo.text()
    _check_nothing_left(demo)


def test_bad_options_fail_with_a_reason() -> None:
    for args, needle in (
        (["--speed", "0"], "positive"),
        (["--duration", "nan"], "positive"),
        (["--web-port", "70000"], "between 1 and 65535"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "spendsentry", "demo", *args],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert result.returncode == 2 and needle in result.stderr, result.stderr


DEMO_KEY = "demo-guard-test-key"
DEMO_POLICY = """
[use_cases.claims_triage]
owner = "#claims"
auto_throttle = "on"
cooldown_s = 0
max_duration_s = 3600
[[use_cases.claims_triage.ladder]]
at = "warning"
action = "block"
"""


@pytest.mark.timeout(240)
def test_a_gateway_guard_enforces_a_throttle_command_from_the_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's event time is a day behind the wall clock: its commands must
    still be in force for a real ThrottleGuard (it used to count them expired)."""
    from spendsentry.actions import ThrottleKeys
    from spendsentry.client import ThrottleGuard
    from spendsentry.demo import DemoOptions, run_demo

    monkeypatch.setenv("SPENDSENTRY_THROTTLE_KEY", DEMO_KEY)  # the worker child inherits it
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "claims.toml").write_text(DEMO_POLICY)
    options = DemoOptions(
        duration_s=180, speed=60, web_port=free_port(), policies=str(tmp_path / "policies")
    )
    decisions: list[Any] = []

    async def main(bootstrap: str) -> None:
        with (tmp_path / "demo.out").open("w") as out:
            demo = asyncio.create_task(run_demo(options, bootstrap, out=out, tty=False))
            guard = ThrottleGuard(bootstrap, ThrottleKeys.of(DEMO_KEY), topic="ai.throttle")
            await guard.start()
            try:
                deadline = time.monotonic() + 170
                while not demo.done() and time.monotonic() < deadline:
                    decision = guard.check("claims_triage")
                    if decision.action == "deny":
                        decisions.append(decision)
                        break
                    await asyncio.sleep(0.2)
            finally:
                await guard.stop()
                demo.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await demo
        decisions.append(dict(guard.counts))

    with EmbeddedBroker() as own:  # its own broker: the demo uses the default topic names
        asyncio.run(main(own.bootstrap))
    out = (tmp_path / "demo.out").read_text()
    assert len(decisions) == 2, f"the guard never denied: counts {decisions[-1]}\n{out[-3000:]}"
    denied, counts = decisions
    assert denied.reason == "blocked" and denied.retry_after_s > 600, denied
    assert counts.get("applied", 0) >= 1 and counts.get("bad_signature", 0) == 0, counts


# -- the plan and the view, without processes -----------------------------------


def test_plan_starts_in_the_past_and_places_incidents_after_the_warm_up() -> None:
    now = datetime(2026, 11, 30, 7, 17, tzinfo=UTC)
    plan = DemoPlan.create(now=now, speed=600.0, duration_s=40.0)
    assert plan.start + timedelta(hours=plan.hours) <= now  # never ahead of the clock
    assert plan.start.hour == 7 and plan.start.minute == 0
    incidents = plan.incidents()
    first = min(i.start for i in incidents)
    assert first >= plan.start + timedelta(minutes=PREROLL_MINUTES)
    assert first - plan.live_from <= timedelta(minutes=5)  # early after the warm-up
    assert all(i.end <= plan.start + timedelta(hours=plan.hours) for i in incidents)
    with pytest.raises(ValueError, match="speed"):
        DemoPlan.create(speed=-1)


def test_screen_fits_the_terminal_and_keeps_the_newest_alerts() -> None:
    alerts = [f"ALERT 09:{i:02d} firing    warning  cost_spike on uc{i}: x" for i in range(50)]
    lines = screen({"use_cases": [{"name": "a"}]}, {"phase": "live"}, alerts, [],
                   url="http://x/", width=60, height=20, color=False)  # fmt: skip
    assert len(lines) <= 20
    assert lines[-1].endswith("uc49: x")
    assert all(len(line) <= 60 for line in lines[3:])


def test_plain_view_prints_alerts_at_once_and_no_escape_codes(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    with path.open("w") as fh:
        view = TerminalView(fh, tty=False, plain_every=1)
        view.start()
        view.alert("ALERT 09:07 firing critical cost_spike on claims_triage: x")
        view.draw({"use_cases": [{"name": "claims_triage", "cost_per_min": 0.1}]},
                  {"phase": "live", "event_time": 0}, [], [], url="u")  # fmt: skip
        view.stop()
    text = path.read_text()
    assert "cost_spike on claims_triage" in text and "claims_triage" in text
    assert "\x1b" not in text


# -- spendsentry produce -----------------------------------------------------------


async def _read(bootstrap: str, topic: str, partitions: int) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Any] = []
        deadline = time.monotonic() + 20
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline
            for records in (await consumer.getmany(timeout_ms=300)).values():
                out += [(r.key, r.value) for r in records]
        return out
    finally:
        await consumer.stop()


@pytest.mark.timeout(60)
def test_produce_publishes_arrays_keyed_by_use_case(
    broker: EmbeddedBroker, unique_name: Any, tmp_path: Path
) -> None:
    prefix = unique_name("produce")
    topics = tmp_path / "topics.toml"
    topics.write_text(
        "\n".join(
            f'[topics.{t}]\nname = "{prefix}.{t}"\npartitions = 2\n'
            for t in ("usage", "outcomes", "alerts", "throttle", "deadletter", "control")
        )
    )
    events = [{"event_id": f"u{i}", "ts": 1793610000 + i, "use_case": f"uc{i % 2}"}
              for i in range(5)]  # fmt: skip
    events.append({"type": "outcome", "event_id": "o1", "ts": 1793610000, "use_case": "uc0",
                   "outcome": "ticket_resolved"})  # fmt: skip
    lines = [json.dumps(e) for e in events] + ["{not json"]
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join(lines) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "spendsentry", "produce", str(source),
         "--broker", broker.bootstrap, "--topics", str(topics), "--batch", "2"],
        capture_output=True, text=True, timeout=45, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "published 7 events" in result.stdout and "1 not JSON" in result.stdout
    usage = asyncio.run(_read(broker.bootstrap, f"{prefix}.usage", 2))
    outcomes = asyncio.run(_read(broker.bootstrap, f"{prefix}.outcomes", 2))
    arrays = [json.loads(v) for k, v in usage if k is not None]
    assert sorted(e["event_id"] for a in arrays for e in a) == [f"u{i}" for i in range(5)]
    assert all(len(a) <= 2 and {e["use_case"] for e in a} == {k.decode()}
               for (k, _), a in zip([u for u in usage if u[0]], arrays, strict=True))  # fmt: skip
    assert [v for k, v in usage if k is None] == [b"{not json"]
    assert [json.loads(v)[0]["event_id"] for _, v in outcomes] == ["o1"]


def test_produce_without_a_broker_says_how_to_give_one(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SPENDSENTRY_BROKER"}
    result = subprocess.run(
        [sys.executable, "-m", "spendsentry", "produce", str(tmp_path / "x.jsonl")],
        capture_output=True, text=True, timeout=30, check=False, env=env,
    )  # fmt: skip
    assert result.returncode == 2 and "--broker" in result.stderr


def _produce_cli(
    broker: EmbeddedBroker, topics: Path, source: str, *extra: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spendsentry", "produce", source, "--broker", broker.bootstrap,
         "--topics", str(topics), *extra],
        capture_output=True, text=True, timeout=60, check=False, input=stdin,
    )  # fmt: skip


@pytest.mark.timeout(120)
def test_produce_refuses_history_behind_what_the_topic_holds_and_points_to_replay(
    broker: EmbeddedBroker, unique_name: Any, tmp_path: Path
) -> None:
    prefix = unique_name("late")
    topics = tmp_path / "topics.toml"
    topics.write_text(
        "\n".join(
            f'[topics.{t}]\nname = "{prefix}.{t}"\npartitions = 2\n'
            for t in ("usage", "outcomes", "alerts", "throttle", "deadletter", "control")
        )
    )
    now = time.time()

    def events(name: str, start: float, n: int) -> str:
        lines = [json.dumps({"event_id": f"{name}{i}", "ts": start + i, "use_case": f"uc{i % 3}"})
                 for i in range(n)]  # fmt: skip
        (tmp_path / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
        return "\n".join(lines) + "\n"

    events("live", now - 600, 100)
    history = events("history", now - 86_400, 100)
    first = _produce_cli(broker, topics, str(tmp_path / "live.jsonl"))
    assert first.returncode == 0 and first.stderr == "", first.stderr
    # A day behind what the topic holds: every event would be dead-lettered as late.
    refused = _produce_cli(broker, topics, str(tmp_path / "history.jsonl"))
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "100 of 100 events (100%)" in refused.stderr
    assert "spendsentry replay" in refused.stderr and "--allow-late" in refused.stderr
    usage = asyncio.run(_read(broker.bootstrap, f"{prefix}.usage", 2))
    assert sum(len(json.loads(v)) for _, v in usage) == 100  # nothing of the history went out
    allowed = _produce_cli(broker, topics, str(tmp_path / "history.jsonl"), "--allow-late")
    assert allowed.returncode == 0 and "published 100 events" in allowed.stdout
    assert "100 of 100 events" in allowed.stderr  # still said
    # Standard input cannot be checked first: published, then said, exit 3.
    piped = _produce_cli(broker, topics, "-", stdin=history)
    assert piped.returncode == 3 and "published 100 events" in piped.stdout
    assert "spendsentry replay" in piped.stderr
    # Current events are fine after all that.
    again = _produce_cli(broker, topics, str(tmp_path / "live.jsonl"))
    assert again.returncode == 0 and again.stderr == "", again.stderr
