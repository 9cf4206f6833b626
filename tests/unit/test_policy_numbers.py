"""Policy numbers: NaN, infinities and absurd values never get past validation.

TOML has ``nan`` and ``inf``, and JSON Schema's minimum/maximum comparisons are
false for NaN, so a schema alone lets ``max_duration_s = nan`` through; the
worker then died at its first throttle. Every numeric key is tried here with
each non-finite value, through ``spendsentry policy check`` and through
loading, and a property test drives the planner with any policy that passes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from spendsentry import cli
from spendsentry.actions import Baseline, ThrottleKeys, ThrottlePlanner
from spendsentry.alerts import Alert
from spendsentry.contracts import validate
from spendsentry.policy import AUTO_THROTTLE_ENV, Policy, PolicyError, PolicySet

ROOT = Path(__file__).resolve().parents[2]
T0 = 1793610000.0

#: Every numeric key a policy file can hold: (table, base table content, key).
#: The base content makes the table valid without the key under test.
_USE_CASE = "use_cases.support_chat"
_TABLES: list[tuple[str, str, list[str]]] = [
    (table, "", ["cooldown_s", "max_duration_s"]) for table in ("defaults", _USE_CASE)
] + [
    (
        f"{table}.budgets",
        "",
        ["cost_per_hour_usd", "cost_per_day_usd", "cost_per_month_usd", "tokens_per_minute"],
    )
    for table in ("defaults", _USE_CASE)
]
_TABLES += [
    (f"{table}.detectors.cost_spike", "", ["sensitivity"]) for table in ("defaults", _USE_CASE)
]
_TABLES += [(f"{_USE_CASE}.cost_per_outcome", 'outcome = "ticket_resolved"\n', ["target_usd"])]
_LADDER = {
    "requests_per_minute": 'at = "warning"\naction = "limit_rate"\ntokens_per_minute = 1000\n',
    "tokens_per_minute": 'at = "warning"\naction = "limit_rate"\nrequests_per_minute = 60\n',
    "max_input_tokens": 'at = "warning"\naction = "cap_input_tokens"\n',
}

NUMERIC_KEYS: list[tuple[str, str]] = [
    (f"[{table}]\n{base}{key} = {{value}}\n", f"{table}.{key}")
    for table, base, keys in _TABLES
    for key in keys
] + [
    (f"[[{table}.ladder]]\n{base}{key} = {{value}}\n", f"{table}.ladder[0].{key}")
    for table in ("defaults", _USE_CASE)
    for key, base in _LADDER.items()
]
NON_FINITE = ["nan", "inf", "-inf"]


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(AUTO_THROTTLE_ENV, raising=False)


def _policy_dir(tmp_path: Path, template: str, value: str) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "bad.toml").write_text(template.format(value=value), encoding="utf-8")
    return directory


@pytest.mark.parametrize("value", NON_FINITE)
@pytest.mark.parametrize(("template", "key"), NUMERIC_KEYS, ids=[k for _, k in NUMERIC_KEYS])
def test_policy_check_rejects_a_non_finite_number_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], template: str, key: str, value: str
) -> None:
    directory = _policy_dir(tmp_path, template, value)
    assert cli.main(["policy", "check", str(directory)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [f"{directory / 'bad.toml'}: {key}: {value} is not a finite number"]


@pytest.mark.parametrize("value", NON_FINITE)
@pytest.mark.parametrize(("template", "key"), NUMERIC_KEYS, ids=[k for _, k in NUMERIC_KEYS])
def test_loading_rejects_a_non_finite_number_naming_file_and_key(
    tmp_path: Path, template: str, key: str, value: str
) -> None:
    directory = _policy_dir(tmp_path, template, value)
    with pytest.raises(PolicyError) as info:
        PolicySet.load(directory)
    assert info.value.errors == (
        f"{directory / 'bad.toml'}: {key}: {value} is not a finite number",
    )


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        # Shorter than a float can tell apart from its issue time: the first
        # throttle raised "a command must expire after it is issued".
        ("[defaults]\nmax_duration_s = 1e-9\n", "defaults.max_duration_s: 1e-09 is less than"),
        ("[defaults]\ncooldown_s = 1e300\n", "defaults.cooldown_s: 1e+300 is greater than"),
        # More than 64 bits: orjson cannot write the throttle command.
        (
            '[[defaults.ladder]]\nat = "critical"\naction = "limit_rate"\n'
            "requests_per_minute = 100000000000000000000\n",
            "defaults.ladder[0].requests_per_minute: 100000000000000000000 is greater than",
        ),
        (
            "[defaults.budgets]\ntokens_per_minute = 100000000000000000000\n",
            "defaults.budgets.tokens_per_minute: 100000000000000000000 is greater than",
        ),
        (
            "[defaults.detectors.cost_spike]\nsensitivity = 1e-300\n",
            "defaults.detectors.cost_spike.sensitivity: 1e-300 is less than",
        ),
        (
            '[use_cases.a.cost_per_outcome]\noutcome = "x"\ntarget_usd = 5e-324\n',
            "use_cases.a.cost_per_outcome.target_usd: 5e-324 is less than",
        ),
    ],
)
def test_finite_but_absurd_numbers_are_rejected(
    tmp_path: Path, template: str, expected: str
) -> None:
    with pytest.raises(PolicyError) as info:
        PolicySet.from_toml_text(template, "x.toml")
    assert len(info.value.errors) == 1
    assert info.value.errors[0].startswith(f"x.toml: {expected}"), info.value.errors


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_duration_s": math.nan},
        {"cooldown_s": math.inf},
        {"cost_per_outcome_target_usd": math.nan},
    ],
)
def test_a_policy_built_in_code_is_checked_too(kwargs: dict[str, Any]) -> None:
    with pytest.raises(PolicyError, match="is not a finite number"):
        Policy(use_case="a", **kwargs)


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop(AUTO_THROTTLE_ENV, None)
    return subprocess.run(
        [sys.executable, "-m", "spendsentry", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
        check=False,
    )


@pytest.mark.parametrize("command", ["replay", "worker"])
def test_replay_and_worker_refuse_to_start_with_a_clear_message(
    tmp_path: Path, command: str
) -> None:
    directory = _policy_dir(tmp_path, "[defaults]\nmax_duration_s = {value}\n", "nan")
    events = tmp_path / "events.jsonl"
    events.write_text("", encoding="utf-8")
    if command == "replay":
        args = ["replay", "--policies", str(directory), "--quiet", str(events)]
    else:
        # Policies are read before the broker is dialled: nothing listens here.
        args = ["worker", "--policies", str(directory), "--broker", "127.0.0.1:9"]
    done = _run_cli(*args)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert (
        f"spendsentry {command}: {directory / 'bad.toml'}: defaults.max_duration_s: "
        "nan is not a finite number"
    ) in done.stderr


# -- the planner survives every policy that passes validation ----------------------------

_EDGE_NUMBERS = st.sampled_from([
    math.nan, math.inf, -math.inf, 0, 1, -1, 0.0, -0.0, 5e-324, 1e-9, 0.5, 59.9, 600,
    604800, 604801, 1e12, 1e12 + 1, 2**53, 2**63, 2**64, 1e300,
])  # fmt: skip
_ANY_NUMBERS = st.one_of(
    _EDGE_NUMBERS,
    _EDGE_NUMBERS,
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
)
# Numbers every numeric key accepts (integral ones: integer keys take 3.0 too).
_PLAUSIBLE = st.integers(1, 10) | st.integers(1, 10).map(float)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return json.dumps(value)
    return repr(value)  # nan, inf, -inf, 1e+300 and 5e-324 are all TOML


def _table_text(header: str, table: dict[str, Any]) -> str:
    lines = [header] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


@st.composite
def _policy_text(draw: st.DrawFn) -> str:
    """A policy file: [defaults] and one use case, every numeric key optional.

    One number (at a drawn position, maybe none) comes from anywhere at all,
    edge cases first, the others are plausible: a file with several wild
    numbers is almost always rejected for one of them, and would seldom
    reach the planner with the others.
    """
    wild_at = draw(st.integers(0, 24))
    drawn = 0

    def number() -> Any:
        nonlocal drawn
        drawn += 1
        return draw(_ANY_NUMBERS if drawn == wild_at else _PLAUSIBLE)

    text = ""
    for table in ("defaults", _USE_CASE):
        top: dict[str, Any] = {"auto_throttle": draw(st.sampled_from(["on", "dry_run"]))}
        for key in draw(st.sets(st.sampled_from(["cooldown_s", "max_duration_s", "tier"]))):
            top[key] = (
                draw(st.sampled_from(["production", "experiment"])) if key == "tier" else number()
            )
        text += _table_text(f"[{table}]", top)
        budget_keys = [
            "cost_per_hour_usd",
            "cost_per_day_usd",
            "cost_per_month_usd",
            "tokens_per_minute",
        ]
        budgets = {key: number() for key in sorted(draw(st.sets(st.sampled_from(budget_keys))))}
        if budgets:
            text += _table_text(f"[{table}.budgets]", budgets)
        for kind in sorted(draw(st.sets(st.sampled_from(["cost_spike", "budget_burn"])))):
            text += _table_text(f"[{table}.detectors.{kind}]", {"sensitivity": number()})
        if table == _USE_CASE and draw(st.booleans()):
            outcome = {"outcome": "ticket_resolved", "target_usd": number()}
            text += _table_text(f"[{table}.cost_per_outcome]", outcome)
        severities = st.sampled_from(["info", "warning", "critical"])
        for at in draw(st.lists(severities, min_size=1, unique=True)):
            actions = ["none", "limit_rate", "route_model", "cap_input_tokens", "block"]
            action = draw(st.sampled_from(actions))
            step: dict[str, Any] = {"at": at, "action": action}
            if action == "limit_rate":
                rates = ["requests_per_minute", "tokens_per_minute"]
                for name in sorted(draw(st.sets(st.sampled_from(rates), min_size=1))):
                    step[name] = number()
            elif action == "route_model":
                step["target_model"] = "gpt-4o-mini"
            elif action == "cap_input_tokens":
                step["max_input_tokens"] = number()
            text += _table_text(f"[[{table}.ladder]]", step)
    return text


_ALERTS = st.lists(
    st.tuples(
        st.sampled_from(["info", "warning", "critical"]),
        st.sampled_from(["firing", "escalated", "resolved"]),
        st.floats(min_value=0, max_value=7 * 86400),  # seconds after T0
    ),
    min_size=1,
    max_size=8,
)
_BASELINES = st.one_of(
    st.none(),
    st.builds(
        Baseline,
        st.floats(min_value=0, max_value=1e7),
        st.floats(min_value=0, max_value=1e10),
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=_policy_text(),
    alerts=_ALERTS,
    baseline=_BASELINES,
)
def test_the_planner_survives_every_policy_that_passes_validation(
    text: str, alerts: list[tuple[str, str, float]], baseline: Baseline | None
) -> None:
    try:
        policies = PolicySet.from_toml_text(text, "fuzz.toml")
    except PolicyError as exc:
        assert all(line.startswith("fuzz.toml: ") for line in exc.errors)
        event("rejected")
        return
    keys = ThrottleKeys.of("k")
    for use_case in ("support_chat", "no_policy"):
        policy = policies.for_use_case(use_case)
        planner = ThrottlePlanner()
        for i, (severity, status, offset) in enumerate(alerts):
            alert = Alert(
                f"{i % 2:016x}", "cost_spike", use_case, severity, status,
                T0 + offset, T0, "cost x4", {}, 2.0,
            )  # fmt: skip
            cmd = planner.plan(alert, policy, baseline)
            if cmd is None:
                continue
            event(f"command {cmd.action}")
            message = cmd.to_dict(keys)
            assert validate("throttle-command", message) == []
            orjson.loads(orjson.dumps(message))
