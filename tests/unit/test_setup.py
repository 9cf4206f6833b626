"""build_engine: the one engine set-up of ``replay`` and ``worker``."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from spendsentry.commands import replay as replay_command
from spendsentry.commands import worker as worker_command
from spendsentry.engine import EngineConfig
from spendsentry.errors import ConfigError
from spendsentry.policy import PolicyError
from spendsentry.setup import build_engine, default_policies_dir, default_prices_file

POLICY = "[use_cases.support_chat]\nowner = '#support'\ntier = 'production'\n"
PRICES = '[models."house-model"]\ninput_per_mtok = 2.0\noutput_per_mtok = 4.0\n'


def test_build_engine_reads_the_given_files(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.toml").write_text(POLICY)
    (tmp_path / "prices.toml").write_text(PRICES)
    engine = build_engine(tmp_path / "policies", tmp_path / "prices.toml", allowed_lateness_s=30)
    assert "support_chat" in engine.policies
    assert engine.policies.for_use_case("support_chat").owner == "#support"
    assert engine.prices.cost("house-model", None, 1_000_000, 0, 0) == pytest.approx(2.0)
    assert engine.config == EngineConfig(allowed_lateness_s=30.0)


def test_build_engine_defaults_to_the_checkout_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_policies_dir() is None and default_prices_file() is None
    bare = build_engine()
    assert len(bare.policies) == 0 and bare.prices.cost("house-model", None, 1, 0, 0) is None
    assert bare.config == EngineConfig()
    (tmp_path / "streams" / "policies").mkdir(parents=True)
    (tmp_path / "streams" / "policies" / "p.toml").write_text(POLICY)
    (tmp_path / "streams" / "prices.toml").write_text(PRICES)
    engine = build_engine()
    assert engine.policies.use_cases == ("support_chat",)
    assert engine.prices.cost("house-model", None, 1_000_000, 0, 0) == pytest.approx(2.0)


def test_build_engine_refuses_bad_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyError):
        build_engine(tmp_path / "missing")
    bad = '[models."m"]\ninput_per_mtok = -1\noutput_per_mtok = 1\n'
    (tmp_path / "prices.toml").write_text(bad)
    with pytest.raises(ConfigError):
        build_engine(None, tmp_path / "prices.toml")


def test_replay_and_worker_build_the_same_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both commands go through build_engine with the same flags."""
    seen: list[tuple[object, ...]] = []

    def spy(*args: object, **kwargs: object) -> object:
        seen.append((*args, tuple(sorted(kwargs.items()))))
        raise ConfigError("stop here")

    monkeypatch.setattr("spendsentry.setup.build_engine", spy)
    for module in (replay_command, worker_command):
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        argv = ["--policies", "p", "--prices", "x.toml", "--allowed-lateness", "45"]
        args = parser.parse_args(([str(tmp_path / "none.jsonl")] if module is replay_command
                                  else ["--broker", "127.0.0.1:1"]) + argv)  # fmt: skip
        if module is replay_command:
            assert replay_command.run(args) == 2
        else:
            import asyncio

            with pytest.raises(ConfigError):
                asyncio.run(worker_command._main(args, "127.0.0.1:1"))
    assert seen == [("p", "x.toml", (("allowed_lateness_s", 45.0),))] * 2
