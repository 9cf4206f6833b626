"""Only verified commands on ai.throttle count (issue 12, item 3).

A forged record on the throttle topic used to reach engine state: a version
of 2^64 made the next command unserializable (the worker exited), and 50k junk
scope keys bloated every engine snapshot. These tests drive the pure parts:
``trusted_command``, ``ThrottleTopic`` (what every reader of the topic keeps),
and the planner's bounds. tests/integration/test_throttle_topic_forgery.py runs the
worker and the CLI against forged records on a real broker.
"""

from __future__ import annotations

import pickle
from typing import Any

import orjson
import pytest
from _snapshots import engine_size

from spendsentry.actions import ControlAction, ThrottleKeys, ThrottlePlanner
from spendsentry.actions.commands import (
    MAX_VERSION,
    CommandReason,
    Rejection,
    Scope,
    ThrottleCommand,
    trusted_command,
)
from spendsentry.alerts import Alert
from spendsentry.client import ThrottleTopic
from spendsentry.engine import Engine
from spendsentry.policy import LadderStep, Policy, PolicySet
from spendsentry.snapshot import decode_state, encode_state
from spendsentry.timeutil import format_ts
from spendsentry.worker.pipeline import Pipeline

T0 = 1793610000.0
KEYS = ThrottleKeys.of("k-new", "k-old")
POLICY = Policy(
    "victim", auto_throttle="on", cooldown_s=0.0, ladder=(LadderStep("warning", "block"),)
)


def signed(
    action: str = "block", *, scope: str = "victim", version: int = 1, key: str | None = "k-new"
) -> dict[str, Any]:
    cmd = ThrottleCommand.build(
        Scope(scope),
        action,
        {},
        version=version,
        issued_at=T0,
        expires_at=T0 + 3600,
        reason=CommandReason(None, None, "test"),
    )
    return cmd.to_dict(ThrottleKeys.of(key) if key else None)


def forged(scope: str = "victim", version: int = 2**64 - 1) -> bytes:
    """What an attacker with write access to the topic sends (the issue's record)."""
    return b'{"scope_key":"%s","version":%d}' % (scope.encode(), version)


def alert(at: float = T0, status: str = "firing") -> Alert:
    return Alert("a1" * 8, "cost_spike", "victim", "warning", status, at, T0 - 300, "x", {}, 2.0)


# -- trusted_command ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b'{"scope_key":"victim","version":18446744073709551615}', "unsigned"),
        (b"{not json", "invalid"),
        (b"[1]", "invalid"),
        (orjson.dumps(signed(key=None)), "unsigned"),
        (orjson.dumps(signed(key="someone-else")), "bad_signature"),
        (orjson.dumps({**signed(), "signature": "0" * 64}), "bad_signature"),
    ],
)
def test_records_that_are_not_verified_commands_are_rejected_with_a_reason(
    message: bytes, reason: str
) -> None:
    got = trusted_command(message, KEYS)
    assert isinstance(got, Rejection) and got.reason == reason and got.detail


def test_a_signed_command_above_the_version_bound_is_invalid() -> None:
    # Even with the key (a bug, or a stolen key): no version orjson cannot write.
    doc = signed(version=MAX_VERSION + 1)
    got = trusted_command(orjson.dumps(doc), KEYS)
    assert isinstance(got, Rejection) and got.reason == "invalid" and "version" in got.detail
    assert trusted_command(orjson.dumps(signed(version=MAX_VERSION)), KEYS) == signed(
        version=MAX_VERSION
    )


def test_key_rotation_keeps_commands_signed_with_the_old_key() -> None:
    assert not isinstance(trusted_command(orjson.dumps(signed(key="k-old")), KEYS), Rejection)
    rotated = ThrottleKeys.of("k-newer", "k-new")
    assert not isinstance(trusted_command(orjson.dumps(signed()), rotated), Rejection)


# -- ThrottleTopic: what a reader of the topic keeps --------------------------------


def read(*values: bytes | dict[str, Any] | None) -> ThrottleTopic:
    found = ThrottleTopic()
    for v in values:
        found.take(orjson.dumps(v) if isinstance(v, dict) else v, KEYS)
    return found


