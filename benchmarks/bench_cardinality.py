"""Memory and web views of one worker process under a flood of use-case names.

Run with ``python benchmarks/bench_cardinality.py [--names 100000]``. It starts an
embedded broker and a real ``spendsentry worker`` process (default topics: 6
input partitions, all owned by this one worker), then produces one usage event
for each of ``--names`` distinct use-case names (event time spread over the last
ten minutes). While the flood is consumed, a thread fetches ``/metrics`` every
0.2 s and records the slowest answer (the web views share the event loop with
the consumer, so a slow answer means a blocked loop). Once every record is
consumed and a snapshot holds it, it reports:

* the worker's resident memory before the flood, after it and at its peak
  (``VmRSS`` and ``VmHWM`` of ``/proc/PID/status``);
* size and time of ``/status``, the status page ``/`` and ``/metrics``;
* the bytes of the last snapshot write (all partitions), and how many distinct
  ``use_case`` label values ``/metrics`` carries.

To measure another version of the code (the figures "before" in
docs/reliability.md), put its ``src`` first: ``PYTHONPATH=/path/to/old/src``.
Not collected by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from spendsentry.broker import EmbeddedBroker, free_port
from spendsentry.worker.topics import TopicsConfig


def write_topics(path: Path, prefix: str) -> dict[str, str]:
    """The default layout under unique names; returns logical -> topic name."""
    defaults = TopicsConfig.defaults()
    names, lines = {}, []
    for logical in ("usage", "outcomes", "alerts", "throttle", "deadletter", "control", "state"):
        spec = getattr(defaults, logical)
        names[logical] = f"{prefix}.{logical}"
        lines += [f"[topics.{logical}]", f'name = "{names[logical]}"']
        lines.append(f"partitions = {spec.partitions}")
        if spec.config:
            pairs = ", ".join(f'"{k}" = "{v}"' for k, v in spec.config.items())
            lines.append(f"config = {{ {pairs} }}")
        lines.append("")
    path.write_text("\n".join(lines))
    return names


def rss_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of ``pid``, in kB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


def fetch(port: int, path: str, timeout: float = 60.0) -> tuple[bytes, float]:
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        body: bytes = r.read()
    return body, time.perf_counter() - started


def status(port: int) -> dict[str, Any] | None:
    try:
        # A page of 0 use cases where the worker supports it (older ones ignore it).
        doc: dict[str, Any] = json.loads(fetch(port, "/status?use_cases_limit=0")[0])
        return doc
    except (OSError, ValueError):
        return None


def wait_for(port: int, check: Any, timeout: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = status(port)
        if doc is not None and check(doc):
            return doc
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


async def produce(bootstrap: str, topic: str, names: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks=1)
    await producer.start()
    try:
        start = time.time() - 660
        for n in range(names):
            use_case = f"flood-{n:07d}"
            doc = {
                "event_id": f"e{n}",
                "ts": start + n * 600 / names,
                "use_case": use_case,
                "model": "gpt-4o-mini",
                "input_tokens": 100,
                "output_tokens": 10,
                "cost_usd": 0.0001 * (1 + n % 97),
            }
            await producer.send(topic, orjson.dumps(doc), key=use_case.encode())
        await producer.flush()
    finally:
        await producer.stop()


class MetricsProbe(threading.Thread):
    """Fetches ``/metrics`` every 0.2 s; keeps the slowest answer."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.slowest = 0.0
        self.failures = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                _, took = fetch(self.port, "/metrics", timeout=30.0)
                self.slowest = max(self.slowest, took)
            except OSError:
                self.failures += 1
            self.done.wait(0.2)


def metric_sum(port: int, prefix: str) -> float:
    """Sum of the samples of ``/metrics`` whose line starts with ``prefix``.

    Progress is read here, not from ``/status``: on older versions ``/status``
    is megabytes under the flood and polling it would slow the worker down.
    """
    try:
        body, _ = fetch(port, "/metrics")
    except OSError:
        return -1.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.decode().splitlines()
        if line.startswith(prefix)
    )


