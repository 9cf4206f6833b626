"""The worker's JSON ``/status`` view and the status page's data, built from its collaborators."""

from __future__ import annotations

import math
import time
from typing import Any

from spendsentry.worker.checkpoint import Checkpointer
from spendsentry.worker.clients import KafkaClients
from spendsentry.worker.handover import Handover
from spendsentry.worker.partitions import EngineView, PartitionSet, top_use_cases
from spendsentry.worker.publisher import Publisher
from spendsentry.worker.status_page import StatusBoard, build_snapshot
from spendsentry.worker.throttle_edge import wall_clock_body

#: Use cases in ``/status`` (the costliest), unless asked for another page.
STATUS_USE_CASES = 100
#: The largest page of use cases ``/status`` returns.
MAX_STATUS_USE_CASES = 1_000


def _finite(value: float) -> float | None:
    return None if value == -math.inf else value


class WorkerStatus:
    """Reads (never changes) the worker's state for ``/status`` and ``/``.

    Parameters
    ----------
    clients : KafkaClients
        Configuration and the consumer's assignment.
    parts : PartitionSet
        The owned engines.
    handover : Handover
        Which partitions were restored.
    checkpoints : Checkpointer
        Snapshot ids and the last write.
    publisher : Publisher
        Throttle command counts.
    board : StatusBoard
        Open incidents, recent alerts and throttles.
    """

    def __init__(
        self,
        clients: KafkaClients,
        parts: PartitionSet,
        handover: Handover,
        checkpoints: Checkpointer,
        publisher: Publisher,
        board: StatusBoard,
    ) -> None:
        self.clients = clients
        self.config = clients.config
        self.parts = parts
        self.handover = handover
        self.checkpoints = checkpoints
        self.publisher = publisher
        self.board = board
        self.started_at = time.time()

    def status(
        self, *, use_cases_limit: int = STATUS_USE_CASES, use_cases_offset: int = 0
    ) -> dict[str, Any]:
        """The JSON ``/status`` view (totals over the engines this worker owns).

        Use cases are a page by total cost (``use_cases_limit`` from
        ``use_cases_offset``, at most :data:`MAX_STATUS_USE_CASES`), so the
        view stays small and quick to build under a flood of names.
        """
        use_cases_limit = max(0, min(use_cases_limit, MAX_STATUS_USE_CASES))
        parts = self.parts
        view = parts.view()
        stats = view.stats
        checkpoints = self.checkpoints
        return {
            "group_id": self.config.group_id,
            "started_at": self.started_at,
            "restored": bool(self.handover.restored),
            "assignment": self._assignment(),
            "records": parts.records,
            "offsets": {f"{t}:{n}": o for (t, n), o in sorted(parts.offsets().items())},
            "watermark": _finite(parts.watermark),
            "closed_until_ts": None if view.closed_until is None else view.closed_until * 60,
            "accepted": stats.accepted,
            "duplicates": stats.duplicates,
            "late": stats.late,
            "unpriced": stats.unpriced,
            "use_case_count": view.use_case_count(),
            "use_cases_offset": use_cases_offset,
            "use_cases": {
                name: t.to_dict() for name, t in view.top_totals(use_cases_limit, use_cases_offset)
            },
            "alerts": dict(sorted(stats.alerts.items())),
            "firing": [{"use_case": u, "kind": k, "alert_id": a} for u, k, a in view.firing()],
            "published_alert_keys": parts.published_keys,
            "alerts_suppressed": parts.suppressed,
            "publishing": self.publisher.in_flight,
            "partitions": {str(p): self._partition_status(p) for p in parts},
            "throttle": self._throttle_status(),
            "state_topic": self.config.topics.state.name,
            "last_snapshot_at": checkpoints.last_snapshot_at,
            "last_snapshot_bytes": checkpoints.last_snapshot_bytes,
            "view": self.page_snapshot(view),
        }

    def _assignment(self) -> list[str]:
        control = self.config.topics.control
        started = self.clients.consumer is not None
        return sorted(
            [f"{tp.topic}:{tp.partition}" for tp in self.clients.assignment()]
            + [f"{control.name}:{n}" for n in range(control.partitions) if started]
        )

    def _throttle_status(self) -> dict[str, Any]:
        publisher = self.publisher
        watermark = self.parts.watermark
        count, elsewhere = publisher.throttles_in_force()
        return {
            "active": [
                wall_clock_body(c, event_time=watermark, now=time.time())
                for c in self.parts.active_commands(publisher.event_now())
            ],
            # Verified commands in force on ai.throttle that this worker's
            # engines did not issue (another worker's, an operator's).
            "elsewhere": [{k: v for k, v in d.items() if k != "signature"} for d in elsewhere],
            "in_force": count,
            "held_while_catching_up": len(publisher.throttle_edge.waiting),
            "published": publisher.commands_published,
            "unpublished_no_key": publisher.commands_unpublished,
            "signing_key": self.config.throttle_keys.can_sign,
            "rejected_records": dict(sorted(publisher.throttle_rejected.items())),
        }

    def _partition_status(self, p: int) -> dict[str, Any]:
        pl = self.parts.pipelines[p]
        engine = pl.engine
        snapshot = self.checkpoints.snapshot_id(p)
        return {
            "records": pl.records,
            "committed_records": pl.accounting.committed.records,
            "offsets": {f"{t}:{n}": o for (t, n), o in sorted(pl.offsets.items())},
            "watermark": _finite(pl.watermark),
            "closed_until_ts": None if engine.closed_until is None else engine.closed_until * 60,
            "accepted": engine.stats.accepted,
            "late": engine.stats.late,
            "use_case_count": len(engine.stats.use_cases),
            "use_cases": top_use_cases(engine, STATUS_USE_CASES),
            "restored": p in self.handover.restored,
            "snapshot": None if snapshot is None else {"writer": snapshot[0], "seq": snapshot[1]},
        }

    def page_snapshot(self, view: EngineView | None = None) -> dict[str, Any]:
        """What the status page at ``/`` shows (see :mod:`.status_page`)."""
        parts = self.parts
        view = parts.view() if view is None else view
        return build_snapshot(
            view,
            self.board,
            watermark=_finite(parts.watermark),
            header={
                "group_id": self.config.group_id,
                "accepted": view.stats.accepted,
                "records": parts.records,
            },
        )
