"""Forged records on the throttle topic: engine state and the cost of judging them.

Run: ``.venv/bin/python benchmarks/bench_throttle_trust.py`` (docs/reliability.md,
"The throttle topic under attack"). Prints the pickle size of a fresh engine,
of one that learnt 50,000 junk scope keys the way the worker did before issue 12
(every key, unverified), and of one fed through today's path (verified commands
only); then how long judging 50,000 junk and 50,000 forged commands takes.
"""

from __future__ import annotations

import pickle
import time

import orjson

from spendsentry.actions import ThrottleKeys
from spendsentry.actions.commands import CommandReason, Scope, ThrottleCommand
from spendsentry.client import ThrottleTopic
from spendsentry.engine import Engine
from spendsentry.policy import PolicySet

N = 50_000
KEYS = ThrottleKeys.of("the-real-key")


def judge(values: list[bytes]) -> tuple[ThrottleTopic, float]:
    found = ThrottleTopic()
    started = time.perf_counter()
    for value in values:
        found.take(value, KEYS)
    return found, time.perf_counter() - started


def main() -> None:
    junk = [b'{"scope_key":"junk-%d","version":1}' % i for i in range(N)]
    fresh = len(pickle.dumps(Engine(PolicySet.empty())))
    old = Engine(PolicySet.empty())
    for i in range(N):
        old.planner.observe_version(f"junk-{i}", 1)
    found, took = judge(junk)
    new = Engine(PolicySet.empty())
    for key, version in found.versions(10_000).items():
        new.planner.observe_version(key, version)
    print(
        f"engine pickle: fresh {fresh} B, old path {len(pickle.dumps(old))} B, "
        f"new path {len(pickle.dumps(new))} B"
    )
    print(f"judging {N} junk records: {took:.2f} s; rejected {dict(found.rejected)}")
    base = ThrottleCommand.build(
        Scope("x"), "block", {}, version=1, issued_at=1793610000.0, expires_at=1793613600.0,
        reason=CommandReason(None, None, "t"),
    ).to_dict(ThrottleKeys.of("attacker"))  # fmt: skip
    forged = [
        orjson.dumps({**base, "scope_key": f"junk-{i}", "scope": {"use_case": f"junk-{i}"}})
        for i in range(N)
    ]
    found, took = judge(forged)
    print(f"judging {N} forged commands: {took:.2f} s; rejected {dict(found.rejected)}")


if __name__ == "__main__":
    main()
