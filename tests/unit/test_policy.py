"""Policy files: loading, error messages that name file and key, defaults, pickling, CLI."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest

from spendsentry import cli
from spendsentry.contracts import ALERT_KINDS
from spendsentry.policy import (
    AUTO_THROTTLE_ENV,
    DEFAULT_LADDER,
    Budgets,
    DetectorSetting,
    LadderStep,
    Policy,
    PolicyError,
    PolicySet,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "streams" / "policies"

SIMULATED_USE_CASES = {
    "support_chat": "ticket_resolved",
    "claims_triage": "claim_triaged",
    "underwriting_rag": "underwriting_decision",
    "code_assistant": None,
    "research_agent": None,
    "sales_email_drafts": None,
    "doc_embeddings": None,
    "kb_search_rag": "answer_accepted",
    "ops_agent": None,
    "summarizer_batch": None,
    "translation": None,
    "lab_experiments": None,
}

SUPPORT_CHAT = """
[use_cases.support_chat]
owner = "#support-ai-oncall"
auto_throttle = "on"
[use_cases.support_chat.budgets]
cost_per_hour_usd = 40.0
[[use_cases.support_chat.ladder]]
at = "warning"
action = "limit_rate"
requests_per_minute = 600
[[use_cases.support_chat.ladder]]
at = "critical"
action = "route_model"
target_model = "gpt-4o-mini"
"""


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's shell must not change what these tests see.
    monkeypatch.delenv(AUTO_THROTTLE_ENV, raising=False)


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(*paths: Path) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        PolicySet.load(list(paths))
    return info.value


# -- the shipped policies ----------------------------------------------------------


def test_shipped_policies_are_valid_and_cover_the_simulated_use_cases() -> None:
    policies = PolicySet.load(SHIPPED)
    assert set(policies.use_cases) == set(SIMULATED_USE_CASES)
    assert 3 <= len(policies.files) <= 4
    for use_case, outcome in SIMULATED_USE_CASES.items():
        policy = policies.for_use_case(use_case)
        assert policy.explicit
        assert policy.owner
        assert policy.outcome == outcome
    assert policies.for_use_case("lab_experiments").tier == "experiment"
    for use_case in ("support_chat", "claims_triage", "underwriting_rag"):
        budgets = policies.for_use_case(use_case).budgets
        assert budgets.cost_per_hour_usd and budgets.cost_per_day_usd


def test_shipped_policies_match_the_simulator() -> None:
    simulate = pytest.importorskip("spendsentry.simulate")
    policies = PolicySet.load(SHIPPED)
    assert set(policies.use_cases) == set(simulate.USE_CASES)
    for policy in policies:
        shape = simulate.USE_CASES[policy.use_case]
        assert policy.team == shape.team
        if policy.outcome is not None:
            assert policy.outcome == shape.outcome


def test_shipped_topics_file() -> None:
    import tomllib

    topics = tomllib.loads((ROOT / "streams" / "topics.toml").read_text())["topics"]
    by_name = {t["name"]: t for t in topics.values()}
    assert {name: t["partitions"] for name, t in by_name.items()} == {
        "ai.usage": 12,
        "ai.outcomes": 12,
        "ai.alerts": 3,
        "ai.throttle": 3,
        "ai.deadletter": 3,
        "ai.control": 1,
        "ai.state": 12,
    }
    assert by_name["ai.state"]["config"]["cleanup.policy"] == "compact"
    assert by_name["ai.throttle"]["config"]["cleanup.policy"] == "compact"
    assert by_name["ai.usage"]["config"]["retention.ms"] == str(7 * 86400 * 1000)
    assert by_name["ai.deadletter"]["config"]["retention.ms"] == str(14 * 86400 * 1000)


def test_loaded_values() -> None:
    policy = PolicySet.from_toml_text(SUPPORT_CHAT).for_use_case("support_chat")
    assert policy.owner == "#support-ai-oncall"
    assert policy.auto_throttle == "on"
    assert policy.budgets == Budgets(cost_per_hour_usd=40.0)
    assert policy.ladder == (
        LadderStep("warning", "limit_rate", requests_per_minute=600),
        LadderStep("critical", "route_model", target_model="gpt-4o-mini"),
    )
    assert policy.tier == "production"
    assert policy.cooldown_s == 600.0
    assert policy.max_duration_s == 3600.0


def test_toml_integers_become_floats_and_integral_floats_ints() -> None:
    text = """
