"""Faults: kills, a broker restart, redelivery and disorder, a 10x burst.

The worker tests run ``spendsentry worker`` as a subprocess (loopback only, its
own process group) on labelled simulator traffic and compare with offline
replay of the same messages, which is the reference: the engine is
deterministic, so anything a fault lost or doubled shows up as a difference.
The engine tests at the top check the same properties in-process, quickly.

docs/reliability.md quotes the figures these tests print (``pytest -s``: one
``FIGURES`` line per test).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from _worker_harness import (
    PARTITIONS,
    Record,
    WorkerProcess,
    as_records,
    assert_same_alerts,
    assert_totals_equal,
    caught_up,
    count_events,
    produce,
    read_all,
    run_replay,
    scenario_events,
    seeded_points,
    topic_specs,
    write_topics_file,
)

from spendsentry.actions import ThrottleKeys
from spendsentry.actions.commands import CommandReason, Scope, ThrottleCommand
from spendsentry.broker import EmbeddedBroker, ensure_topics
from spendsentry.client import ThrottleGuard
from spendsentry.engine import Engine
from spendsentry.events import Event
from spendsentry.ingest import Decoder, SourcePosition
from spendsentry.policy import PolicySet
from spendsentry.timeutil import parse_ts

INCIDENTS = ("cost_spike", "agent_chatter", "fallback_drift")
#: Peak traced memory of the engine through a 10x burst (docs/reliability.md).
ENGINE_BURST_PEAK_LIMIT_MB = 64
#: Peak resident memory of the worker process through the burst.
WORKER_BURST_RSS_LIMIT_MB = 600


def _figures(test: str, **numbers: object) -> None:
    print(f"\nFIGURES {test}: " + ", ".join(f"{k}={v}" for k, v in numbers.items()))


# -- the engine, in-process ------------------------------------------------------

AlertRow = tuple[str, str, str, str, int]


def _decoded(docs: list[dict[str, Any]]) -> list[Event]:
    decoder = Decoder()
    events: list[Event] = []
    for doc in docs:
        result = decoder.decode(orjson.dumps(doc), SourcePosition("scenario"))
        assert not result.rejected, result.rejected
        events += result.events
    return events


def _engine_alerts(
    docs: list[dict[str, Any]], *, batch: int = 500, backlog_until: int = 0
) -> tuple[list[AlertRow], Engine]:
    """Alerts of one engine run, replay-style: process a batch, then advance.

    ``backlog_until``: no minute closes before that many events were ingested,
    as when a restarted worker reads a backlog or a partition holds event time.
    """
    events = _decoded(docs)
    engine = Engine(PolicySet.empty())
    rows: list[AlertRow] = []
    for start in range(0, len(events), batch):
        out = engine.process(events[start : start + batch])
        if start + batch >= backlog_until:
            out.extend(engine.advance())
        rows += [(a.alert_id, a.use_case, a.kind, a.status, a.incident_seq) for a in out.alerts]
    rows += [
        (a.alert_id, a.use_case, a.kind, a.status, a.incident_seq) for a in engine.flush().alerts
    ]
    return rows, engine


@pytest.fixture(scope="module")
def scenario_docs() -> list[dict[str, Any]]:
    return scenario_events(seed=7, hours=4, incidents=INCIDENTS)


@pytest.fixture(scope="module")
def clean_alerts(scenario_docs: list[dict[str, Any]]) -> list[AlertRow]:
    rows, _ = _engine_alerts(scenario_docs)
    assert {kind for _, _, kind, status, _ in rows if status == "firing"} >= set(INCIDENTS)
    return rows


def test_every_batch_delivered_twice_gives_the_clean_alerts(
    scenario_docs: list[dict[str, Any]], clean_alerts: list[AlertRow]
) -> None:
    doubled = []
    for start in range(0, len(scenario_docs), 500):
        doubled += scenario_docs[start : start + 500] * 2
    rows, engine = _engine_alerts(doubled, batch=1000)
    assert rows == clean_alerts
    assert engine.stats.duplicates == len(scenario_docs)


def test_shuffled_within_60_s_gives_the_clean_alerts(
    scenario_docs: list[dict[str, Any]], clean_alerts: list[AlertRow]
) -> None:
    rng = random.Random(60)
    shuffled = sorted(scenario_docs, key=lambda d: parse_ts(d["ts"]) + rng.uniform(0, 60))
    assert shuffled != scenario_docs
    rows, engine = _engine_alerts(shuffled)
    assert engine.stats.late == 0
    assert rows == clean_alerts


@pytest.mark.parametrize("fraction", [0.35, 0.7, 1.0])
def test_a_backlog_closed_late_gives_the_clean_alerts(
    scenario_docs: list[dict[str, Any]], clean_alerts: list[AlertRow], fraction: float
) -> None:
    # A restarted worker reads a backlog: many events, including the first ones
    # of use cases not seen before, are ingested before the minutes close. A
    # new use case's monitors must still start at its first event's minute
    # (before the fix they saw hours of empty minutes: a phantom cost spike).
    rows, _ = _engine_alerts(scenario_docs, backlog_until=int(len(scenario_docs) * fraction))
    assert rows == clean_alerts


def test_engine_memory_through_a_10x_burst_is_bounded() -> None:
    docs = scenario_events(seed=11, hours=2.5, incidents=())
    normal_rate = len(docs) / 150  # events per minute
    # The last 30 minutes at ten times the rate: every event ten times, new ids.
    burst_from = parse_ts(docs[-1]["ts"]) - 1800
    burst = [
        {**d, "event_id": f"{d['event_id']}-x{k}"}
        for d in docs
        if parse_ts(d["ts"]) >= burst_from
        for k in range(10)
    ]
    calm = [d for d in docs if parse_ts(d["ts"]) < burst_from]
    events = _decoded(calm + burst)
    engine = Engine(PolicySet.empty())
    tracemalloc.start()
    try:
        for start in range(0, len(events), 5000):
            engine.process(events[start : start + 5000])
            engine.advance()
        engine.flush()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    peak_mb = peak / 2**20
    assert engine.stats.accepted == len(events)
    assert peak_mb < ENGINE_BURST_PEAK_LIMIT_MB
    _figures(
        "engine_burst",
        normal_events_per_min=round(normal_rate),
        burst_events=len(burst),
        events=len(events),
        traced_peak_mb=round(peak_mb, 1),
    )


# -- the worker on the broker -------------------------------------------------------


def _alerts(bootstrap: str, names: dict[str, str]) -> list[dict[str, Any]]:
    values = asyncio.run(read_all(bootstrap, names["alerts"], PARTITIONS["alerts"]))
    return [orjson.loads(v) for v in values]


def _joined(worker: WorkerProcess, timeout: float = 90) -> None:
    # 6 input partitions + ai.control. A killed member's session (6 s) must
    # expire before the group rebalances, so a restart takes ~10-15 s here.
    worker.wait_for(lambda s: len(s["assignment"]) == 7, timeout, "the group join")


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_sigkill_three_times_loses_and_repeats_no_alert(
    broker: EmbeddedBroker,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    workers: list[WorkerProcess],
    scenario_docs: list[dict[str, Any]],
) -> None:
    records = as_records(scenario_docs)
    names = write_topics_file(tmp_path / "topics.toml", unique_name("kill"))
    group, state = unique_name("g"), tmp_path / "state"
    rng = random.Random(2026)
    # Three kills at random points: after a random share of the input has been
    # produced and a random delay, so they land mid-batch, between a snapshot
    # and its offset commit, or while idle.
    cuts = [*seeded_points(2026, 3, len(records)), len(records)]

    def start() -> WorkerProcess:
        w = WorkerProcess(broker.bootstrap, tmp_path / "topics.toml", state, group)
        workers.append(w)
        _joined(w)
        return w

    worker = start()
    produced, kills, restored = 0, 0, []
    for cut in cuts:
        asyncio.run(produce(broker.bootstrap, names, records[produced:cut]))
        produced = cut
        if cut == len(records):
            break
        time.sleep(rng.uniform(0.2, 2.5))
        worker.kill()
        kills += 1
        worker = start()
        restored.append(worker.wait_for(lambda s: s["restored"], 30, "the restore")["records"])
    last_event = max(parse_ts(d["ts"]) for d in scenario_docs)
    status = worker.wait_for(
        lambda s: caught_up(s, len(records), until=last_event), 120, "all records"
    )
    # The live worker goes on closing minutes after this status (on the wall
    # clock past the data's end, where replay never goes): compare both up to
    # the status's last closed minute, and not past the data's end.
    cutoff = min(status["closed_until_ts"], (last_event // 60 + 1) * 60)
    published = [
        a for a in _alerts(broker.bootstrap, names) if parse_ts(a["detected_at"]) <= cutoff
    ]
    expected, replay_alerts = run_replay(records, tmp_path / "replay")
    # Totals first: a difference there (events lost, doubled or late) explains
    # any difference in the alerts.
    assert_totals_equal(status, expected)
    delivered = assert_same_alerts(published, replay_alerts, cutoff)
    assert any(a["status"] == "firing" for a in published), "the scenario should alert"
    assert worker.stop() == 0, worker.tail()
    _figures(
        "sigkill",
        events=count_events(records),
        messages=len(records),
        kills=kills,
        records_consumed_at_each_restore=restored,
        alerts_expected=delivered,
        alerts_published=len(published),
        suppressed_after_last_restart=status["alerts_suppressed"],
    )


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_redelivered_and_reordered_input_gives_the_clean_alerts(
    broker: EmbeddedBroker,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    docs = scenario_events(seed=5, hours=3, incidents=("cost_spike", "prompt_inflation"))
    clean = as_records(docs)
    # Shuffled within 60 s of event time, then every 200-message batch sent twice
    # (a producer retrying a batch it thought lost).
    rng = random.Random(61)
    shuffled = as_records(sorted(docs, key=lambda d: parse_ts(d["ts"]) + rng.uniform(0, 60)))
    sent: list[Record] = []
    for start in range(0, len(shuffled), 200):
        sent += shuffled[start : start + 200] * 2
    names = write_topics_file(tmp_path / "topics.toml", unique_name("dup"))
    # No throttle key, but auto-throttle on: commands are planned, none may be published.
    worker = WorkerProcess(
        broker.bootstrap,
        tmp_path / "topics.toml",
        tmp_path / "state",
        unique_name("g"),
        env={
            "SPENDSENTRY_AUTO_THROTTLE": "on",
            "SPENDSENTRY_THROTTLE_KEY": "",
            "SPENDSENTRY_THROTTLE_KEYS": "",
            "SPENDSENTRY_THROTTLE_KEY_FILE": "",
        },
    )
    workers.append(worker)
    _joined(worker)
    asyncio.run(produce(broker.bootstrap, names, sent))
    last_event = max(parse_ts(d["ts"]) for d in docs)
    status = worker.wait_for(
        lambda s: caught_up(s, len(sent), until=last_event), 120, "all records"
    )
    expected, replay_alerts = run_replay(clean, tmp_path / "replay")
    # Past the last event, the live worker keeps closing minutes as the wall
    # clock runs (idle sources): an incident may resolve there, which replay,
    # ending with the data, never sees. Compare up to the data's last minute.
    data_end = (last_event // 60 + 1) * 60
    cutoff = min(status["closed_until_ts"], data_end)
    published = [
        a for a in _alerts(broker.bootstrap, names) if parse_ts(a["detected_at"]) <= cutoff
    ]
    delivered = assert_same_alerts(published, replay_alerts, cutoff)
    assert status["duplicates"] == count_events(clean)
    assert status["late"] == 0
    assert_totals_equal(status, expected)
    throttle = asyncio.run(read_all(broker.bootstrap, names["throttle"], 1))
    assert status["throttle"]["unpublished_no_key"] > 0 and status["throttle"]["published"] == 0
    assert throttle == [], "a command was published without a signing key"
    _figures(
        "redelivery",
        events=count_events(clean),
        messages_sent=len(sent),
        duplicates_dropped=status["duplicates"],
        alerts_expected=delivered,
        commands_withheld_without_key=status["throttle"]["unpublished_no_key"],
    )


def _metric(text: str, name: str) -> list[float]:
    return [float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)]


def _rss_peak_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc")


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_a_10x_burst_keeps_memory_bounded_and_lag_recovers(
    broker: EmbeddedBroker,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    docs = scenario_events(seed=13, hours=2.5, incidents=())
    burst_from = parse_ts(docs[-1]["ts"]) - 1800
    calm = as_records([d for d in docs if parse_ts(d["ts"]) < burst_from])
    burst = as_records(
        [
            {**d, "event_id": f"{d['event_id']}-x{k}"}
            for d in docs
            if parse_ts(d["ts"]) >= burst_from
            for k in range(10)
        ]
    )
    names = write_topics_file(tmp_path / "topics.toml", unique_name("burst"))
    worker = WorkerProcess(
        broker.bootstrap, tmp_path / "topics.toml", tmp_path / "state", unique_name("g")
    )
    workers.append(worker)
    _joined(worker)
    asyncio.run(produce(broker.bootstrap, names, calm))
    worker.wait_for(lambda s: caught_up(s, len(calm)), 90, "the calm part")
    rss_before = _rss_peak_mb(worker.proc.pid)
    lags: list[float] = []
    stop = threading.Event()

    def sample_lag() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):  # a slow scrape: the next one counts
                lags.append(
                    sum(_metric(worker.get("/metrics").decode(), "spendsentry_consumer_lag"))
                )
            stop.wait(0.2)

    sampler = threading.Thread(target=sample_lag, daemon=True)
    sampler.start()
    began = time.monotonic()
    try:
        asyncio.run(produce(broker.bootstrap, names, burst))
        produced_s = time.monotonic() - began
        total = len(calm) + len(burst)
        worker.wait_for(lambda s: s["records"] == total, 90, "the burst")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not lags or lags[-1] > 0):
            time.sleep(0.2)
        recovered_s = time.monotonic() - began
    finally:
        stop.set()
        sampler.join(5)
    assert lags and lags[-1] == 0, f"consumer lag did not return to 0: {lags[-10:]}"
    rss_peak = _rss_peak_mb(worker.proc.pid)
    assert rss_peak < WORKER_BURST_RSS_LIMIT_MB
    status = worker.wait_for(lambda s: caught_up(s, total), 60, "event time")
    assert status["late"] == 0
    _figures(
        "burst",
        calm_events=count_events(calm),
        burst_events=count_events(burst),
        burst_messages=len(burst),
        produce_s=round(produced_s, 1),
        lag_back_to_0_s=round(recovered_s, 1),
        max_lag_records=int(max(lags)),
        rss_peak_before_mb=round(rss_before),
        rss_peak_mb=round(rss_peak),
    )


def _command(version: int, use_case: str = "ops") -> ThrottleCommand:
    now = time.time()
    return ThrottleCommand.build(
        Scope(use_case),
        "block",
        {},
        version=version,
        issued_at=now,
        expires_at=now + 600,
        reason=CommandReason("ab" * 12, "cost_spike", "test"),
    )


async def _publish(
    bootstrap: str, topic: str, commands: list[ThrottleCommand], keys: ThrottleKeys
) -> None:
    records = [
        Record("throttle", c.scope_key.encode(), orjson.dumps(c.to_dict(keys))) for c in commands
    ]
    await produce(bootstrap, {"throttle": topic}, records)


def _wait(check: Callable[[], bool], timeout: float, what: str) -> float:
    began = time.monotonic()
    while not check():
        assert time.monotonic() - began < timeout, f"timed out waiting for {what}"
        time.sleep(0.1)
    return time.monotonic() - began


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_broker_restart_worker_and_guard_reconnect(
    unique_name: Callable[[str], str], tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    # A broker of its own: this test stops it. Memory storage: a restart loses
    # every topic, record, committed offset and consumer group.
    first = EmbeddedBroker().start()
    port = first.port
    second: EmbeddedBroker | None = None
    keys = ThrottleKeys.of("restart-test-key")
    guards: list[ThrottleGuard] = []
    try:
        docs = scenario_events(seed=17, hours=2, incidents=())
        split = parse_ts(docs[-1]["ts"]) - 1200
        before = as_records([d for d in docs if parse_ts(d["ts"]) < split])
        after = as_records([d for d in docs if parse_ts(d["ts"]) >= split])
        names = write_topics_file(tmp_path / "topics.toml", unique_name("rst"))
        asyncio.run(ensure_topics(first.bootstrap, topic_specs(names)))
        worker = WorkerProcess(
            first.bootstrap, tmp_path / "topics.toml", tmp_path / "state", unique_name("g")
        )
        workers.append(worker)
        _joined(worker)
        before_restart = [_command(1), _command(1, "ops2"), _command(1, "ops3")]
        asyncio.run(_publish(first.bootstrap, names["throttle"], before_restart, keys))
        for fail_open in (True, False):
            guard = ThrottleGuard(
                first.bootstrap,
                keys,
                topic=names["throttle"],
                fail_open=fail_open,
                stale_after_s=3.0,
                health_interval_s=0.5,
            )
            guard.start_background()
            guards.append(guard)
        open_guard, closed_guard = guards
        _wait(lambda: all(not g.check("ops").allowed for g in guards), 30, "the guards to sync")
        asyncio.run(produce(first.bootstrap, names, before))
        status = worker.wait_for(lambda s: caught_up(s, len(before)), 90, "the first part")
        accepted_before = status["accepted"]

        first.stop()
        down_at = time.monotonic()
        _wait(lambda: not open_guard.available and not closed_guard.available, 20, "staleness")
        # Meanwhile: fail open allows, fail closed denies, both say why.
        d_open, d_closed = open_guard.check("ops"), closed_guard.check("ops")
        assert d_open.allowed and "fail open" in d_open.reason
        assert not d_closed.allowed and "fail closed" in d_closed.reason
        time.sleep(3)
        assert worker.proc.poll() is None, f"the worker exited with the broker:\n{worker.tail()}"

        second = EmbeddedBroker(port=port).start()
        outage_s = time.monotonic() - down_at
        # Memory storage: the topics are gone; create them before anything
        # touches them (Tansu would auto-create them with 4 partitions).
        asyncio.run(ensure_topics(second.bootstrap, topic_specs(names)))
        # A command on the new, empty topic: below the offsets the guards had read.
        asyncio.run(_publish(second.bootstrap, names["throttle"], [_command(1, "fresh")], keys))
        try:
            reconnect_s = _wait(
                lambda: open_guard.available and closed_guard.available,
                60,
                "the guards to reconnect",
            )
        except AssertionError:
            raise AssertionError(
                f"guards did not reconnect; broker {second!r} running={second.running}, port {port}"
                f"\n{second.log_tail()}"
            ) from None
        _wait(
            lambda: all(g.available and not g.check("fresh").allowed for g in guards),
            30,
            "the guards to apply a command published after the restart",
        )
        # The worker rejoins the (new, empty) group by itself.
        worker.wait_for(lambda s: len(s["assignment"]) == 7, 60, "the rejoin")
        asyncio.run(produce(second.bootstrap, names, after))
        n_after = count_events(after)
        # The re-created topics start at offset 0, behind the offsets in the
        # worker's state: it must notice and read them from their start.
        status = worker.wait_for(
            lambda s: s["accepted"] >= accepted_before + n_after, 60, "the events after it"
        )
        assert status["accepted"] == accepted_before + n_after
        assert len(status["assignment"]) == 7
        _figures(
            "broker_restart",
            events_before=count_events(before),
            events_after=n_after,
            outage_s=round(outage_s, 1),
            guards_reconnected_after_s=round(reconnect_s, 1),
            new_events_processed=status["accepted"] - accepted_before,
            unavailable_decisions=sum(g.counts["unavailable"] for g in guards),
        )
    finally:
        for guard in guards:
            guard.close()
        for w in workers:
            w.stop()
        workers.clear()
        first.stop()
        if second is not None:
            second.stop()
