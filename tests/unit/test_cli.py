"""One style for every command: help with defaults, usage errors, a taken web port."""

from __future__ import annotations

import contextlib
import io
import os
import re
import socket
import subprocess
import sys

import pytest

from spendsentry.cli import COMMANDS, main

# Sub-commands with actions of their own are checked per action.
_NESTED = {"policy": ["check"], "throttle": ["list", "release"]}


def _help(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> str:
    # Wide columns: one line per option is easier to read back.
    monkeypatch.setenv("COLUMNS", "400")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return out.getvalue()


def _option_entries(text: str) -> list[str]:
    """Each option's entry of the ``options:`` section, continuation lines joined."""
    section = text.split("options:\n", 1)[1]
    entries: list[str] = []
    for line in section.splitlines():
        if re.match(r"^  -", line):
            entries.append(line.strip())
        elif line.startswith("    ") and entries:
            entries[-1] += "  " + line.strip()
        elif line.strip() and not line.startswith(" "):
            break  # the next section (an argument group's title)
    return entries


def _all_commands() -> list[list[str]]:
    argvs: list[list[str]] = []
    for name in COMMANDS:
        argvs.extend([[name, action] for action in _NESTED.get(name, [])] or [[name]])
    return argvs


@pytest.mark.parametrize("argv", _all_commands(), ids=" ".join)
def test_every_option_has_help_and_shows_its_default_or_is_a_flag(argv, monkeypatch):
    text = _help(argv, monkeypatch)
    entries = [e for e in _option_entries(text) if not e.startswith("-h, --help")]
    assert entries or argv == ["policy", "check"] or argv == ["broker"], text
    for entry in entries:
        # "--name METAVAR  help text": a flag has no metavar after its names.
        head = re.split(r"\s{2,}", entry, maxsplit=1)
        assert len(head) == 2 and head[1].strip(), f"{' '.join(argv)}: no help for {entry!r}"
        names, help_text = head
        is_flag = all(part.startswith("-") for part in names.replace(",", " ").split())
        shows_default = "default" in help_text.lower() or "required" in help_text.lower()
        assert is_flag or shows_default, f"{' '.join(argv)}: no default shown in {entry!r}"


def test_the_worker_help_shows_the_values_of_its_defaults(monkeypatch):
    monkeypatch.delenv("SPENDSENTRY_STATE_DIR", raising=False)
    entries = {e.split()[0]: e for e in _option_entries(_help(["worker"], monkeypatch))}
    assert "6066" in entries["--web-port"]
    assert "5000" in entries["--max-batch"]
    assert "INFO" in entries["--log-level"]
    assert ".spendsentry-state" in entries["--state-dir"]
    assert "(default: spendsentry)" in entries["--group"]


def test_throttle_without_an_action_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["throttle"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: spendsentry throttle")
    assert "ACTION" in err


def test_policy_and_throttle_answer_a_missing_action_alike(capsys):
    codes = []
    for name in ("policy", "throttle"):
        with pytest.raises(SystemExit) as exit_info:
            main([name])
        codes.append(exit_info.value.code)
        assert "required: ACTION" in capsys.readouterr().err
    assert codes == [2, 2]


def test_a_worker_on_a_taken_web_port_says_so_in_two_lines_and_exits_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "SPENDSENTRY_STATE_DIR": str(tmp_path)}
        # Port 1 on loopback: nothing listens there, and no broker is ever reached.
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "spendsentry.cli",
                "worker",
                "--broker",
                "127.0.0.1:1",
                "--web-port",
                str(port),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            _out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 2, err
    assert str(port) in err and "--web-port" in err


def test_throttle_against_an_unreachable_broker_is_a_runtime_failure(monkeypatch, capsys):
    monkeypatch.setenv("SPENDSENTRY_THROTTLE_KEY", "k" * 32)
    code = main(["throttle", "list", "--broker", "127.0.0.1:1", "--timeout", "2"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.startswith("spendsentry throttle:") and len(err.strip().splitlines()) <= 2
