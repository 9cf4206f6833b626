"""Run the demo: embedded broker, worker subprocess, simulator, terminal view.

Process layout (the worker is a separate process so it gets its own CPU while
the simulator generates the pre-roll, exactly as it would run in production)::

    spendsentry demo ──┬── Tansu broker          (child; EmbeddedBroker)
                       ├── spendsentry worker    (child, own process group)
                       └── in-process tasks: feed (producer), ai.alerts and
                           ai.throttle readers, /status poller, terminal view

Both children are started with a parent-death signal (Linux), so even a
SIGKILLed demo leaves nothing running; a normal stop (duration over, Ctrl-C,
SIGTERM) stops the worker (SIGTERM, grace, SIGKILL of its group) and then the
broker. A second Ctrl-C skips the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from spendsentry.demo.feed import Feed, cancel_and_wait
from spendsentry.demo.plan import DemoPlan
from spendsentry.demo.view import TerminalView, alert_line
from spendsentry.errors import SpendSentryError
from spendsentry.kafka import KafkaSecurity, ensure_topics, parent_death_preexec
from spendsentry.simulate import DEFAULT_USE_CASES
from spendsentry.worker.status_page import StatusBoard
from spendsentry.worker.topics import TopicsConfig

__all__ = ["DemoError", "DemoOptions", "WorkerProcess", "run_demo"]

#: Seconds the worker gets to stop cleanly (its own bound is ~20 s).
WORKER_GRACE_S = 25.0


class DemoError(SpendSentryError):
    """The demo could not start (port taken, worker failed, ...)."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What ``spendsentry demo`` was asked for."""

    duration_s: float | None = None
    speed: float = 60.0
    web_port: int = 6066
    seed: int = 7
    policies: str | None = None


class WorkerProcess:
    """``python -m spendsentry worker`` on the demo's broker, in its own process group."""

    def __init__(self, bootstrap: str, web_port: int, state_dir: Path, policies: str | None):
        self.web_port = web_port
        self.log_path = state_dir / "worker.log"
        argv = [
            sys.executable, "-m", "spendsentry", "worker",
            "--broker", bootstrap,
            "--web-port", str(web_port),
            "--group", "spendsentry-demo",
            "--state-dir", str(state_dir / "state"),
            # Event time runs fast and a dozen use cases leave partitions empty:
            # release idle partitions after 2 s, not 30.
            "--idle-partition", "2",
            "--session-timeout-ms", "6000",
            "--log-level", "WARNING",
        ]  # fmt: skip
        if policies:
            argv += ["--policies", policies]
        env = dict(os.environ)
        if not any(k.startswith("SPENDSENTRY_THROTTLE_KEY") for k in env):
            # No gateway verifies the demo's throttle commands: a random key per
            # run lets the worker publish them, so the view can show them.
            env["SPENDSENTRY_THROTTLE_KEY"] = secrets.token_hex(32)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its own session: the terminal's Ctrl-C reaches only the demo, which
            # then stops the worker in order.
            start_new_session=True,
            preexec_fn=parent_death_preexec(),
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def status(self) -> dict[str, Any] | None:
        """The worker's ``/status`` JSON, or None while it does not answer."""
        url = f"http://127.0.0.1:{self.web_port}/status"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                doc: dict[str, Any] = json.loads(response.read())
                return doc
        except (OSError, ValueError):
            return None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, grace: float = WORKER_GRACE_S) -> int | None:
        """SIGTERM the group, wait ``grace`` seconds, then SIGKILL it."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the worker's process group (only while it is unreaped)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)


def _check_port_free(port: int) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise DemoError(
                f"port {port} on 127.0.0.1 is in use (another worker?); pass --web-port N"
            ) from None


async def _read_topic(bootstrap: str, topic: str, on_record: Any, security: KafkaSecurity) -> None:
    """Read ``topic`` from the beginning, forever, calling ``on_record(dict)``."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        **security.client_kwargs(),
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer.topics()  # refresh metadata (the topics exist: ensure_topics ran)
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    try:
                        doc = json.loads(r.value or b"null")
                    except ValueError:
                        continue  # not ours to judge; the view shows only what it can read
                    if isinstance(doc, dict):
                        on_record(doc)
    finally:
        await consumer.stop()


