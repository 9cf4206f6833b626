"""The worker on the real embedded broker, checked against offline replay.

One scenario (a few thousand usage and outcome events over three hours of event
time, single events and JSON arrays, duplicates, bad records and very late
events) goes to Kafka keyed by use case and, in the same order, to a JSON Lines
file for ``spendsentry.replay``. The worker runs as a subprocess
(``python -m spendsentry worker``) so it can be SIGKILLed; its results must equal
replay's: accepted counts, per-use-case totals, dead letters, and the alert
records (replay flushes every minute at end of input, the worker only closes
minutes behind its watermark, so the worker's alerts are compared with replay's
alerts up to the worker's last closed minute).

Late events are produced only after the worker has consumed everything else, so
"late" means the same thing for both (see docs/worker.md, Watermarks).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _worker_harness import (
    Record,
    WorkerProcess,
    caught_up,
    produce,
    read_all,
    replay_dead_letters,
    run_replay,
    write_topics_file,
)

from spendsentry.broker import EmbeddedBroker

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
USE_CASES = ("support_chat", "claims_triage", "sales_email", "code_review", "search_rag", "ops")
MODELS = (("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-haiku"), ("openai", "gpt-4o"))


def _event(rng: random.Random, n: int, ts: float, use_case: str, spike: bool) -> dict[str, Any]:
    if rng.random() < 0.12:
        return {
            "type": "outcome",
            "event_id": f"o-{n}",
            "ts": round(ts, 3),
            "use_case": use_case,
            "outcome": "ticket_resolved",
            "success": rng.random() < 0.8,
        }
    provider, model = MODELS[rng.randrange(len(MODELS))]
    kind = rng.choices(["llm_call", "tool_call", "retrieval", "embedding"], [8, 2, 1, 1])[0]
    factor = 8 if spike else 1
    doc: dict[str, Any] = {
        "event_id": f"u-{n}",
        "ts": round(ts, 3),
        "use_case": use_case,
        "kind": kind,
        "provider": provider,
        "model": model,
        "input_tokens": rng.randint(50, 2000) * factor,
        "output_tokens": rng.randint(10, 600) * factor,
        "session_id": f"s-{use_case}-{rng.randrange(40)}",
    }
    if rng.random() < 0.7:
        doc["cost_usd"] = round(rng.uniform(0.0001, 0.02) * factor, 6)
    return doc


def make_scenario(seed: int = 5, minutes: int = 180) -> tuple[list[Record], list[Record]]:
    """(main records in event-time order, late and bad records sent afterwards)."""
    rng = random.Random(seed)
    start = float(int(time.time() // 60 * 60) - (minutes + 30) * 60)
    docs: list[dict[str, Any]] = []
    n = 0
    for minute in range(minutes):
        for use_case in USE_CASES:
            spike = (use_case == "support_chat" and 100 <= minute < 112) or (
                use_case == "claims_triage" and 140 <= minute < 150
            )
            for _ in range(rng.randint(1, 5) * (4 if spike else 1)):
                n += 1
                ts = start + minute * 60 + rng.uniform(0, 59.9)
                docs.append(_event(rng, n, ts, use_case, spike))
    # Mild disorder, well within the allowed lateness (120 s).
    docs.sort(key=lambda d: d["ts"] + rng.uniform(-20, 20))
    main: list[Record] = []
    i = 0
    while i < len(docs):
        d = docs[i]
        topic = "outcomes" if d.get("type") == "outcome" else "usage"
        key = d["use_case"].encode()
        if topic == "usage" and rng.random() < 0.15:
            # A JSON array of consecutive usage events of the same use case.
            group = [d]
            j = i + 1
            while (
                j < len(docs)
                and len(group) < 4
                and docs[j]["use_case"] == d["use_case"]
                and docs[j].get("type") != "outcome"
            ):
                group.append(docs[j])
                j += 1
            main.append(Record(topic, key, json.dumps(group).encode()))
            i = j
        else:
            main.append(Record(topic, key, json.dumps(d).encode()))
            i += 1
        if rng.random() < 0.01:
            main.append(main[-1])  # a redelivered message: duplicates
    bad = [
        b"{not json",
        b"[1, 2]",
        json.dumps({"event_id": "bad-1", "use_case": "ops"}).encode(),
        json.dumps({"event_id": "bad-2", "ts": "yesterday", "use_case": "ops"}).encode(),
    ]
    for k, value in enumerate(bad):
        main.insert(len(main) * (k + 1) // (len(bad) + 1), Record("usage", b"bad", value))
    # One array with a good and a bad element, timed like its neighbours (an
    # event far ahead would move replay's single watermark, not the worker's).
    at = len(main) // 2
    neighbour = json.loads(main[at].value)
    ts = (neighbour[0] if isinstance(neighbour, list) else neighbour)["ts"]
    mixed = [
        {"event_id": "mix-ok", "ts": ts, "use_case": "ops"},
        {"event_id": "mix-bad", "ts": ts, "use_case": "ops", "input_tokens": -5},
    ]
    main.insert(at, Record("usage", b"ops", json.dumps(mixed).encode()))
    late = [
        Record(
            "usage",
            use_case.encode(),
            json.dumps(
                {"event_id": f"late-{k}", "ts": start + 60 * 30 + k, "use_case": use_case}
            ).encode(),
        )
        for k, use_case in enumerate(USE_CASES)
    ]
    late.append(Record("usage", b"bad", b"still not json"))
    return main, late


# -- helpers ------------------------------------------------------------------


def read_docs(bootstrap: str, topic: str, partitions: int) -> list[dict[str, Any]]:
    """Every record of ``topic``, decoded, in (partition, offset) order."""
    return [json.loads(v) for v in asyncio.run(read_all(bootstrap, topic, partitions))]


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(bootstrap: str, topics_file: Path, group: str, interval: str = "1") -> WorkerProcess:
        w = WorkerProcess(
            bootstrap, topics_file, tmp_path / "state", group, snapshot_interval=float(interval)
        )
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def _dead_key(d: dict[str, Any]) -> tuple[str, str]:
    return d["reason"], d["original_b64"]


def _alert_key(a: dict[str, Any]) -> tuple[str, str, str, int]:
    return a["alert_id"], a["status"], a["severity"], a["incident_seq"]


def check_against_replay(
    status: dict[str, Any],
    tmp: Path,
    records: list[Record],
    alerts: list[dict[str, Any]],
    dead: list[dict[str, Any]],
) -> None:
    # Batches of 500 (the worker's --max-batch): the late events at the end fall
    # in a batch of their own in replay, as they do in the worker.
    expected, replay_alerts = run_replay(records, tmp)
    replay_dead = replay_dead_letters(tmp)
    assert status["accepted"] == expected["accepted"]
    assert status["duplicates"] == expected["duplicates"]
    assert status["late"] == expected["rejected"].get("late", 0) > 0
    assert set(status["use_cases"]) == set(expected["use_cases"])
    for name, totals in expected["use_cases"].items():
        got = status["use_cases"][name]
        assert got["events_by_kind"] == totals["events_by_kind"], name
        assert got["input_tokens"] == totals["input_tokens"], name
        assert got["output_tokens"] == totals["output_tokens"], name
        assert got["cost_usd"] == pytest.approx(totals["cost_usd"], abs=1e-6), name
    assert Counter(map(_dead_key, dead)) == Counter(map(_dead_key, replay_dead))
    # The worker closes minutes up to its watermark; replay also flushes the rest.
    closed = status["closed_until_ts"]
    expected_alerts = [a for a in replay_alerts if _ts(a["detected_at"]) <= closed]
    expected_alerts = _sorted_alerts(expected_alerts)
    assert [_alert_key(a) for a in alerts] == [_alert_key(a) for a in expected_alerts]
    assert alerts == expected_alerts
    assert len(set(map(_alert_key, alerts))) == len(alerts), "duplicate alert records"


def _ts(text: str) -> float:
    from spendsentry.timeutil import parse_ts

    return parse_ts(text)


def _sorted_alerts(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # ai.alerts has several partitions: compare in the engine's emission order,
    # which is (detected_at, use_case, kind) for alerts of one closed minute.
    return sorted(alerts, key=lambda a: (a["detected_at"], a["use_case"], a["kind"]))


# -- tests --------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_worker_matches_replay_and_serves_metrics(
    broker: EmbeddedBroker,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    main, late = make_scenario()
    names = write_topics_file(tmp_path / "topics.toml", unique_name("w"))
    worker = worker_factory(broker.bootstrap, tmp_path / "topics.toml", unique_name("g"))
    # Topics exist (created by the worker, with their partition counts) once it serves.
    worker.wait_for(lambda s: len(s["assignment"]) == 7, 90, "the group join")  # 6 + ai.control
    asyncio.run(produce(broker.bootstrap, names, main))
    worker.wait_for(lambda s: caught_up(s, len(main)), 90, "the main records")
    asyncio.run(produce(broker.bootstrap, names, late))
    total = len(main) + len(late)
    status = worker.wait_for(lambda s: caught_up(s, total), 60, "all records")
    # Engine-work counters show the last durable snapshot: wait for the one
    # that holds the late records (docs/reliability.md, metrics across restarts).
    status = worker.wait_for(
        lambda s: sum(p["committed_records"] for p in s["partitions"].values()) == total,
        30,
        "a snapshot of every record",
    )
    metrics = worker.get("/metrics").decode()
    assert "spendsentry_events_total{" in metrics
    assert re.search(r'spendsentry_rejected_total\{[^}]*reason="late"', metrics), (
        status,
        [line for line in metrics.splitlines() if "rejected" in line],
    )
    alerts = _sorted_alerts(read_docs(broker.bootstrap, names["alerts"], 2))
    dead = read_docs(broker.bootstrap, names["deadletter"], 2)
    check_against_replay(status, tmp_path / "replay", main + late, alerts, dead)
    assert worker.stop() == 0, worker.tail()


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "snapshot_interval",
    [
        pytest.param("1", id="snapshots-every-second"),
        # Only the start-up snapshot: the restart re-runs everything the first
        # worker did, and every alert it had published must be suppressed.
        pytest.param("600", id="startup-snapshot-only"),
    ],
)
def test_worker_survives_sigkill_without_duplicate_alerts(
    broker: EmbeddedBroker,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    worker_factory: Callable[..., WorkerProcess],
    snapshot_interval: str,
) -> None:
    main, late = make_scenario(seed=11)
    # Minute ~150: after three of the scenario's four alert records.
    cut = len(main) * 5 // 6
    names = write_topics_file(tmp_path / "topics.toml", unique_name("k"))
    group = unique_name("g")
    first = worker_factory(broker.bootstrap, tmp_path / "topics.toml", group, snapshot_interval)
    first.wait_for(lambda s: len(s["assignment"]) == 7, 90, "the group join")  # 6 + ai.control
    asyncio.run(produce(broker.bootstrap, names, main[:cut]))
    first.wait_for(lambda s: caught_up(s, cut), 60, "the first part")
    published_before = read_docs(broker.bootstrap, names["alerts"], 2)
    assert len(published_before) >= 2, "the scenario should alert before the kill"
    first.kill()
    # The second half arrives while no worker runs.
    asyncio.run(produce(broker.bootstrap, names, main[cut:]))
    second = worker_factory(broker.bootstrap, tmp_path / "topics.toml", group, snapshot_interval)
    # The dead member's session (6 s) has to expire before the group rebalances.
    status = second.wait_for(
        lambda s: s["restored"] and caught_up(s, len(main)), 120, "the restart"
    )
    if snapshot_interval == "600":
        assert status["alerts_suppressed"] == len(published_before)
    else:
        assert status["alerts_suppressed"] <= len(published_before)
    asyncio.run(produce(broker.bootstrap, names, late))
    total = len(main) + len(late)
    status = second.wait_for(lambda s: caught_up(s, total), 60, "all records")
    alerts = _sorted_alerts(read_docs(broker.bootstrap, names["alerts"], 2))
    dead = read_docs(broker.bootstrap, names["deadletter"], 2)
    # Dead letters are at-least-once: those published between the last snapshot
    # and the kill are published again. Each must still be one replay has.
    unique_dead = list({_dead_key(d): d for d in dead}.values())
    check_against_replay(status, tmp_path / "replay", main + late, alerts, unique_dead)
    assert second.stop() == 0, second.tail()
