"""Session scopes (issue 15, item 1, the vocabulary part): a command on one agent
session reaches that session's calls only; its key, schema and guard matching."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spendsentry.actions import ThrottleKeys
from spendsentry.actions.commands import (
    CommandReason,
    Scope,
    ThrottleCommand,
    scope_keys_of_call,
    trusted_command,
)
from spendsentry.client import ThrottleGuard
from spendsentry.commands.throttle import _candidates
from spendsentry.contracts import validate

NOW = 1793610000.0
KEYS = ThrottleKeys.of("k")


def signed(scope: Scope, action: str = "block", version: int = 1, **params: Any) -> bytes:
    cmd = ThrottleCommand.build(
        scope, action, params, version=version, issued_at=NOW - 5, expires_at=NOW + 600,
        reason=CommandReason("ab" * 8, "agent_chatter", "session loops"),
    )  # fmt: skip
    return orjson.dumps(cmd.to_dict(KEYS))


def test_a_session_scope_has_one_key_after_model_and_agent() -> None:
    scope = Scope("research", model="o3", agent_id="planner", session_id="run/7=a%")
    assert scope.key == "research/model=o3/agent=planner/session=run%2F7%3Da%25"
    assert Scope.parse(scope.key) == scope
    assert scope.to_dict()["session_id"] == "run/7=a%"
    assert Scope.parse("research/session=s1") == Scope("research", session_id="s1")
    # One order only: a session before the agent is no key.
    for bad in ("research/session=s1/agent=p", "research/session=", "research/sess=s1"):
        with pytest.raises(ValueError, match="session=ID"):
            Scope.parse(bad)


def test_a_session_command_keeps_to_the_schema_and_its_key_must_match() -> None:
    doc = orjson.loads(signed(Scope("research", session_id="s1")))
    assert doc["scope"] == {"use_case": "research", "session_id": "s1"}
    assert validate("throttle-command", doc) == [] and trusted_command(doc, KEYS) == doc
    # A key that leaves the session out is not the key of the scope.
    forged = {**doc, "scope_key": "research"}
    forged["signature"] = KEYS.sign(forged)
    rejected = trusted_command(forged, KEYS)
    assert getattr(rejected, "reason", None) == "invalid"


@given(st.none() | st.just("gpt-4o"), st.none() | st.just("planner"), st.none() | st.just("s-1"))
def test_a_call_matches_every_narrowing_of_its_use_case_general_first(
    model: str | None, agent: str | None, session: str | None
) -> None:
    keys = scope_keys_of_call("research", model, agent, session)
    present = [x for x in (model, agent, session) if x]
    assert len(keys) == len(set(keys)) == 2 ** len(present)
    assert keys[0] == "research"
    if session:
        # The session's scopes come after every scope without it.
        assert all("/session=" in k for k in keys[len(keys) // 2 :])
        assert not any("/session=" in k for k in keys[: len(keys) // 2])


def test_the_guard_stops_one_session_and_lets_the_others_go_on() -> None:
    guard = ThrottleGuard("127.0.0.1:1", KEYS, clock=lambda: NOW)
    assert guard.apply(signed(Scope("research", session_id="loop-1"))) == "applied"
    stopped = guard.check("research", "o3", agent_id="planner", session_id="loop-1")
    assert not stopped.allowed and stopped.scope_key == "research/session=loop-1"
    assert guard.check("research", "o3", agent_id="planner", session_id="ok-2").allowed
    assert guard.check("research", "o3", agent_id="planner").allowed  # no session given
    assert guard.check("other", session_id="loop-1").allowed  # same id, other use case


def test_use_case_commands_still_reach_session_calls_and_the_session_route_wins() -> None:
    guard = ThrottleGuard("127.0.0.1:1", KEYS, clock=lambda: NOW)
    guard.apply(signed(Scope("research"), "route_model", target_model="small"))
    routed = guard.check("research", session_id="s1")
    assert routed.model == "small" and routed.scope_key == "research"
    guard.apply(signed(Scope("research", session_id="s1"), "route_model", target_model="tiny"))
    assert guard.check("research", session_id="s1").model == "tiny"
    assert guard.check("research", session_id="s2").model == "small"


def test_the_cli_takes_a_session_key_as_a_scope() -> None:
    found = _candidates("research/agent=p/session=s1")
    assert Scope("research", agent_id="p", session_id="s1") in found
    assert _candidates("research/agent=p/session=s1", use_case_only=True) == [
        Scope("research/agent=p/session=s1")
    ]


def test_a_session_command_survives_a_snapshot_and_old_ones_stay_as_they_were() -> None:
    from spendsentry.snapshot.fields import Fields
    from spendsentry.snapshot.incidents import dump_command, load_command

    for scope in (Scope("research", agent_id="p", session_id="s1"), Scope("research", "o3")):
        cmd = ThrottleCommand.build(
            scope, "block", {}, version=2, issued_at=NOW, expires_at=NOW + 60,
            reason=CommandReason(None, None, "x"),
        )  # fmt: skip
        dumped = dump_command(cmd)
        assert dumped is not None
        assert len(dumped["scope"]) == (4 if scope.session_id else 3)
        assert load_command(Fields(dumped, "$")) == cmd


def test_a_scope_pickled_before_sessions_existed_restores_without_one() -> None:
    old = Scope.__new__(Scope)
    old.__setstate__(("research", "o3", "planner"))
    assert old == Scope("research", "o3", "planner") and old.session_id is None
    assert old.key == "research/model=o3/agent=planner"