def test_a_forged_release_neither_hides_nor_replaces_a_verified_block() -> None:
    block = signed("block", version=3)
    fake_release = {**signed("release", version=4, key="attacker"), "version": 99}
    found = read(block, fake_release, forged())
    assert found.latest == {"victim": block}
    assert found.rejected == {"bad_signature": 1, "unsigned": 1}
    assert "bad_signature=1" in found.describe_rejected()


def test_a_flood_of_junk_scope_keys_keeps_nothing() -> None:
    junk = [forged(f"junk-{i}", 1) for i in range(50_000)]
    found = read(signed(), *junk)
    assert list(found.latest) == ["victim"] and found.rejected["unsigned"] == 50_000
    assert len(found.examples) == 3


def test_versions_keep_the_most_recently_issued_scopes_only() -> None:
    def at(scope: str, issued: float) -> dict[str, Any]:
        cmd = ThrottleCommand.build(
            Scope(scope), "block", {}, version=2, issued_at=issued, expires_at=issued + 60,
            reason=CommandReason(None, None, "t"),
        )  # fmt: skip
        return cmd.to_dict(KEYS)

    found = read(*[at(f"s{i}", T0 + i) for i in range(10)])
    assert found.versions(3) == {"s9": 2, "s8": 2, "s7": 2}


# -- the planner's bounds ------------------------------------------------------------


def test_a_forged_huge_version_never_reaches_the_planner_and_commands_serialize() -> None:
    planner = ThrottlePlanner()
    planner.observe_version("victim", 2**64 - 1)
    assert planner.version("victim") == 0 and planner.ignored_versions == 1
    cmd = planner.plan(alert(), POLICY)
    assert cmd is not None and cmd.version == 1
    orjson.dumps(cmd.to_dict(KEYS))


def test_a_version_at_the_bound_issues_nothing_rather_than_overflow() -> None:
    planner = ThrottlePlanner()
    planner.observe_version("victim", MAX_VERSION)
    assert planner.plan(alert(), POLICY) is None
    assert planner.ignored_versions == 1 and planner.version("victim") == MAX_VERSION


def control(scope_key: str | None, version: int) -> ControlAction:
    return ControlAction.parse(
        {
            "action": "release", "alert_id": None, "use_case": "victim", "kind": None,
            "scope_key": scope_key, "until": None, "user": "U1", "at": format_ts(T0 + 60),
            "version": version,
        }
    )  # fmt: skip


def test_unsigned_control_versions_do_not_create_scopes_or_jump_to_the_bound() -> None:
    engine = Engine(PolicySet([POLICY]))
    before = engine_size(engine)
    for i in range(50_000):
        engine.apply_control(control(f"junk-{i}", 7))
    assert engine_size(engine) - before < 1_000
    planner = engine.planner
    cmd = planner.plan(alert(), POLICY)
    assert cmd is not None and cmd.version == 1
    # A version far ahead of the one held is not what `throttle release` sends.
    assert planner.apply_control(control("victim", MAX_VERSION), POLICY) == []
    assert planner.version("victim") == 1
    # What it does send (latest + 1) is taken.
    assert planner.apply_control(control("victim", 2), POLICY) == []
    assert planner.version("victim") == 2 and planner.active(T0 + 120) == []


def test_a_snapshot_holding_a_forged_version_restores_without_it() -> None:
    engine = Engine(PolicySet([POLICY]))
    planner = engine.planner
    planner.plan(alert(), POLICY)
    planner.scopes.states["victim"].version = 2**64  # what an unfixed worker saved
    # ... in a pickle (version 2), or in a document: both restore without it.
    saved = pickle.dumps({"version": 2, "state": {"engine": engine}})
    planner.scopes.states["victim"].version = MAX_VERSION + 1  # 2**64 is not even msgpack
    for payload in (saved, encode_state(Pipeline(engine).snapshot_state())):
        pipeline = Pipeline(Engine(PolicySet([POLICY])))
        pipeline.restore_state(decode_state(payload), now=0.0)
        assert pipeline.engine.planner.ignored_versions == 1
    restored = pipeline.engine.planner
    assert restored.version("victim") == 0
    cmd = restored.plan(alert(T0 + 60), POLICY)
    assert cmd is not None
    orjson.dumps(cmd.to_dict(KEYS))
