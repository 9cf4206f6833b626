"""The image's entrypoint logic, run outside Docker (no image can be built here: the
base image is on a registry this machine does not reach).

The Dockerfile's ENV, USER, ENTRYPOINT, CMD and HEALTHCHECK are read from the file
and run as the image would run them: as an unprivileged user (``nobody`` when the
tests run as root), with the image's environment, in a copy of the image's working
directory. Two things are checked: an unwritable HOME gives a short message that says
what is wrong (the image used to have one), and with the image's HOME (writable,
created for the user) the worker starts its embedded broker and the health check,
on the port from the environment, passes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spendsentry.broker import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def instruction(name: str) -> list[str]:
    """Every ``name`` instruction's arguments, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.*)$", joined, re.M)]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in instruction("ENV"):
        for key, value in re.findall(r"(\w+)=(\S+)", line):
            env[key] = value
    return env


def exec_form(name: str) -> list[str]:
    (last,) = instruction(name)[-1:]
    argv: list[str] = json.loads(last)
    return argv


def drop_privileges() -> list[str]:
    """A prefix that runs a command as ``nobody`` when root (the image's user is not
    root); none when that user cannot run this checkout's Python (a private parent
    directory, as /root is): the command then runs as the current user."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        return []
    prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run(
        [*prefix, sys.executable, "-c", "import spendsentry.cli"],
        cwd="/", capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    return prefix if probe.returncode == 0 else []


def app_dir(tmp_path: Path) -> Path:
    """The image's /app as the Dockerfile lays it out (streams/ and examples/)."""
    app = tmp_path / "app"
    app.mkdir()
    for part in ("streams", "examples"):
        shutil.copytree(REPO / part, app / part)
    return app


@pytest.fixture
def box() -> Iterator[Path]:
    """A scratch directory the unprivileged user can reach (pytest's tmp_path sits
    under a directory only its owner may enter)."""
    path = Path(tempfile.mkdtemp(prefix="spendsentry-image-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_image(
    tmp_path: Path, home: Path, extra_env: dict[str, str], *args: str
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPENDSENTRY_", "CALF_"))}
    env |= image_env() | {"HOME": str(home)} | extra_env
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    argv = [*drop_privileges(), *exec_form("ENTRYPOINT"), *(args or exec_form("CMD"))]
    return subprocess.Popen(
        argv, cwd=app_dir(tmp_path), env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_the_image_runs_the_worker_with_its_web_settings_from_the_environment() -> None:
    env = image_env()
    assert exec_form("ENTRYPOINT") == ["spendsentry"] and exec_form("CMD") == ["worker"]
    assert env["SPENDSENTRY_WEB_HOST"] == "0.0.0.0" and "SPENDSENTRY_WEB_PORT" in env
    assert env["HOME"].startswith("/home/") and "--create-home" in DOCKERFILE
    assert "SPENDSENTRY_WEB_PORT" in instruction("HEALTHCHECK")[0]
    assert "6066/metrics" not in DOCKERFILE  # the port is the variable's
    assert instruction("USER")[-1] not in ("root", "0")
    assert "COPY examples ./examples" in DOCKERFILE
    # Dependencies (pinned) in a layer of their own, before the source is copied.
    deps = DOCKERFILE.index("-c constraints.txt -r")
    assert deps < DOCKERFILE.index("COPY src ./src") < DOCKERFILE.index("--no-deps")


@pytest.mark.timeout(60)
def test_an_unwritable_home_says_what_is_wrong_in_one_line(box: Path) -> None:
    tmp_path = box
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o555)
    if not drop_privileges() and os.geteuid() == 0:
        # Root writes through any mode: a HOME under a regular file is unwritable
        # to everyone.
        (tmp_path / "file").write_text("")
        home = tmp_path / "file" / "home"
    proc = run_image(tmp_path, home, {"SPENDSENTRY_WEB_PORT": str(free_port())})
    _out, err = proc.communicate(timeout=50)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 2, err.decode()
    assert len(lines) == 1 and "Traceback" not in lines[0]
    assert f"HOME ({home})" in lines[0] and "not writable" in lines[0]
    assert "CALF_TANSU_BIN" in lines[0] and "/proc" not in lines[0]


@pytest.mark.timeout(120)
def test_with_the_image_home_the_embedded_broker_starts_and_the_health_check_passes(
    box: Path,
) -> None:
    tmp_path = box
    home = tmp_path / "home"
    state = tmp_path / "state"
    for writable in (home, state):  # what useradd --create-home and chown give the user
        writable.mkdir()
        writable.chmod(0o777)
    port = free_port()
    proc = run_image(
        tmp_path, home, {"SPENDSENTRY_WEB_PORT": str(port), "SPENDSENTRY_STATE_DIR": str(state)}
    )
    healthcheck = instruction("HEALTHCHECK")[0].split("CMD", 1)[1].strip()
    check_argv = [sys.executable, *json.loads(healthcheck)[1:]]
    env = {**os.environ, "SPENDSENTRY_WEB_PORT": str(port)}
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
            done = subprocess.run(check_argv, env=env, capture_output=True, timeout=10)
            if done.returncode == 0:
                break
            assert time.monotonic() < deadline, "the health check never passed"
            time.sleep(1)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert (home / ".calfkit").is_dir()  # the broker binary went under the image's HOME
    assert b"Traceback" not in err