async def run_demo(
    options: DemoOptions, bootstrap: str, *, out: TextIO = sys.stdout, tty: bool | None = None
) -> int:
    """Run the demo against ``bootstrap`` until the duration ends or a signal arrives.

    Returns
    -------
    int
        0 after a clean stop, 1 if the worker failed.
    """
    from aiokafka import AIOKafkaProducer

    began = time.monotonic()
    _check_port_free(options.web_port)
    plan = DemoPlan.create(speed=options.speed, duration_s=options.duration_s, seed=options.seed)
    topics = TopicsConfig.load(None)
    security = KafkaSecurity.from_env()  # TLS/SASL from SPENDSENTRY_KAFKA_*, read once
    await ensure_topics(bootstrap, topics.specs(), security=security)
    view = TerminalView(out, tty=tty)
    url = f"http://127.0.0.1:{options.web_port}/"
    tmp = Path(tempfile.mkdtemp(prefix="spendsentry-demo-"))
    worker = WorkerProcess(bootstrap, options.web_port, tmp, options.policies)
    view.note(
        f"spendsentry demo: broker {bootstrap}, worker pid {worker.pid}, status page {url}\n"
        f"simulating {len(DEFAULT_USE_CASES)} use cases from "
        f"{plan.start:%Y-%m-%d %H:%M} UTC: {plan.hours:g} h of event time, the first 2 h "
        f"(detector warm-up) as fast as possible, then x{options.speed:g}"
    )
    for inc in plan.incidents():
        offset = (inc.start - plan.live_from).total_seconds() / options.speed
        view.note(f"  planned: {inc.kind} on {inc.use_case} ~{offset:.0f} s after the warm-up")

    stop = _StopRequest(worker)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)

    alerts: deque[str] = deque(maxlen=200)
    fired: Counter[str] = Counter()
    throttles = StatusBoard()

    def on_alert(doc: dict[str, Any]) -> None:
        line = alert_line(doc)
        alerts.append(line)
        if doc.get("status") == "firing":
            fired[str(doc.get("kind"))] += 1
        view.alert(line)

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        acks=1,
        enable_idempotence=False,
        **security.client_kwargs(),
    )
    await producer.start()
    feed = Feed(plan, topics, producer)
    tasks: list[asyncio.Task[Any]] = []
    code = 0
    view.start()
    try:
        tasks = [
            asyncio.create_task(feed.run(), name="demo-feed"),
            asyncio.create_task(_read_topic(bootstrap, topics.alerts.name, on_alert, security)),
            asyncio.create_task(
                _read_topic(bootstrap, topics.throttle.name, throttles.observe_throttle, security)
            ),
        ]
        code = await _watch(
            options, began, stop.event, worker, view, feed, tasks, alerts, throttles, url
        )
    finally:
        view.stop()
        for task in tasks:
            await cancel_and_wait(task)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), 5.0)
        view.note("spendsentry demo: stopping the worker ...")
        returncode = await asyncio.to_thread(worker.stop, 0.0 if stop.hurry else WORKER_GRACE_S)
        if returncode not in (0, None) and not stop.hurry and code == 0:
            view.note(f"spendsentry demo: the worker stopped with status {returncode}")
        shutil.rmtree(tmp, ignore_errors=True)
    kinds = ", ".join(f"{k} x{n}" for k, n in sorted(fired.items())) or "none"
    view.note(
        f"spendsentry demo: {feed.stats.events:,} events published, "
        f"{sum(fired.values())} incidents fired ({kinds})"
    )
    return code


class _StopRequest:
    """SIGINT / SIGTERM: stop the demo; asked twice, no grace period for the worker."""

    def __init__(self, worker: WorkerProcess) -> None:
        self.worker = worker
        self.event = asyncio.Event()
        self.hurry = False
        self.seen = 0

    def __call__(self) -> None:
        self.seen += 1
        if self.seen > 1:
            self.hurry = True
            self.worker.kill()
        self.event.set()


async def _watch(
    options: DemoOptions,
    began: float,
    stop: asyncio.Event,
    worker: WorkerProcess,
    view: TerminalView,
    feed: Feed,
    tasks: list[asyncio.Task[Any]],
    alerts: deque[str],
    throttles: StatusBoard,
    url: str,
) -> int:
    """Redraw the view every second until the end; 1 if the worker exited, else 0."""
    snapshot: dict[str, Any] | None = None
    while not stop.is_set():
        if options.duration_s is not None and time.monotonic() - began >= options.duration_s:
            break
        if not worker.running():
            view.stop()
            view.note(f"spendsentry demo: the worker exited:\n{worker.log_tail()}")
            return 1
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise DemoError(f"{task.get_name()} failed: {task.exception()}")
        status = await asyncio.to_thread(worker.status)
        if status is not None:
            snapshot = status.get("view")
        feed_info = {**asdict(feed.stats), "speed": f"{options.speed:g}"}
        # The worker's list drops expired commands (by the wall clock); the topic
        # reader is the fallback while the worker does not answer.
        in_force = (snapshot or {}).get("throttles")
        if in_force is None:
            in_force = list(throttles.throttles.values())
        view.draw(snapshot, feed_info, list(alerts), in_force, url=url)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    return 0
