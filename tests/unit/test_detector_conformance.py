"""One conformance suite over every detector (the River estimator checks, our way).

Each detector is exercised on a plain synthetic stream: same input gives the same
output, scoring changes nothing, a pickle round-trip keeps behaviour, and a
quality floor: a clear shift is scored far above normal noise.
"""

from __future__ import annotations

import pickle
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from spendsentry.detectors import RateSpikeDetector, RatioShiftDetector, SessionLengthDetector


@dataclass
class Case:
    name: str
    make: Callable[[], Any]
    #: One normal observation (the args of learn_one / score_one) from an rng.
    normal: Callable[[random.Random], tuple]
    #: One anomalous observation.
    anomalous: Callable[[random.Random], tuple]
    warmup: int


def _ratio_normal(rng: random.Random) -> tuple:
    calls = rng.randint(15, 25)
    return (sum(rng.lognormvariate(7.0, 0.8) for _ in range(calls)), calls)


def _ratio_anomalous(rng: random.Random) -> tuple:
    num, calls = _ratio_normal(rng)
    return (num * 2.5, calls)


CASES = [
    Case(
        "RatioShiftDetector",
        lambda: RatioShiftDetector(window=5, warmup=200),
        _ratio_normal,
        _ratio_anomalous,
        400,
    ),
    Case(
        "RatioShiftDetector(proportion)",
        lambda: RatioShiftDetector(window=5, warmup=200, min_ratio=1.5, min_delta=0.15),
        lambda rng: (float(sum(rng.random() < 0.02 for _ in range(40))), 40.0),
        lambda rng: (float(sum(rng.random() < 0.5 for _ in range(40))), 40.0),
        400,
    ),
    Case(
        "RateSpikeDetector",
        lambda: RateSpikeDetector(window=10, warmup=90),
        lambda rng: (rng.lognormvariate(0.0, 0.3),),
        lambda rng: (6.0 * rng.lognormvariate(0.0, 0.3),),
        300,
    ),
    Case(
        "SessionLengthDetector",
        lambda: SessionLengthDetector(warmup=30),
        lambda rng: (float(rng.randint(4, 12)),),
        lambda rng: (float(rng.randint(80, 120)),),
        300,
    ),
]


def _learn(det: Any, stream: list[tuple]) -> None:
    for x in stream:
        det.learn_one(*x)


def _stream(case: Case, seed: int, n: int) -> list[tuple]:
    rng = random.Random(seed)
    return [case.normal(rng) for _ in range(n)]


@pytest.fixture(params=CASES, ids=lambda c: c.name)
def case(request) -> Case:
    return request.param


def test_same_input_same_output(case: Case):
    scores = []
    for _ in range(2):
        det = case.make()
        rng = random.Random(5)
        out = []
        for _ in range(case.warmup):
            x = case.normal(rng)
            out.append(det.score_one(*x))
            det.learn_one(*x)
        scores.append(out)
    assert scores[0] == scores[1]


def test_scoring_changes_nothing(case: Case):
    det = case.make()
    _learn(det, _stream(case, 1, case.warmup))
    before = pickle.dumps(det)
    rng = random.Random(2)
    for _ in range(20):
        det.score_one(*case.anomalous(rng))
        det.score_one(*case.normal(rng))
    assert pickle.dumps(det) == before


def test_pickle_round_trip_keeps_behaviour(case: Case):
    det = case.make()
    _learn(det, _stream(case, 3, case.warmup))
    clone = pickle.loads(pickle.dumps(det))
    rest = _stream(case, 4, 50) + [case.anomalous(random.Random(9)) for _ in range(10)]
    for x in rest:
        assert det.score_one(*x) == clone.score_one(*x)
        det.learn_one(*x)
        clone.learn_one(*x)


def test_quality_floor_anomalies_score_far_above_noise(case: Case):
    det = case.make()
    _learn(det, _stream(case, 6, case.warmup))
    rng = random.Random(7)
    normal = [det.score_one(*case.normal(rng)) for _ in range(200)]
    # A sustained shift: windowed detectors see it once their window fills.
    shifted = []
    for _ in range(12):
        x = case.anomalous(rng)
        shifted.append(det.score_one(*x))
        det.learn_one(*x)
    noise_ceiling = sorted(normal)[int(0.99 * len(normal))]
    assert max(shifted) > 2 * max(noise_ceiling, 0.5), (noise_ceiling, shifted)


def test_no_scores_before_warm_up(case: Case):
    det = case.make()
    rng = random.Random(8)
    for _ in range(5):
        x = case.anomalous(rng)
        assert det.score_one(*x) == 0.0
        det.learn_one(*x)
