"""Scope keys are unambiguous: one scope, one key, and parsing inverts formatting.

Issue 12, item 5: a use case named ``support_chat/model=gpt-4o`` used to get
the key of the real ``support_chat`` on gpt-4o, and could not be released.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spendsentry.actions import ControlAction, Scope
from spendsentry.actions.commands import SCOPE_KEY_PATTERN, scope_key
from spendsentry.contracts import validate

#: Valid use case names (usage-event.json: 1 to 200 characters, anything).
names = st.text(min_size=1, max_size=200)
#: Names made mostly of the reserved characters, where collisions hide.
tricky = st.text(alphabet="%/=2FD3abm", min_size=1, max_size=30)
components = st.one_of(names, tricky)
scopes = st.builds(
    Scope,
    components,
    st.none() | components,
    st.none() | components,
    st.none() | components,  # session_id (issue 15)
)


@given(scopes)
def test_parsing_inverts_formatting(scope: Scope) -> None:
    assert Scope.parse(scope.key) == scope
    assert Scope.parse(scope.key).key == scope.key


@given(scopes, scopes)
def test_distinct_scopes_never_share_a_key(a: Scope, b: Scope) -> None:
    if a != b:
        assert a.key != b.key


@given(scopes)
def test_a_use_case_named_after_a_scope_key_does_not_take_that_key(scope: Scope) -> None:
    # The collision of the issue, searched for on purpose: a use case whose
    # name is another scope's key.
    impostor = Scope(scope.key)
    if impostor != scope:
        assert impostor.key != scope.key


@given(st.text(max_size=40, alphabet="%/=2FD3abm"))
def test_every_key_that_parses_is_the_key_of_its_scope(key: str) -> None:
    try:
        scope = Scope.parse(key)
    except ValueError:
        return
    assert scope.key == key


def test_a_use_case_named_like_a_narrower_scope_gets_its_own_key() -> None:
    impostor = Scope("support_chat/model=gpt-4o")
    real = Scope("support_chat", model="gpt-4o")
    assert impostor.key == "support_chat%2Fmodel%3Dgpt-4o"
    assert real.key == "support_chat/model=gpt-4o"
    assert Scope.parse(impostor.key) == impostor


@pytest.mark.parametrize(
    ("scope", "key"),
    [
        (Scope("support_chat"), "support_chat"),
        (Scope("support_chat", model="gpt-4o"), "support_chat/model=gpt-4o"),
        (Scope("research_agent", agent_id="planner"), "research_agent/agent=planner"),
        (Scope("r", "o3", "planner"), "r/model=o3/agent=planner"),
        (Scope("a b.c-d:e@f"), "a b.c-d:e@f"),
    ],
)
def test_keys_of_names_without_reserved_characters_are_unchanged(scope: Scope, key: str) -> None:
    assert scope.key == key == scope_key(scope.use_case, scope.model, scope.agent_id)


@pytest.mark.parametrize(
    "key", ["", "a/", "/model=x", "a/model=", "a/agent=x/model=y", "a%", "a%41", "a=b", "a/x=y"]
)
def test_malformed_keys_are_refused_with_the_grammar(key: str) -> None:
    with pytest.raises(ValueError, match="use_case"):
        Scope.parse(key)


@given(scopes)
def test_the_schema_pattern_accepts_every_key(scope: Scope) -> None:
    import re

    assert re.search(SCOPE_KEY_PATTERN, scope.key)


def test_the_schemas_carry_the_same_grammar() -> None:
    from spendsentry.contracts import load_schema

    throttle = load_schema("throttle-command")["properties"]["scope_key"]
    control = load_schema("control-action")["properties"]["scope_key"]
    assert throttle["pattern"] == control["pattern"] == SCOPE_KEY_PATTERN
    assert "%2F" in throttle["description"]


def test_a_release_of_a_use_case_with_a_slash_targets_that_use_case() -> None:
    # The Slack Release button sends scope_key null and the use case's name.
    action = ControlAction.parse(
        {
            "action": "release",
            "alert_id": "ab12",
            "use_case": "team/a=b",
            "kind": "cost_spike",
            "scope_key": None,
            "until": None,
            "user": "U1",
            "at": "2026-11-02T09:00:00Z",
        }
    )
    assert action.scope == Scope("team/a=b")
    assert action.target_scope == "team%2Fa%3Db"


def test_a_control_action_with_a_malformed_scope_key_is_invalid() -> None:
    doc = {
        "action": "release",
        "alert_id": None,
        "use_case": "u",
        "kind": None,
        "scope_key": "u/x=y",
        "until": None,
        "user": "U1",
        "at": "2026-11-02T09:00:00Z",
    }
    assert validate("control-action", doc)
