"""ThrottleGuard decisions, token buckets, and what it ignores (driven through apply)."""

from __future__ import annotations

import threading
from typing import Any

import orjson
import pytest

from spendsentry.actions import ThrottleKeys
from spendsentry.actions.commands import CommandReason, Scope, ThrottleCommand
from spendsentry.client import ThrottleGuard, TokenBucket

NOW = 1793610000.0
KEYS = ThrottleKeys.of("k-new", "k-old")


def command(
    action: str,
    params: dict[str, Any] | None = None,
    *,
    scope: Scope | None = None,
    version: int = 1,
    dry_run: bool = False,
    ttl: float = 600.0,
    key: str | None = "k-new",
) -> dict[str, Any]:
    cmd = ThrottleCommand.build(
        scope or Scope("support_chat"),
        action,
        params or {},
        version=version,
        issued_at=NOW - 10,
        expires_at=NOW - 10 + ttl,
        reason=CommandReason("ab" * 8, "cost_spike", "cost x4"),
        dry_run=dry_run,
    )
    return cmd.to_dict(ThrottleKeys.of(key) if key else None)


def guard(**kwargs: Any) -> ThrottleGuard:
    return ThrottleGuard("127.0.0.1:1", KEYS, clock=lambda: NOW, **kwargs)


def test_no_command_allows() -> None:
    d = guard().check("support_chat", model="gpt-4o", input_tokens=100)
    assert d.allowed and d.action == "allow" and d.command_id is None


def test_block_denies_until_it_expires() -> None:
    g = guard()
    assert g.apply(orjson.dumps(command("block"))) == "applied"
    d = g.check("support_chat")
    assert not d.allowed and d.action == "deny" and d.retry_after_s == pytest.approx(590.0)
    assert g.check("other_use_case").allowed
    assert g.check("support_chat", now=NOW + 591).allowed  # expired: back to normal
    assert g.active(now=NOW + 591) == {}


def test_route_model_reroutes_and_the_most_specific_scope_wins() -> None:
    g = guard()
    g.apply(command("route_model", {"target_model": "gpt-4o-mini"}))
    g.apply(
        command(
            "route_model",
            {"target_model": "claude-3-5-haiku"},
            scope=Scope("support_chat", model="claude-3-opus"),
        )
    )
    assert g.check("support_chat", model="gpt-4o").model == "gpt-4o-mini"
    d = g.check("support_chat", model="claude-3-opus")
    assert d.action == "route" and d.allowed and d.model == "claude-3-5-haiku"
    assert d.scope_key == "support_chat/model=claude-3-opus"


def test_cap_input_tokens_refuses_larger_prompts_only() -> None:
    g = guard()
    g.apply(command("cap_input_tokens", {"max_input_tokens": 12000}))
    small = g.check("support_chat", input_tokens=8000)
    assert small.allowed and small.action == "cap" and small.max_input_tokens == 12000
    big = g.check("support_chat", input_tokens=20000)
    assert not big.allowed and big.action == "cap" and "over the cap" in big.reason


def test_limit_rate_is_a_token_bucket_per_scope() -> None:
    g = guard()
    g.apply(command("limit_rate", {"requests_per_minute": 60}))
    allowed = [g.check("support_chat", now=NOW).allowed for _ in range(70)]
    assert allowed.count(True) == 60  # one minute's burst
    d = g.check("support_chat", now=NOW)
    assert not d.allowed and d.retry_after_s == pytest.approx(1.0)
    assert g.check("support_chat", now=NOW + 1.0).allowed  # refilled at 1/s


def test_tokens_per_minute_counts_input_tokens() -> None:
    g = guard()
    g.apply(command("limit_rate", {"tokens_per_minute": 10_000}))
    assert g.check("support_chat", input_tokens=6_000).allowed
    d = g.check("support_chat", input_tokens=6_000)
    assert not d.allowed and d.retry_after_s == pytest.approx(12.0)
    # A refused call takes nothing: a smaller one still fits.
    assert g.check("support_chat", input_tokens=4_000).allowed


def test_dry_run_commands_are_reported_not_enforced() -> None:
    g = guard()
    g.apply(command("block", dry_run=True))
    d = g.check("support_chat")
    assert d.allowed and d.action == "allow" and d.dry_run_action == "deny"
    assert g.counts["dry_run_deny"] == 1


def test_release_lifts_the_throttle() -> None:
    g = guard()
    g.apply(command("block", version=1))
    assert g.apply(command("release", version=2)) == "released"
    assert g.check("support_chat").allowed and g.active() == {}


