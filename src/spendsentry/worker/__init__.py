"""The stream processor: the engine on Kafka, inside a Faust app.

See ``docs/worker.md``. The pure parts (:class:`Pipeline`, watermarks, metrics,
snapshots) import nothing from Faust; the shell lives in ``service`` and ``app``.
"""

from spendsentry.worker.metrics import UseCaseLabels, WorkerMetrics
from spendsentry.worker.pipeline import BatchOutput, Pipeline
from spendsentry.worker.state import SnapshotStore
from spendsentry.worker.topics import TopicsConfig
from spendsentry.worker.watermarks import PartitionWatermarks

__all__ = [
    "BatchOutput",
    "PartitionWatermarks",
    "Pipeline",
    "SnapshotStore",
    "TopicsConfig",
    "UseCaseLabels",
    "WorkerMetrics",
]