def wait_metric(
    port: int, prefix: str, above: float, timeout: float, what: str, *, required: bool = True
) -> float:
    deadline = time.monotonic() + timeout
    value = above
    while time.monotonic() < deadline:
        value = metric_sum(port, prefix)
        if value > above:
            return value
        time.sleep(0.5)
    if required:
        raise SystemExit(f"timed out waiting for {what}")
    return value


def use_case_labels(metrics: bytes) -> int:
    values = set()
    for line in metrics.decode().splitlines():
        if line.startswith("spendsentry_events_total{") and 'use_case="' in line:
            values.add(line.split('use_case="', 1)[1].split('"', 1)[0])
    return len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        tmpdir = Path(tmp)
        names = write_topics(tmpdir / "topics.toml", f"card-{uuid.uuid4().hex[:8]}")
        (tmpdir / "policies").mkdir()
        port = free_port()
        log = open(tmpdir / "worker.log", "wb")  # noqa: SIM115 - closed below
        argv = [
            sys.executable, "-m", "spendsentry", "worker",
            "--broker", broker.bootstrap, "--web-port", str(port),
            "--topics", str(tmpdir / "topics.toml"), "--group", f"g-{uuid.uuid4().hex[:8]}",
            "--state-dir", str(tmpdir / "state"), "--policies", str(tmpdir / "policies"),
            "--snapshot-interval", "5",
        ]  # fmt: skip
        worker = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=tmpdir)
        try:
            wait_for(port, lambda s: len(s["assignment"]) >= 13, 120, "the group join")
            before = rss_kb(worker.pid)
            probe = MetricsProbe(port)
            probe.start()
            flood_started = time.monotonic()
            asyncio.run(produce(broker.bootstrap, names["usage"], args.names))
            records = f'spendsentry_records_total{{topic="{names["usage"]}"}}'
            wait_metric(port, records, args.names - 1, 1800, "the flood")
            consumed_s = time.monotonic() - flood_started
            # A snapshot write after the catch-up, and the next one if the
            # state still changes (the first may have been captured before).
            written = "spendsentry_snapshots_total"
            snapshots = wait_metric(port, written, -1, 60, "metrics")
            snapshots = wait_metric(port, written, snapshots, 600, "a write")
            wait_metric(port, written, snapshots, 20, "a second write", required=False)
            probe.done.set()
            probe.join()
            after = rss_kb(worker.pid)
            status_body, status_s = fetch(port, "/status")
            page_body, page_s = fetch(port, "/")
            metrics_body, metrics_s = fetch(port, "/metrics")
            snapshot_bytes = json.loads(status_body)["last_snapshot_bytes"]
            figures = {
                "names": args.names,
                "consumed_s": round(consumed_s, 1),
                "rss_before_mb": round(before["VmRSS"] / 1024),
                "rss_after_mb": round(after["VmRSS"] / 1024),
                "rss_peak_mb": round(after["VmHWM"] / 1024),
                "status_kb": round(len(status_body) / 1024, 1),
                "status_s": round(status_s, 3),
                "page_kb": round(len(page_body) / 1024, 1),
                "page_s": round(page_s, 3),
                "metrics_kb": round(len(metrics_body) / 1024, 1),
                "metrics_s": round(metrics_s, 3),
                "metrics_slowest_during_flood_s": round(probe.slowest, 3),
                "metrics_failed_during_flood": probe.failures,
                "use_case_label_values": use_case_labels(metrics_body),
                "last_snapshot_mb": round(snapshot_bytes / 2**20, 1),
            }
            print("FIGURES cardinality: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
        except BaseException:
            log.flush()
            print((tmpdir / "worker.log").read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        finally:
            if worker.poll() is None:
                os.kill(worker.pid, signal.SIGTERM)
                try:
                    worker.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()
            log.close()


if __name__ == "__main__":
    main()
