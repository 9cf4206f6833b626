"""A worker started as docker-compose starts it publishes signed throttle commands.

No Docker engine here: ``docker-compose config`` resolves the file (with the
shell's SPENDSENTRY_THROTTLE_KEY unset, as out of the box), and the test runs
worker-1's command line with the image's environment (the Dockerfile's ENV) and
worker-1's, in the image's working directory (the repository: policies from
``streams/``, as compose mounts them), only pointed at the embedded broker, a free
web port, a temporary state directory and a topic prefix of its own.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from test_image_entrypoint import image_env
from test_throttle_e2e import spike_traffic, wait_until, write_topics

from spendsentry.actions import ThrottleKeys, verify
from spendsentry.broker import EmbeddedBroker, free_port
from spendsentry.client import UsageReporter, read_latest

yaml = pytest.importorskip("yaml", reason="pyyaml is in the [dev] extra")

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def compose_worker() -> tuple[dict[str, str], list[str]]:
    """worker-1's environment and command as docker-compose resolves them."""
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose is not installed (CI installs it with apt; see .ci/run)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDSENTRY_")}
    done = subprocess.run(
        [tool, "-f", "docker-compose.yml", "config"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    service: dict[str, Any] = yaml.safe_load(done.stdout)["services"]["worker-1"]
    return {k: str(v) for k, v in service["environment"].items()}, list(service["command"])


@pytest.mark.timeout(180)
def test_a_worker_started_as_compose_starts_it_publishes_signed_commands(
    broker: EmbeddedBroker, unique_name: Any, tmp_path: Path
) -> None:
    compose_env, command = compose_worker()
    key = compose_env.get("SPENDSENTRY_THROTTLE_KEY")
    assert key, "compose gives the workers no throttle key"
    names = write_topics(tmp_path / "topics.toml", unique_name("t"))
    argv = [*command, "--topics", str(tmp_path / "topics.toml"), "--idle-partition", "2"]
    # The image's environment (Dockerfile ENV), then the service's, then where
    # this machine differs: the broker, a free web port, a state directory.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDSENTRY_")}
    env |= (
        image_env()
        | compose_env
        | {
            "HOME": os.environ.get("HOME", str(tmp_path)),
            "SPENDSENTRY_BROKER": broker.bootstrap,
            "SPENDSENTRY_STATE_DIR": str(tmp_path / "state"),
            "SPENDSENTRY_WEB_PORT": str(free_port()),
        }
    )
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "spendsentry", *argv], cwd=REPO, env=env,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            start = float(int(time.time() // 60 * 60) - 120 * 60)
            events = spike_traffic(start, 112)
            reporter = UsageReporter(broker.bootstrap, topic=names["usage"], batch_size=100)
            reporter.start_background()
            try:
                assert all(reporter.report(e) for e in events)
                wait_until(lambda: reporter.counts["sent"] == len(events), 30, "the reporter")
            finally:
                reporter.close()

            def published() -> dict[str, Any]:
                assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
                return asyncio.run(
                    read_latest(broker.bootstrap, names["throttle"], keys=ThrottleKeys.of(key))
                )

            latest: dict[str, Any] = {}

            def some_command() -> bool:
                latest.update(published())
                return "support_chat" in latest

            wait_until(some_command, 120, "a throttle command for support_chat")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    doc, verified = latest["support_chat"]
    assert verified and verify(doc, [key]) and doc["signature"]
    text = log_path.read_text(errors="replace")
    # The default key is in the compose file for anyone to read: the worker says so.
    assert "docker-compose default key" in text and key not in text
