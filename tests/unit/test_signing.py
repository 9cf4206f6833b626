"""Canonical JSON and signatures of throttle commands, and key rotation."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from spendsentry.actions import ThrottleKeys, canonical_json, sign, verify
from spendsentry.actions.commands import CommandReason, Scope, ThrottleCommand
from spendsentry.contracts import load_schema, validate
from spendsentry.errors import ConfigError

EXAMPLE = load_schema("throttle-command")["examples"][0]


def test_canonical_json_sorts_keys_at_every_level_without_whitespace() -> None:
    doc = {"b": [{"z": 1, "a": 2}], "a": "\u00d7", "c": None, "d": True}
    assert canonical_json(doc) == '{"a":"\u00d7","b":[{"a":2,"z":1}],"c":null,"d":true}'.encode()


def test_canonical_json_refuses_non_finite_numbers() -> None:
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_the_worked_example_in_the_schema_verifies() -> None:
    assert sign(EXAMPLE, "test-key") == EXAMPLE["signature"]
    assert verify(EXAMPLE, ["test-key"])
    body = {k: v for k, v in EXAMPLE.items() if k != "signature"}
    # The same bytes a gateway in any language produces with plain json + hmac.
    plain = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(body) == plain.encode()
    assert hmac.new(b"test-key", plain.encode(), hashlib.sha256).hexdigest() == sign(
        body, b"test-key"
    )


@pytest.mark.parametrize(
    "tamper",
    [
        {"version": 8},
        {"action": "block", "params": {}},
        {"expires_at": "2026-11-02T23:00:00.000Z"},
        {"scope_key": "support_chat"},
        {"dry_run": True},
        {"signature": "0" * 64},
        {"signature": ""},
        {"signature": EXAMPLE["signature"].upper()},
    ],
)
def test_tampered_commands_do_not_verify(tamper: dict[str, object]) -> None:
    assert not verify({**EXAMPLE, **tamper}, ["test-key"])


def test_a_missing_or_malformed_signature_does_not_verify() -> None:
    body = {k: v for k, v in EXAMPLE.items() if k != "signature"}
    assert not verify(body, ["test-key"])
    assert not verify({**body, "signature": 12}, ["test-key"])
    assert not verify({**EXAMPLE, "x": float("inf")}, ["test-key"])


def test_key_rotation_accepts_every_listed_key_and_signs_with_the_first() -> None:
    keys = ThrottleKeys.from_env({"SPENDSENTRY_THROTTLE_KEYS": "k2, k1"})
    assert keys.signing == b"k2"
    old = {**EXAMPLE, "signature": sign(EXAMPLE, "k1")}
    new = {**EXAMPLE, "signature": keys.sign(EXAMPLE)}
    assert keys.verify(old) and keys.verify(new)
    assert new["signature"] == sign(EXAMPLE, "k2")
    assert not ThrottleKeys.of("k3").verify(old)


def test_the_single_key_variable_signs_and_the_list_is_accepted_too() -> None:
    keys = ThrottleKeys.from_env(
        {"SPENDSENTRY_THROTTLE_KEY": "main", "SPENDSENTRY_THROTTLE_KEYS": "old,main"}
    )
    assert keys.signing == b"main"
    assert keys.accepted == (b"main", b"old")


def test_keys_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# rotated 2026-11\nfile-new\n\nfile-old\n")
    keys = ThrottleKeys.from_env({"SPENDSENTRY_THROTTLE_KEY_FILE": str(path)})
    assert keys.signing == b"file-new" and keys.accepted == (b"file-new", b"file-old")


def test_an_unreadable_or_empty_key_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        ThrottleKeys.from_env({"SPENDSENTRY_THROTTLE_KEY_FILE": str(tmp_path / "none")})
    (tmp_path / "empty").write_text("\n# nothing\n")
    with pytest.raises(ConfigError, match="holds no key"):
        ThrottleKeys.from_env({"SPENDSENTRY_THROTTLE_KEY_FILE": str(tmp_path / "empty")})


def test_keys_never_show_in_repr_or_str() -> None:
    keys = ThrottleKeys.from_env({"SPENDSENTRY_THROTTLE_KEY": "s3cret-value"})
    assert "s3cret" not in repr(keys) and "s3cret" not in str(keys)


def test_no_key_means_unsigned_commands_that_gateways_reject() -> None:
    keys = ThrottleKeys.from_env({})
    assert not keys.can_sign
    cmd = ThrottleCommand.build(
        Scope("support_chat"), "block", {}, version=1, issued_at=0.0, expires_at=60.0,
        reason=CommandReason(None, None, "manual"),
    )  # fmt: skip
    doc = cmd.to_dict(keys)
    assert doc["signature"] == ""
    assert validate("throttle-command", doc) == []
    assert not verify(doc, [b"any"])


def test_a_signed_command_is_valid_and_verifies() -> None:
    keys = ThrottleKeys.of("k")
    cmd = ThrottleCommand.build(
        Scope("research_agent", model="o3", agent_id="planner"), "limit_rate",
        {"requests_per_minute": 60}, version=3, issued_at=1793610000.0,
        expires_at=1793611800.0, reason=CommandReason("ab" * 8, "agent_chatter", "loop"),
    )  # fmt: skip
    doc = cmd.to_dict(keys)
    assert validate("throttle-command", doc) == []
    assert doc["scope_key"] == "research_agent/model=o3/agent=planner"
    assert keys.verify(doc)