@pytest.mark.parametrize(
    ("make", "verdict"),
    [
        (lambda: command("block", key=None), "unsigned"),
        (lambda: {k: v for k, v in command("block").items() if k != "signature"}, "unsigned"),
        (lambda: command("block", key="someone-else"), "bad_signature"),
        (
            lambda: {
                **command("route_model", {"target_model": "m"}),
                "params": {"target_model": "gpt-4.5"},
            },
            "bad_signature",
        ),
        (lambda: command("block", ttl=5.0), "expired"),
        (lambda: b"{not json", "invalid"),
        (lambda: b"[1]", "invalid"),
        (lambda: {**command("block"), "version": "7"}, "invalid"),
    ],
)
def test_bad_commands_are_ignored_and_counted(make: Any, verdict: str) -> None:
    g = guard()
    message = make()
    raw = message if isinstance(message, bytes) else orjson.dumps(message)
    assert g.apply(raw) == verdict
    assert g.counts[verdict] == 1
    assert g.check("support_chat").allowed


def test_replayed_older_versions_are_ignored_and_counted() -> None:
    g = guard()
    g.apply(command("release", version=5))
    assert g.apply(command("block", version=4)) == "replayed"
    assert g.apply(command("block", version=5)) == "replayed"
    assert g.counts["replayed"] == 2 and g.check("support_chat").allowed
    assert g.apply(command("block", version=6)) == "applied"
    assert not g.check("support_chat").allowed


def test_commands_signed_with_an_old_key_still_verify() -> None:
    g = guard()
    assert g.apply(command("block", key="k-old")) == "applied"


def test_an_expired_newer_command_supersedes_the_older_one() -> None:
    g = guard()
    g.apply(command("block", version=1, ttl=3600))
    assert g.apply(command("limit_rate", {"requests_per_minute": 1}, version=2, ttl=5)) == "expired"
    assert g.check("support_chat").allowed


def test_check_is_thread_safe_under_a_rate_limit() -> None:
    g = guard()
    g.apply(command("limit_rate", {"requests_per_minute": 500}))
    results: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(100):
            ok = g.check("support_chat").allowed
            with lock:
                results.append(ok)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 800 and results.count(True) == 500  # the clock stands still


def test_fail_open_and_fail_closed_when_commands_are_unavailable() -> None:
    open_guard, closed_guard = guard(), guard(fail_open=False)
    for g in (open_guard, closed_guard):
        g._managed = True  # as after start(), before the topic has been read
    assert open_guard.check("support_chat").allowed
    d = closed_guard.check("support_chat")
    assert not d.allowed and d.retry_after_s == 5.0 and "fail closed" in d.reason
    assert open_guard.counts["unavailable"] == closed_guard.counts["unavailable"] == 1


def test_token_bucket_rejects_a_bad_rate_and_caps_huge_requests() -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(0, now=0.0)
    b = TokenBucket(60, now=0.0)
    assert b.take(30, now=0.0) == 0.0
    assert b.take(100, now=0.0) == pytest.approx(30.0)  # never fits: wait for a full bucket
    assert b.take(10, now=100.0) == 0.0 and b.tokens == pytest.approx(50.0)


def test_a_use_case_named_like_a_narrower_scope_throttles_only_itself() -> None:
    # Issue 12, item 5: the use case "support_chat/model=gpt-4o" used to have
    # the key of support_chat on gpt-4o, and blocked the real one.
    g = guard()
    impostor = Scope("support_chat/model=gpt-4o")
    assert g.apply(command("block", scope=impostor)) == "applied"
    assert g.check("support_chat", model="gpt-4o").allowed
    assert not g.check("support_chat/model=gpt-4o").allowed
    assert not g.check("support_chat/model=gpt-4o", model="gpt-4o-mini").allowed
    g.apply(command("block", scope=Scope("support_chat", model="gpt-4o")))
    assert not g.check("support_chat", model="gpt-4o").allowed
    assert g.check("support_chat", model="gpt-4o-mini").allowed


def test_a_command_whose_key_is_not_the_key_of_its_scope_is_invalid() -> None:
    # A signed command must not say one scope in `scope` and mean another by
    # its key (the key decides what a guard throttles).
    doc = command("block", scope=Scope("support_chat/model=gpt-4o"))
    doc["scope_key"] = "support_chat/model=gpt-4o"
    doc["signature"] = KEYS.sign(doc)
    assert guard().apply(doc) == "invalid"
