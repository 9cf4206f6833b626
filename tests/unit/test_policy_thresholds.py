"""Budget thresholds in policies: default 50/80/100 %, overridable, validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from spendsentry import cli
from spendsentry.policy import DEFAULT_THRESHOLDS, Budgets, PolicyError, PolicySet


def write(directory: Path, text: str) -> Path:
    path = directory / "x.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path) -> str:
    with pytest.raises(PolicyError) as info:
        PolicySet.load([path])
    return str(info.value)


def test_default_thresholds_are_half_four_fifths_and_all() -> None:
    assert DEFAULT_THRESHOLDS == (0.5, 0.8, 1.0)
    assert Budgets().thresholds == DEFAULT_THRESHOLDS
    policy = PolicySet.from_toml_text(
        "[use_cases.a.budgets]\ncost_per_day_usd = 100\n"
    ).for_use_case("a")
    assert policy.budgets.thresholds == (0.5, 0.8, 1.0)


def test_thresholds_are_read_from_the_budgets_table() -> None:
    text = "[use_cases.a.budgets]\ncost_per_day_usd = 100\nthresholds = [0.25, 0.9, 1, 1.2]\n"
    policy = PolicySet.from_toml_text(text).for_use_case("a")
    assert policy.budgets.thresholds == (0.25, 0.9, 1.0, 1.2)
    assert all(isinstance(t, float) for t in policy.budgets.thresholds)


def test_defaults_table_takes_thresholds_too() -> None:
    text = "[defaults.budgets]\ncost_per_day_usd = 10\nthresholds = [0.9]\n"
    assert PolicySet.from_toml_text(text).for_use_case("x").budgets.thresholds == (0.9,)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[0.5, 0]", "0 is less than or equal to the minimum of 0"),
        ("[0.5, 1.6]", "1.6 is greater than the maximum of 1.5"),
        ("[0.5, 0.5]", "has non-unique elements"),
        ("[]", "should be non-empty"),
        ("[0.8, 0.5]", "thresholds must be in rising order"),
        ('["half"]', "'half' is not of type 'number'"),
    ],
)
def test_bad_thresholds_are_rejected(tmp_path: Path, value: str, message: str) -> None:
    path = write(tmp_path, f"[use_cases.a.budgets]\ncost_per_day_usd = 1\nthresholds = {value}\n")
    error = error_of(path)
    assert "use_cases.a.budgets.thresholds" in error
    assert message in error


def test_policy_check_accepts_thresholds(tmp_path: Path) -> None:
    write(tmp_path, "[use_cases.a.budgets]\ncost_per_day_usd = 1\nthresholds = [0.5, 0.75, 1.0]\n")
    assert cli.main(["policy", "check", str(tmp_path)]) == 0


def test_policy_check_rejects_unsorted_thresholds(tmp_path: Path) -> None:
    write(tmp_path, "[use_cases.a.budgets]\ncost_per_day_usd = 1\nthresholds = [1.0, 0.5]\n")
    assert cli.main(["policy", "check", str(tmp_path)]) != 0
