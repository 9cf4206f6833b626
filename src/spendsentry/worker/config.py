"""What one worker process runs with: broker, topics, state directory and tuning."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from spendsentry.actions import ThrottleKeys
from spendsentry.engine import EngineConfig
from spendsentry.ingest.deadletter import DEFAULT_MAX_REQUEST_SIZE
from spendsentry.worker.topics import TopicsConfig


@dataclass(slots=True)
class WorkerConfig:
    """Everything the worker needs to run (the CLI fills it from flags)."""

    bootstrap: str
    group_id: str = "spendsentry"
    topics: TopicsConfig = field(default_factory=TopicsConfig.defaults)
    state_dir: Path = Path(".spendsentry-state")
    #: Where closed hours' FOCUS rows go, one CSV per hour and input partition; None: off.
    focus_dir: Path | None = None
    engine_config: EngineConfig = field(default_factory=EngineConfig)
    #: Records per ``getmany``: the engine is batch-shaped, as in replay.
    max_batch: int = 5_000
    poll_timeout_ms: int = 200
    #: How long the broker may hold a fetch that found no data. aiokafka keeps
    #: one fetch in flight per broker, so a fetch that only asks for quiet
    #: partitions (an empty ai.outcomes partition) delays the busy ones by this
    #: much; Kafka's 500 ms default made event-to-alert latency seconds.
    fetch_max_wait_ms: int = 50
    idle_partition_s: float = 30.0
    snapshot_interval_s: float = 5.0
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    use_case_label_limit: int = 50
    #: Seconds allowed for reading back published alerts on restart.
    readback_timeout_s: float = 30.0
    #: Signs throttle commands; without a signing key none is published.
    throttle_keys: ThrottleKeys = field(default_factory=ThrottleKeys)
    #: The producer's largest request; every dead letter is cut to fit in it
    #: (:func:`~spendsentry.ingest.deadletter.dead_letter_limit`).
    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE
