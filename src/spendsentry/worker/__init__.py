"""The stream processor: the engine on Kafka, inside a Faust app.

See ``docs/worker.md``. The pure parts (:class:`Pipeline`, :class:`PartitionSet`,
watermarks, metrics, the snapshot format) import nothing from Faust; the shell
lives in ``service``, ``snapshots`` and ``app``.
"""

from spendsentry.worker.metrics import UseCaseLabels, WorkerMetrics
from spendsentry.worker.partitions import EngineView, PartitionSet
from spendsentry.worker.pipeline import BatchOutput, Pipeline
from spendsentry.worker.state import SnapshotError, encode_snapshot
from spendsentry.worker.topics import TopicsConfig
from spendsentry.worker.watermarks import PartitionWatermarks

__all__ = [
    "BatchOutput",
    "EngineView",
    "PartitionSet",
    "PartitionWatermarks",
    "Pipeline",
    "SnapshotError",
    "TopicsConfig",
    "UseCaseLabels",
    "WorkerMetrics",
    "encode_snapshot",
]
