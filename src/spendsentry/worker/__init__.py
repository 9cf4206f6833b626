"""The stream processor: the engine on Kafka, inside a Faust app.

See ``docs/worker.md``. The pure parts (:class:`Pipeline`, :class:`PartitionSet`,
metrics, the snapshot format) import nothing from Faust; the shell lives in
``service``, ``snapshots`` and ``app``. Event time is :mod:`spendsentry.clock`'s.
"""

from spendsentry.worker.metrics import UseCaseLabels, WorkerMetrics
from spendsentry.worker.partitions import EngineView, PartitionSet
from spendsentry.worker.pipeline import BatchOutput, Pipeline
from spendsentry.worker.state import SnapshotError, encode_snapshot
from spendsentry.worker.topics import TopicsConfig

__all__ = [
    "BatchOutput",
    "EngineView",
    "PartitionSet",
    "Pipeline",
    "SnapshotError",
    "TopicsConfig",
    "UseCaseLabels",
    "WorkerMetrics",
    "encode_snapshot",
]
