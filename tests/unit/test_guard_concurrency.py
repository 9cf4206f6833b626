"""Concurrency limits: ThrottleGuard's in-flight slots, alone and as several replicas."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from spendsentry.client import ConcurrencyLimit, ConcurrencyLimited, ThrottleGuard, ThrottleKeys
from spendsentry.client.settings import guard_settings
from spendsentry.concurrency import replica_share, replicas_bound
from spendsentry.errors import ConfigError
from spendsentry.policy import PolicyError, PolicySet

KEYS = ThrottleKeys.of("k")
POLICIES = Path(__file__).parents[2] / "streams" / "policies"


def guard(concurrency: dict[str, ConcurrencyLimit | int], **kw: object) -> ThrottleGuard:
    return ThrottleGuard("localhost:1", KEYS, concurrency=concurrency, **kw)  # type: ignore[arg-type]


def replicas(limit: ConcurrencyLimit | int, n: int, *, indexed: bool) -> list[ThrottleGuard]:
    return [
        guard({"chat": limit}, replicas=n, replica_index=i if indexed else None) for i in range(n)
    ]


def hammer(guards: list[ThrottleGuard], session_of: list[str | None], per_thread: int) -> int:
    """Threads acquire and release on all guards at once; the peak total in flight
    (counted by the callers while they hold a slot, and as the guards report it)."""
    before = [g.in_flight() for g in guards]
    lock = threading.Lock()
    state = {"now": 0, "peak": 0, "reported": 0}
    start = threading.Barrier(len(guards) * len(session_of))

    def work(g: ThrottleGuard, session: str | None) -> None:
        start.wait()
        for _ in range(per_thread):
            d = g.acquire("chat", session)
            if not d.allowed:
                continue
            with lock:
                state["now"] += 1
                state["peak"] = max(state["peak"], state["now"])
            reported = sum(x.in_flight("chat", session) for x in guards)
            with lock:
                state["reported"] = max(state["reported"], reported)
            time.sleep(0.0005)
            with lock:
                state["now"] -= 1
            assert g.release(d)

    threads = [threading.Thread(target=work, args=(g, s)) for g in guards for s in session_of]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [g.in_flight() for g in guards] == before
    assert state["peak"] > 1  # the threads did overlap
    return max(state["peak"], state["reported"])


@pytest.mark.parametrize("indexed", [True, False])
def test_three_replicas_never_exceed_the_limit_together(indexed: bool) -> None:
    guards = replicas(10, 3, indexed=indexed)
    shares = [g.slots.share(10) for g in guards]
    assert shares == ([4, 3, 3] if indexed else [3, 3, 3])
    # Fill every replica: together they hold the limit (indexed) or just under it.
    held = [(g, g.acquire("chat")) for g in guards for _ in range(5)]
    assert sum(d.allowed for _, d in held) == (10 if indexed else 9)
    granted = [(g, d) for g, d in held if d.allowed]
    # A slot belongs to the guard that gave it: another replica cannot free it.
    assert not guards[1].release(next(d for g, d in granted if g is guards[0]))
    assert all(g.release(d) for g, d in granted)
    assert sum(g.in_flight() for g in guards) == 0
    # Many threads per replica at once: the peak never passes the limit.
    peak = hammer(guards, [None] * 6, per_thread=40)
    assert 0 < peak <= 10


def test_per_session_limit_holds_across_replicas() -> None:
    guards = replicas(ConcurrencyLimit(max_in_flight_per_session=3), 3, indexed=True)
    for g in guards:
        assert g.acquire("chat", "s1").allowed
        refused = g.acquire("chat", "s1")
        assert not refused.allowed
        assert refused.reason == (
            "concurrency limit per session: 1 in flight (this replica's share of 3)"
        )
        assert refused.scope_key == "chat/session=s1"
        assert g.acquire("chat", "s2").allowed  # another session has its own slots
    assert sum(g.in_flight("chat", "s1") for g in guards) == 3
    assert hammer(guards, ["s9"] * 4, per_thread=30) <= 3


def test_session_limit_inside_the_use_case_limit() -> None:
    g = guard({"chat": ConcurrencyLimit(3, 2)})
    a, b = g.acquire("chat", "s1"), g.acquire("chat", "s1")
    assert a.allowed and b.allowed and not g.acquire("chat", "s1").allowed
    assert g.acquire("chat", "s2").allowed
    full = g.acquire("chat", "s3")
    assert (full.action, full.allowed, full.retry_after_s) == ("deny", False, 1.0)
    assert full.reason == "concurrency limit: 3 in flight"
    assert full.scope_key == "chat"
    assert g.counts["concurrency_use_case"] == 1 and g.counts["concurrency_session"] == 1


def test_release_frees_a_slot_once() -> None:
    g = guard({"chat": 1})
    d = g.acquire("chat")
    assert d.slot is not None and not g.acquire("chat").allowed
    assert g.release(d) is True
    assert g.release(d) is False  # a second release frees nothing more
    assert g.in_flight("chat") == 0
    assert g.acquire("chat").allowed
    assert not g.acquire("chat").allowed


def test_use_cases_without_a_limit_always_get_a_slot() -> None:
    g = guard({"chat": 1})
    held = [g.acquire("search") for _ in range(50)]
    assert all(d.allowed and d.slot for d in held) and g.in_flight("search") == 50
    assert g.acquire("chat").allowed  # limits are per use case
    assert g.release(None) is False and g.release(g.check("chat")) is False


def test_context_manager_releases_on_exception() -> None:
    g = guard({"chat": 1})
    with pytest.raises(ZeroDivisionError), g.slot("chat", "s1") as d:
        assert d.slot is not None and g.in_flight("chat", "s1") == 1
        raise ZeroDivisionError
    assert g.in_flight() == 0
    with g.slot("chat"), pytest.raises(ConcurrencyLimited) as refused, g.slot("chat"):
        pass
    assert refused.value.decision.reason == "concurrency limit: 1 in flight"
    assert g.in_flight() == 0


def test_async_slot() -> None:
    g = guard({"chat": 2})

    async def main() -> int:
        async def call() -> None:
            async with g.aslot("chat"):
                await asyncio.sleep(0.01)

        results = await asyncio.gather(*(call() for _ in range(5)), return_exceptions=True)
        return sum(isinstance(r, ConcurrencyLimited) for r in results)

    assert asyncio.run(main()) == 3
    assert g.in_flight() == 0


def test_limit_below_replica_count_overshoots_to_the_documented_bound() -> None:
    # Every replica keeps one slot so it can serve the use case at all: 3 replicas
    # admit 3 calls under a limit of 1, exactly replicas_bound(1, 3).
    for indexed in (True, False):
        guards = replicas(1, 3, indexed=indexed)
        admitted = sum(g.acquire("chat").allowed for g in guards for _ in range(3))
        assert admitted == replicas_bound(1, 3) == 3


@pytest.mark.parametrize("limit", range(1, 25))
@pytest.mark.parametrize("n", range(1, 7))
def test_shares_add_up_to_at_most_the_bound(limit: int, n: int) -> None:
    indexed = sum(replica_share(limit, n, i) for i in range(n))
    unindexed = n * replica_share(limit, n)
    assert indexed == replicas_bound(limit, n)
    assert unindexed <= replicas_bound(limit, n)
    assert limit < n or unindexed > limit - n  # an unknown index wastes under one slot each


def test_bad_limits_and_replicas() -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        ConcurrencyLimit(0)
    with pytest.raises(ValueError, match="replica index 3"):
        guard({"chat": 1}, replicas=3, replica_index=3)
    with pytest.raises(ValueError, match="replicas"):
        guard({"chat": 1}, replicas=0)


def test_limits_from_the_environment() -> None:
    env = {
        "SPENDSENTRY_GUARD_CONCURRENCY": "support_chat=20, search=5",
        "SPENDSENTRY_GUARD_CONCURRENCY_PER_SESSION": "support_chat=2",
        "SPENDSENTRY_GUARD_REPLICAS": "3",
        "SPENDSENTRY_GUARD_REPLICA_INDEX": "2",
    }
    settings = guard_settings(env)
    assert settings["concurrency"] == {
        "support_chat": ConcurrencyLimit(20, 2),
        "search": ConcurrencyLimit(5),
    }
    assert (settings["replicas"], settings["replica_index"]) == (3, 2)
    g = ThrottleGuard("localhost:1", KEYS, **settings)
    assert g.slots.share(20) == 6
    assert "concurrency" not in guard_settings({})
    for bad in (
        {"SPENDSENTRY_GUARD_CONCURRENCY": "support_chat"},
        {"SPENDSENTRY_GUARD_CONCURRENCY": "support_chat=0"},
        {"SPENDSENTRY_GUARD_REPLICAS": "two"},
        {"SPENDSENTRY_GUARD_REPLICAS": "2", "SPENDSENTRY_GUARD_REPLICA_INDEX": "2"},
    ):
        with pytest.raises(ConfigError):
            guard_settings(bad)


def test_limits_from_policies_reach_the_guard() -> None:
    policies = PolicySet.load(POLICIES)
    limits = policies.concurrency_limits()
    assert limits["support_chat"] == ConcurrencyLimit(40, 2)
    assert policies.for_use_case("translation").concurrency == ConcurrencyLimit()
    g = guard(dict(limits), replicas=2, replica_index=1)
    assert g.slots.share(40) == 20
    assert sum(g.acquire("support_chat", "s").allowed for _ in range(3)) == 1  # share of 2


@pytest.mark.parametrize(
    "table",
    ["max_in_flight = 0", "max_in_flight = 2.5", "max_in_flight_per_session = -1", "max = 3"],
)
def test_policy_concurrency_is_checked(table: str) -> None:
    with pytest.raises(PolicyError, match="concurrency"):
        PolicySet.from_toml_text(f"[use_cases.chat.concurrency]\n{table}\n")


def test_worked_example_of_the_docs() -> None:
    # docs/throttling.md, "Concurrency limits": support_chat 40 / 2 per session, 3 pods.
    env = {
        "SPENDSENTRY_GUARD_CONCURRENCY": "support_chat=40",
        "SPENDSENTRY_GUARD_CONCURRENCY_PER_SESSION": "support_chat=2",
        "SPENDSENTRY_GUARD_REPLICAS": "3",
    }
    pods = [
        ThrottleGuard(
            "localhost:1",
            KEYS,
            **guard_settings({**env, "SPENDSENTRY_GUARD_REPLICA_INDEX": str(i)}),
        )
        for i in range(3)
    ]
    assert [sum(p.acquire("support_chat", "one").allowed for _ in range(3)) for p in pods] == [
        1,
        1,
        1,
    ]
    admitted = [sum(p.acquire("support_chat", f"s{n}").allowed for n in range(20)) for p in pods]
    assert [a + 1 for a in admitted] == [14, 13, 13]
    refused = pods[0].acquire("support_chat", "s99")
    assert refused.retry_after_s == 1.0
    assert refused.reason == "concurrency limit: 14 in flight (this replica's share of 40)"


def test_a_lost_release_costs_a_slot_for_max_hold_s_at_most() -> None:
    now = [100.0]
    g = guard({"chat": ConcurrencyLimit(2, 1)}, slot_max_hold_s=60.0)
    g.slots.clock = lambda: now[0]
    lost = g.acquire("chat", "s1")  # never released
    assert g.acquire("chat", "s2").allowed
    now[0] += 59.0
    assert not g.acquire("chat", "s3").allowed  # held 59 s: still taken
    assert not g.acquire("chat", "s1").allowed
    now[0] += 2.0
    again = g.acquire("chat", "s1")  # the lost slot (and s2's, held as long) are reclaimed
    assert again.allowed and g.slots.reclaimed == 2 and g.in_flight("chat") == 1
    assert g.release(lost) is False and g.release(again) is True
    assert g.in_flight() == 0
