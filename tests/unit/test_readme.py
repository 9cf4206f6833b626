"""The README's two set-up commands are the ones CI and users actually run."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from spendsentry.cli import main

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)\n```", README, re.S)


def test_readme_has_the_main_and_the_test_command_first():
    main_cmd, test_cmd = _bash_blocks()[:2]
    assert "pip install" in main_cmd and "spendsentry" in main_cmd
    assert "pip install" in test_cmd and "pytest" in test_cmd


def test_ci_runs_the_readme_test_command_verbatim():
    test_cmd = _bash_blocks()[1].strip()
    assert test_cmd in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_the_readme_main_command_runs(tmp_path, monkeypatch):
    main_cmd = _bash_blocks()[0]
    job = main_cmd.split("&&")[-1].strip()
    argv = shlex.split(job)
    assert argv[0].endswith("spendsentry")
    monkeypatch.chdir(ROOT)
    argv = [a.replace("out/", f"{tmp_path}/") for a in argv[1:]]
    assert main([*argv, "--quiet"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["accepted"] > 100_000
    assert summary["rejected"] == {
        "bad_timestamp": 1,
        "invalid_value": 1,
        "missing_field": 1,
        "negative_value": 1,
        "not_json": 1,
    }
    alerts = [json.loads(line) for line in (tmp_path / "alerts.jsonl").open()]
    kinds = {a["kind"] for a in alerts}
    assert {"cost_spike", "agent_chatter", "retrieval_amplification"} <= kinds
    letters = (tmp_path / "deadletter.jsonl").read_text().splitlines()
    assert len(letters) == 5


def _commands_section() -> str:
    return README.split("## Commands\n", 1)[1].split("\n## ", 1)[0]


def test_every_command_is_in_the_readme_commands_section():
    from spendsentry.cli import COMMANDS

    section = _commands_section()
    missing = [name for name in COMMANDS if f"`spendsentry {name}" not in section]
    assert not missing, f"not in README's Commands section: {missing}"


def test_the_readme_documents_the_exit_codes():
    section = _commands_section()
    for code, meaning in (("0", "ok"), ("1", "runtime failure"), ("2", "usage or configuration")):
        assert re.search(rf"`{code}`[^|\n]*{meaning}", section), f"exit code {code} ({meaning})"
