"""A ratio kind's persistence counts minutes of evidence, not minutes of the clock."""

from __future__ import annotations

import math
import random

from _monitors import context, feed

from spendsentry.detectors import build_monitors
from spendsentry.detectors.kinds.ratio import RatioKind
from spendsentry.policy import PolicySet
from spendsentry.windows import MinuteSignals


def _prompt_monitor() -> RatioKind:
    policy = PolicySet.empty().for_use_case("agent")
    [monitor] = [m for m in build_monitors("agent", policy) if m.kind == "prompt_inflation"]
    assert isinstance(monitor, RatioKind)
    return monitor


def _minute(rng: random.Random, minute: int, calls: int, factor: float = 1.0) -> MinuteSignals:
    """``calls`` LLM calls with prompts of ~2,000 tokens (x ``factor``)."""
    logs = sum(math.log1p(factor * rng.lognormvariate(7.6, 0.5)) for _ in range(calls))
    return MinuteSignals(
        "agent", minute, llm_calls=calls, llm_log_input=round(logs * 1e6), cost=0.001 * calls
    )


def _history(rng: random.Random) -> list[MinuteSignals]:
    # Ten hours of a sparse agent: 0-8 calls a minute.
    return [_minute(rng, m, rng.randint(0, 8)) for m in range(600)]


def test_idle_minutes_after_a_few_odd_calls_confirm_nothing() -> None:
    rng = random.Random(1)
    minutes = _history(rng)
    # One minute of 18 calls with 2.5x prompts, then the agent is idle for 3 minutes:
    # the window keeps judging those same calls, which is not a shift that held.
    minutes.append(_minute(rng, 600, 18, 2.5))
    minutes += [MinuteSignals("agent", m) for m in range(601, 604)]
    minutes += [_minute(rng, m, rng.randint(0, 8)) for m in range(604, 700)]
    assert feed(_prompt_monitor(), minutes, context("agent")) == []


def test_the_same_calls_over_two_minutes_with_data_do_confirm() -> None:
    rng = random.Random(1)
    minutes = _history(rng)
    minutes += [_minute(rng, 600, 9, 2.5), _minute(rng, 601, 9, 2.5)]
    minutes += [MinuteSignals("agent", m) for m in range(602, 605)]
    found = feed(_prompt_monitor(), minutes, context("agent"))
    assert found and found[0][0] == 601
    # Once confirmed, idle minutes keep it alive while the window still holds it.
    assert [m for m, _ in found][:3] == [601, 602, 603]