[use_cases.a]
cooldown_s = 60
[use_cases.a.budgets]
cost_per_hour_usd = 3
tokens_per_minute = 2e6
"""
    policy = PolicySet.from_toml_text(text).for_use_case("a")
    assert isinstance(policy.cooldown_s, float)
    assert isinstance(policy.budgets.cost_per_hour_usd, float)
    assert policy.budgets.tokens_per_minute == 2_000_000
    assert isinstance(policy.budgets.tokens_per_minute, int)


# -- errors name the file and the key ---------------------------------------------


def test_typo_key(tmp_path: Path) -> None:
    path = write(tmp_path, "x.toml", "[use_cases.support_chat.budget]\ncost_per_hour_usd = 3\n")
    error = load_error(tmp_path)
    assert error.errors == (
        f"{path}: use_cases.support_chat.budget: unknown key; did you mean 'budgets'?",
    )


def test_negative_budget(tmp_path: Path) -> None:
    path = write(tmp_path, "x.toml", "[use_cases.support_chat.budgets]\ncost_per_hour_usd = -3\n")
    assert str(load_error(path)) == (
        f"{path}: use_cases.support_chat.budgets.cost_per_hour_usd: "
        "-3 is less than the minimum of 0"
    )


def test_bad_enum(tmp_path: Path) -> None:
    path = write(tmp_path, "x.toml", '[use_cases.support_chat]\nauto_throttle = "yes"\n')
    (line,) = load_error(path).errors
    assert line.startswith(f"{path}: use_cases.support_chat.auto_throttle: 'yes' is not one of")


def test_route_model_without_target_model(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "x.toml",
        '[[use_cases.support_chat.ladder]]\nat = "critical"\naction = "route_model"\n',
    )
    assert load_error(path).errors == (
        f"{path}: use_cases.support_chat.ladder[0].target_model: "
        "missing (route_model needs target_model)",
    )


def test_limit_rate_without_a_limit(tmp_path: Path) -> None:
    path = write(
        tmp_path, "x.toml", '[[use_cases.a.ladder]]\nat = "warning"\naction = "limit_rate"\n'
    )
    (line,) = load_error(path).errors
    assert line.startswith(f"{path}: use_cases.a.ladder[0]: limit_rate needs")


def test_two_ladder_steps_at_one_severity(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "x.toml",
        '[[use_cases.a.ladder]]\nat = "warning"\naction = "none"\n'
        '[[use_cases.a.ladder]]\nat = "warning"\naction = "block"\n',
    )
    assert load_error(path).errors == (
        f"{path}: use_cases.a.ladder[1].at: 'warning' is already used by ladder[0]",
    )


def test_duplicate_use_case_across_files_names_both(tmp_path: Path) -> None:
    first = write(tmp_path, "a.toml", '[use_cases.support_chat]\nowner = "#a"\n')
    second = write(tmp_path, "b.toml", '[use_cases.support_chat]\nowner = "#b"\n')
    error = load_error(tmp_path)
    assert error.errors == (f"{second}: use_cases.support_chat: already defined in {first}",)


def test_defaults_in_two_files(tmp_path: Path) -> None:
    first = write(tmp_path, "a.toml", '[defaults]\ntier = "production"\n')
    second = write(tmp_path, "b.toml", '[defaults]\ntier = "production"\n')
    assert load_error(tmp_path).errors == (f"{second}: defaults: already defined in {first}",)


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "x.toml", "[use_cases.a\n")
    (line,) = load_error(path).errors
    assert line.startswith(f"{path}: invalid TOML:")


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert load_error(missing).errors == (f"{missing}: no such file or directory",)


def test_every_problem_in_every_file_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", '[use_cases.a]\ntier = "prod"\nownr = "#x"\n')
    write(tmp_path, "b.toml", "[use_cases.b.budgets]\ncost_per_day_usd = -1\n")
    errors = load_error(tmp_path).errors
    assert len(errors) == 3
    assert [e.split(":")[0] for e in errors] == [
        str(tmp_path / "a.toml"),
        str(tmp_path / "a.toml"),
        str(tmp_path / "b.toml"),
    ]


def test_quoted_use_case_names_are_quoted_in_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "x.toml", '[use_cases."kb search".budgets]\ncost_per_hour_usd = -1\n')
    (line,) = load_error(path).errors
    assert line.startswith(f'{path}: use_cases."kb search".budgets.cost_per_hour_usd:')


def test_policy_error_is_a_value_error_and_pickles() -> None:
    error = PolicyError(["a: x", "b: y"])
    assert isinstance(error, ValueError)
    assert str(error) == "a: x\nb: y"
    assert pickle.loads(pickle.dumps(error)).errors == ("a: x", "b: y")


# -- loading ------------------------------------------------------------------------


def test_directory_loads_toml_files_in_name_order_only(tmp_path: Path) -> None:
    write(tmp_path, "b.toml", "[use_cases.b]\n")
    write(tmp_path, "a.toml", "[use_cases.a]\n")
    write(tmp_path, "notes.md", "not a policy")
    write(tmp_path / "sub", "c.toml", "[use_cases.c]\n")
    policies = PolicySet.load(str(tmp_path))
    assert policies.files == (str(tmp_path / "a.toml"), str(tmp_path / "b.toml"))
    assert policies.use_cases == ("a", "b")


def test_same_file_given_twice_is_loaded_once(tmp_path: Path) -> None:
    path = write(tmp_path, "a.toml", "[use_cases.a]\n")
    assert len(PolicySet.load([tmp_path, path])) == 1


def test_empty_directory_is_an_empty_set(tmp_path: Path) -> None:
    policies = PolicySet.load(tmp_path)
    assert len(policies) == 0
    assert not policies.for_use_case("x").explicit


def test_iteration_and_membership(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", "[use_cases.zeta]\n[use_cases.alpha]\n")
    policies = PolicySet.load(tmp_path)
    assert [p.use_case for p in policies] == ["alpha", "zeta"]
    assert len(policies) == 2
    assert "alpha" in policies and "other" not in policies
    assert all(p.explicit for p in policies)


# -- defaults and the environment variable -------------------------------------------


def test_unknown_use_case_gets_the_builtin_defaults() -> None:
    policy = PolicySet.empty().for_use_case("new_thing")
    assert policy == Policy(use_case="new_thing", auto_throttle="dry_run")
    assert not policy.explicit
    assert policy.ladder == DEFAULT_LADDER


def test_for_use_case_is_cached() -> None:
    policies = PolicySet.empty()
    assert policies.for_use_case("x") is policies.for_use_case("x")


def test_defaults_table_applies_to_unknown_use_cases_only() -> None:
    policies = PolicySet.from_toml_text(
        '[defaults]\nowner = "#platform"\nauto_throttle = "off"\ncooldown_s = 60\n'
        '[use_cases.known]\nteam = "t"\n'
    )
    unknown = policies.for_use_case("unknown")
    assert (unknown.owner, unknown.auto_throttle, unknown.cooldown_s) == ("#platform", "off", 60.0)
    known = policies.for_use_case("known")
    assert (known.owner, known.auto_throttle, known.cooldown_s) == (None, "dry_run", 600.0)


@pytest.mark.parametrize("value", ["off", "dry_run", "on", " ON "])
def test_env_var_sets_auto_throttle_of_unknown_use_cases(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(AUTO_THROTTLE_ENV, value)
    expected = value.strip().lower()
    assert PolicySet.empty().for_use_case("x").auto_throttle == expected
    loaded = PolicySet.from_toml_text(SUPPORT_CHAT)
    assert loaded.for_use_case("x").auto_throttle == expected
    # A use case with its own policy is not affected.
    assert loaded.for_use_case("support_chat").auto_throttle == "on"


def test_env_var_is_read_once_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AUTO_THROTTLE_ENV, "on")
    policies = PolicySet.empty()
    monkeypatch.setenv(AUTO_THROTTLE_ENV, "off")
    assert policies.for_use_case("x").auto_throttle == "on"


def test_empty_env_var_means_dry_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AUTO_THROTTLE_ENV, "")
    assert PolicySet.empty().for_use_case("x").auto_throttle == "dry_run"


def test_invalid_env_var_raises(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(AUTO_THROTTLE_ENV, "yes")
    with pytest.raises(PolicyError, match=AUTO_THROTTLE_ENV):
        PolicySet.empty()
    write(tmp_path, "a.toml", "[use_cases.a]\n")
    assert load_error(tmp_path).errors == (
        f"{AUTO_THROTTLE_ENV}: 'yes' is not one of off, dry_run, on",
    )


def test_defaults_table_wins_over_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AUTO_THROTTLE_ENV, "on")
    policies = PolicySet.from_toml_text('[defaults]\nauto_throttle = "off"\n')
    assert policies.for_use_case("x").auto_throttle == "off"
    # When [defaults] sets it, the variable is not consulted, so even a bad value is harmless.
    monkeypatch.setenv(AUTO_THROTTLE_ENV, "bogus")
    PolicySet.from_toml_text('[defaults]\nauto_throttle = "off"\n')


def test_defaults_table_without_auto_throttle_uses_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AUTO_THROTTLE_ENV, "off")
    policies = PolicySet.from_toml_text('[defaults]\nowner = "#platform"\n')
    assert policies.for_use_case("x").auto_throttle == "off"
    assert policies.for_use_case("x").owner == "#platform"


# -- Policy behaviour -------------------------------------------------------------


def test_step_for_picks_the_highest_step_at_or_below() -> None:
    policy = Policy(
        use_case="a",
        ladder=(
            LadderStep("critical", "block"),
            LadderStep("warning", "limit_rate", requests_per_minute=10),
        ),
    )
    assert policy.ladder[0].at == "warning"  # sorted on construction
    assert policy.step_for("info") is None
    step = policy.step_for("warning")
    assert step is not None and step.action == "limit_rate"
    step = policy.step_for("critical")
    assert step is not None and step.action == "block"
    only_warning = Policy(use_case="b", ladder=(LadderStep("warning", "none"),))
    step = only_warning.step_for("critical")
    assert step is not None and not step.throttles
    with pytest.raises(ValueError, match="severity"):
        policy.step_for("high")


def test_default_ladder() -> None:
    policy = Policy(use_case="a")
    step = policy.step_for("warning")
    assert step is not None and step.action == "none"
    step = policy.step_for("critical")
    assert step is not None and step.action == "limit_rate" and step.params() == {}


def test_experiments_are_never_throttled() -> None:
    policy = Policy(use_case="lab", tier="experiment", ladder=(LadderStep("info", "block"),))
    assert policy.step_for("critical") is None
    assert policy.max_severity == "info"
    assert Policy(use_case="prod").max_severity == "critical"


def test_detector_settings() -> None:
    policy = PolicySet.from_toml_text(
        "[use_cases.a.detectors]\n"
        "prompt_inflation = { sensitivity = 1.5 }\n"
        "embedding_duplication = { enabled = false }\n"
    ).for_use_case("a")
    assert policy.detector("prompt_inflation") == DetectorSetting(True, 1.5)
    assert policy.detector("embedding_duplication") == DetectorSetting(False, 1.0)
    assert policy.detector("cost_spike") == DetectorSetting()
    with pytest.raises(ValueError, match="prompt_inflaton"):
        policy.detector("prompt_inflaton")
    for kind in ALERT_KINDS:
        policy.detector(kind)


def test_ladder_step_params() -> None:
    step = LadderStep("warning", "limit_rate", requests_per_minute=60, tokens_per_minute=9000)
    assert step.params() == {"requests_per_minute": 60, "tokens_per_minute": 9000}
    assert LadderStep("critical", "block").params() == {}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tier": "prod"},
        {"auto_throttle": "yes"},
        {"detectors": {"nope": DetectorSetting()}},
        {"ladder": (LadderStep("warning", "none"), LadderStep("warning", "block"))},
        {"max_duration_s": 0},
    ],
)
def test_policy_construction_checks_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(PolicyError):
        Policy(use_case="a", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("at", "action", "extra"),
    [("high", "none", {}), ("warning", "pause", {}), ("warning", "route_model", {})],
)
def test_ladder_step_construction_checks_values(
    at: str, action: str, extra: dict[str, object]
) -> None:
    with pytest.raises(PolicyError):
        LadderStep(at, action, **extra)  # type: ignore[arg-type]


def test_policies_are_immutable_and_hashable() -> None:
    policy = PolicySet.load(SHIPPED).for_use_case("support_chat")
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.owner = "#other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        policy.detectors["cost_spike"] = DetectorSetting()  # type: ignore[index]
    assert hash(policy) == hash(dataclasses.replace(policy))


# -- picklable: policies are part of engine state snapshots ---------------------------


def test_pickle_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AUTO_THROTTLE_ENV, "on")
    policies = PolicySet.load(SHIPPED)
    unknown = policies.for_use_case("not_configured")
    restored = pickle.loads(pickle.dumps(policies))
    assert restored == policies
    assert restored.files == policies.files
    assert list(restored) == list(policies)
    # The environment is not read again on restore: the snapshot's defaults stand.
    monkeypatch.setenv(AUTO_THROTTLE_ENV, "off")
    assert restored.for_use_case("not_configured") == unknown
    for policy in policies:
        assert pickle.loads(pickle.dumps(policy)) == policy


# -- the CLI --------------------------------------------------------------------------


def test_cli_check_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["policy", "check", str(SHIPPED)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "ok: 12 policies in 4 files"
    assert err == ""


def test_cli_check_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, "bad.toml", "[use_cases.support_chat.budgets]\ncost_per_hour_usd = -3\n")
    assert cli.main(["policy", "check", str(SHIPPED), str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{bad}: use_cases.support_chat.budgets.cost_per_hour_usd: -3 is less than the minimum of 0"
    ]


def test_cli_check_duplicate_across_directories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dup = write(tmp_path, "dup.toml", '[use_cases.support_chat]\nowner = "#x"\n')
    assert cli.main(["policy", "check", str(SHIPPED), str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{dup}: use_cases.support_chat: already defined in " in err
    assert str(SHIPPED / "support.toml") in err


def test_cli_check_empty_directory_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["policy", "check", str(tmp_path)]) == 1
    assert "no policy files" in capsys.readouterr().err


def test_cli_policy_needs_an_action() -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["policy"])
    assert info.value.code == 2
