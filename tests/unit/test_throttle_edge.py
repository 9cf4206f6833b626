"""Throttle commands at the publishing edge: event time in the engine, wall clock on the wire.

A real :class:`ThrottlePlanner` issues the commands (event time) and a real
:class:`ThrottleGuard` (``apply``/``check`` without a broker, at a given wall
clock) judges what the edge publishes.
"""

from __future__ import annotations

from spendsentry.actions import ThrottleKeys, ThrottlePlanner, verify
from spendsentry.actions.commands import ThrottleCommand
from spendsentry.alerts import Alert
from spendsentry.client import ThrottleGuard
from spendsentry.contracts import validate
from spendsentry.policy import LadderStep, Policy
from spendsentry.timeutil import parse_ts
from spendsentry.worker.throttle_edge import CommandEdge, wall_clock_doc

KEY = "edge-test-key"
KEYS = ThrottleKeys.of(KEY)
POLICY = Policy(
    "support_chat",
    auto_throttle="on",
    cooldown_s=0,
    max_duration_s=3600,
    ladder=(LadderStep("critical", "block"),),
)
#: Event time of the incident: a day before the wall clock below.
T0 = 1_793_610_000.0
WALL = T0 + 86_400.0


def _alert(status: str, at: float) -> Alert:
    return Alert("ab" * 8, "cost_spike", "support_chat", "critical", status, at, T0, "x9", {}, 4.0)


def _block_and_release(planner: ThrottlePlanner) -> tuple[ThrottleCommand, ThrottleCommand]:
    block = planner.plan(_alert("firing", T0), POLICY)
    release = planner.plan(_alert("resolved", T0 + 600), POLICY)
    assert block is not None and release is not None
    return block, release


def _guard() -> ThrottleGuard:
    return ThrottleGuard("127.0.0.1:1", KEYS)  # never started: apply() and check() only


def test_event_time_command_is_expired_for_a_gateway_but_the_restamped_one_is_enforced() -> None:
    block = ThrottlePlanner().plan(_alert("firing", T0), POLICY)
    assert block is not None
    # What the worker published before: event time, a day behind the gateway's clock.
    assert _guard().apply(block.to_dict(KEYS), now=WALL) == "expired"
    doc = wall_clock_doc(block, KEYS, event_time=T0 + 60, now=WALL)
    assert validate("throttle-command", doc) == [] and verify(doc, [KEY])
    assert doc["event_time_issued_at"] == block.to_dict()["issued_at"]
    assert doc["command_id"] == block.command_id and doc["version"] == block.version
    # The time it has left at the head of the stream (59 min), now on the wall clock.
    assert parse_ts(doc["expires_at"]) - WALL == 3540.0
    assert parse_ts(doc["issued_at"]) == WALL - 60
    guard = _guard()
    assert guard.apply(doc, now=WALL) == "applied"
    decision = guard.check("support_chat", now=WALL + 1)
    assert decision.action == "deny" and decision.retry_after_s == 3539.0


def test_a_live_worker_publishes_as_before_and_a_release_is_never_in_the_future() -> None:
    block = ThrottlePlanner().plan(_alert("firing", T0), POLICY)
    assert block is not None
    live = wall_clock_doc(block, KEYS, event_time=T0, now=T0)
    assert (live["issued_at"], live["expires_at"]) == (
        block.to_dict()["issued_at"],
        block.to_dict()["expires_at"],
    )
    # An operator's release carries wall-clock time, ahead of a lagging event time.
    ahead = ThrottleCommand.build(
        block.scope, "release", {}, version=2, issued_at=WALL, expires_at=WALL + 3600,
        reason=block.reason,
    )  # fmt: skip
    doc = wall_clock_doc(ahead, KEYS, event_time=T0, now=WALL)
    assert parse_ts(doc["issued_at"]) == WALL


def test_catching_up_publishes_only_the_release_of_an_incident_resolved_in_the_backlog() -> None:
    planner = ThrottlePlanner()
    edge = CommandEdge()
    block, release = _block_and_release(planner)
    edge.offer([block], now=WALL)
    assert not edge.due(lagging=True, event_time=T0 + 60, now=WALL + 1)  # behind: held
    edge.offer([release], now=WALL + 2)
    # Caught up (nothing waiting on the partitions), event time still a day behind.
    assert edge.due(lagging=False, event_time=T0 + 700, now=WALL + 3)
    out = edge.take(planner.latest)
    assert out == [release] and edge.skipped == 1
    guard = _guard()
    for cmd in out:
        edge.mark_published(cmd)
        guard.apply(wall_clock_doc(cmd, KEYS, event_time=T0 + 700, now=WALL + 3), now=WALL + 3)
    # The gateway ends where a live run leaves it: no command on the scope.
    assert guard.check("support_chat", now=WALL + 4).allowed
    assert guard.counts["released"] == 1 and guard.counts["applied"] == 0
    assert not edge.waiting and edge.take(planner.latest) == []


def test_a_block_still_in_force_at_the_head_is_published_with_the_time_it_has_left() -> None:
    planner = ThrottlePlanner()
    edge = CommandEdge()
    block = planner.plan(_alert("firing", T0), POLICY)
    assert block is not None
    edge.offer([block], now=WALL)
    head = T0 + 1800  # the backlog ends half an hour of event time later
    assert edge.due(lagging=False, event_time=head, now=WALL + 5)
    (cmd,) = edge.take(planner.latest)
    doc = wall_clock_doc(cmd, KEYS, event_time=head, now=WALL + 5)
    assert parse_ts(doc["expires_at"]) == WALL + 5 + 1800
    guard = _guard()
    assert guard.apply(doc, now=WALL + 5) == "applied"
    assert not guard.check("support_chat", now=WALL + 6).allowed
    # Past the block's end at the head: it arrives expired and the gateway allows.
    late = wall_clock_doc(cmd, KEYS, event_time=T0 + 7200, now=WALL + 5)
    assert _guard().apply(late, now=WALL + 5) == "expired"


def test_busy_live_worker_publishes_at_once_and_a_worker_that_stays_behind_after_a_while() -> None:
    edge = CommandEdge(catch_up_after_s=300, max_hold_s=60)
    block = ThrottlePlanner().plan(_alert("firing", T0), POLICY)
    assert block is not None
    edge.offer([block], now=T0)
    # Records waiting but event time current: a busy live worker, not catching up.
    assert edge.due(lagging=True, event_time=T0 - 30, now=T0)
    edge = CommandEdge(catch_up_after_s=300, max_hold_s=60)
    edge.offer([block], now=WALL)
    assert not edge.due(lagging=True, event_time=T0, now=WALL + 59)
    assert edge.due(lagging=True, event_time=T0, now=WALL + 60)


def test_a_restored_engine_publishes_what_it_holds_and_the_topic_does_not() -> None:
    planner = ThrottlePlanner()
    block = planner.plan(_alert("firing", T0), POLICY)
    assert block is not None
    # A crash after the snapshot, before the held block went out: the restored
    # engine will not issue it again, the edge finds it in the planner.
    edge = CommandEdge()
    edge.revisit(planner.recent(T0 - 86_400), now=WALL)
    assert edge.take(planner.latest) == [block]
    # Already on the topic (read at start-up): nothing to repeat.
    edge = CommandEdge()
    edge.known({"support_chat": 1})
    edge.revisit(planner.recent(T0 - 86_400), now=WALL)
    assert edge.take(planner.latest) == []
    # A scope this worker no longer owns is not published by it.
    edge = CommandEdge()
    edge.offer([block], now=WALL)
    assert edge.take(lambda key: None) == []
