"""Test throttles (``spendsentry throttle test``): the marked command, the guard's
decision, the worker's version bookkeeping, and the CLI's refusals (issue 15, item 6)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import orjson
import pytest

from spendsentry.actions import ControlAction, ThrottleKeys, ThrottlePlanner
from spendsentry.actions.commands import CommandReason, Scope, ThrottleCommand, trusted_command
from spendsentry.alerts import Alert
from spendsentry.client import ThrottleGuard
from spendsentry.contracts import validate
from spendsentry.policy import LadderStep, Policy

NOW = 1793610000.0
KEYS = ThrottleKeys.of("k")


def command(
    action: str = "block", *, test: bool, version: int = 1, **params: Any
) -> ThrottleCommand:
    return ThrottleCommand.build(
        Scope("support_chat", model="gpt-4o"),
        action,
        params,
        version=version,
        issued_at=NOW,
        expires_at=NOW + 60,
        reason=CommandReason(None, None, "test by dev"),
        test=test,
    )


def test_a_test_command_is_marked_signed_and_keeps_to_the_schema() -> None:
    doc = command(test=True).to_dict(KEYS)
    assert doc["test"] is True and validate("throttle-command", doc) == []
    assert trusted_command(orjson.dumps(doc), KEYS) == doc
    # The mark is signed: taking it off breaks the signature.
    unmarked = {k: v for k, v in doc.items() if k != "test"}
    assert trusted_command(unmarked, KEYS).reason == "bad_signature"  # type: ignore[union-attr]


def test_other_commands_carry_no_test_field_and_keep_their_signature() -> None:
    real, test = command(test=False), command(test=True)
    assert "test" not in real.to_dict(KEYS)
    # Same scope, version and time: same id, but not the same signed message.
    assert real.command_id == test.command_id
    assert real.to_dict(KEYS)["signature"] != test.to_dict(KEYS)["signature"]


def test_the_schema_refuses_a_test_field_that_is_not_a_boolean() -> None:
    doc = {**command(test=True).body(), "test": "yes", "signature": ""}
    assert any("test" in p for p in validate("throttle-command", doc))


@pytest.mark.parametrize("test", [True, False])
def test_the_guard_enforces_a_test_and_says_it_was_one(test: bool) -> None:
    guard = ThrottleGuard("127.0.0.1:1", KEYS, clock=lambda: NOW)
    assert guard.apply(orjson.dumps(command(test=test).to_dict(KEYS))) == "applied"
    denied = guard.check("support_chat", model="gpt-4o")
    assert not denied.allowed and denied.action == "deny"
    assert denied.test is test and ("test command" in denied.reason) is test
    assert guard.check("support_chat", model="gpt-4o-mini").test is False
    assert guard.check("support_chat", model="gpt-4o", now=NOW + 61).allowed


def test_a_newer_real_command_replaces_a_test_at_the_guard() -> None:
    guard = ThrottleGuard("127.0.0.1:1", KEYS, clock=lambda: NOW)
    guard.apply(command(test=True, version=1).to_dict(KEYS))
    real = command("route_model", test=False, version=2, target_model="gpt-4o-mini")
    assert guard.apply(real.to_dict(KEYS)) == "applied"
    decision = guard.check("support_chat", model="gpt-4o")
    assert decision.action == "route" and decision.test is False


# -- the worker's planner ------------------------------------------------------

POLICY = Policy(
    use_case="support_chat",
    auto_throttle="on",
    ladder=(LadderStep("warning", "limit_rate", requests_per_minute=600),),
    cooldown_s=600.0,
    max_duration_s=3600.0,
)


def alert(at: float) -> Alert:
    return Alert(
        "a1" * 8, "cost_spike", "support_chat", "warning", "firing", at, at - 300, "x", {}, 2.0
    )


def trial_control(version: int, at: float = NOW, scope_key: str | None = None) -> ControlAction:
    message = ControlAction(
        "release", None, "support_chat", None, scope_key, None, "dev", at, version, test=True
    ).to_dict()
    assert message["test"] is True and validate("control-action", message) == []
    return ControlAction.parse(orjson.dumps(message))


def test_the_planner_learns_a_test_version_on_a_scope_it_never_throttled() -> None:
    planner = ThrottlePlanner()
    assert planner.apply_control(trial_control(3), POLICY) == []
    cmd = planner.plan(alert(NOW + 10), POLICY)
    # Newer than the test (a gateway holding v3 takes it), and not delayed by a cooldown.
    assert cmd is not None and cmd.version == 4 and cmd.action == "limit_rate"


def test_a_test_leaves_the_command_in_force_and_the_cooldown_as_they_were() -> None:
    with_test, without = ThrottlePlanner(), ThrottlePlanner()
    for planner in (with_test, without):
        assert planner.plan(alert(NOW), POLICY) is not None
    assert with_test.apply_control(trial_control(7, at=NOW + 60), POLICY) == []
    assert with_test.version("support_chat") == 7
    assert [c.action for c in with_test.active(NOW + 61)] == ["limit_rate"]
    # The same choices afterwards, one version on.
    for at in (NOW + 300, NOW + 4000):
        a, b = with_test.plan(alert(at), POLICY), without.plan(alert(at), POLICY)
        assert (a is None) is (b is None)
        if a is not None and b is not None:
            assert (a.action, a.params, a.version) == (b.action, b.params, b.version + 6)


def test_made_up_test_versions_neither_jump_ahead_nor_push_scopes_out() -> None:
    planner = ThrottlePlanner(max_scopes=2)
    planner.apply_control(trial_control(10**6), POLICY)  # not a plausible step from 0
    assert planner.version("support_chat") == 0 and planner.ignored_versions == 1
    planner.plan(alert(NOW), POLICY)
    planner.apply_control(trial_control(1, scope_key="x"), POLICY)
    planner.apply_control(trial_control(1, scope_key="y"), POLICY)  # no room: ignored
    assert planner.version("x") == 1 and planner.version("y") == 0
    assert planner.version("support_chat") == 1 and planner.ignored_versions == 2


# -- the command line (no broker needed for its refusals) ------------------------


def cli(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spendsentry", "throttle", "test", *argv],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_cli_needs_a_signing_key_and_a_sane_duration() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDSENTRY_THROTTLE_KEY")}
    done = cli("support_chat", "--broker", "127.0.0.1:1", env=env)
    assert done.returncode == 2 and "no signing key" in done.stderr
    env["SPENDSENTRY_THROTTLE_KEY"] = "k"
    for duration in ("0", "-5", "86400"):
        done = cli("support_chat", "--broker", "127.0.0.1:1", "--duration", duration, env=env)
        assert done.returncode == 2 and "--duration" in done.stderr, done.stderr
    done = cli("support_chat", "--broker", "127.0.0.1:1", "--action", "release", env=env)
    assert done.returncode == 2 and "invalid choice" in done.stderr


def test_control_messages_without_the_mark_are_no_tests() -> None:
    plain = ControlAction("ack", None, "u", None, None, None, "U1", NOW).to_dict()
    assert "test" not in plain and ControlAction.parse(plain).test is False


def test_a_command_pickled_before_tests_existed_restores_as_no_test() -> None:
    cmd = command(test=False)
    old = ThrottleCommand.__new__(ThrottleCommand)
    old.__setstate__(tuple(cmd.__getstate__())[:-1])  # type: ignore[attr-defined]
    assert old == cmd and old.test is False and "test" not in old.to_dict(KEYS)
