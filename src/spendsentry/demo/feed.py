"""Publish the demo's simulated traffic to Kafka: pre-roll at full speed, then paced.

Events go out as JSON arrays (up to ``batch_events`` per message), keyed by use
case, to the usage or outcomes topic, as a gateway batching its usage events
would publish them. Minute by minute of event time: the pre-roll minutes as
fast as the broker takes them, every later minute when the wall clock says that
minute has ended at ``speed`` event seconds per wall second.

>>> pace_at(live_wall=100.0, minute_index=125, preroll=120, speed=60.0)
106.0
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from spendsentry.demo.plan import PREROLL_MINUTES, DemoPlan
from spendsentry.worker.topics import TopicsConfig

__all__ = ["Feed", "FeedStats", "pace_at"]


def pace_at(*, live_wall: float, minute_index: int, preroll: int, speed: float) -> float:
    """Wall time (same clock as ``live_wall``) at which a paced minute is published.

    A minute is published once it has *ended* in scaled time, so event time
    never runs ahead of the pace.
    """
    return live_wall + (minute_index - preroll + 1) * 60.0 / speed


@dataclass(slots=True)
class FeedStats:
    """What the feed has done so far (read by the terminal view)."""

    events: int = 0
    messages: int = 0
    #: Event time (epoch seconds) of the newest minute published.
    event_time: float | None = None
    phase: str = "starting"  # starting | pre-roll | live | finished


class Feed:
    """The simulator as a producer.

    Parameters
    ----------
    plan : DemoPlan
        What to simulate and how fast.
    topics : TopicsConfig
        Where usage and outcome events go.
    producer : object
        A started aiokafka ``AIOKafkaProducer`` (the caller owns it).
    batch_events : int
        Events per JSON-array message.
    clock : callable
        Monotonic wall clock (tests pass a fake).
    """

    def __init__(
        self,
        plan: DemoPlan,
        topics: TopicsConfig,
        producer: Any,
        *,
        batch_events: int = 200,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = plan
        self.topics = topics
        self.producer = producer
        self.batch_events = batch_events
        self.clock = clock
        self.stats = FeedStats()

    async def run(self) -> None:
        """Publish the whole scenario (cancel the task to stop early)."""
        plan = self.plan
        start = plan.start.timestamp()
        live_wall: float | None = None
        self.stats.phase = "pre-roll"
        pending: list[dict[str, Any]] = []
        current: str | None = None
        index = -1
        for event in plan.scenario().iter_events():
            minute = event["ts"][:16]  # "YYYY-MM-DDTHH:MM": events come in time order
            if minute != current:
                if pending:
                    live_wall = await self._publish_minute(pending, index, live_wall)
                    pending = []
                current = minute
                index += 1
            pending.append(event)
        if pending:
            await self._publish_minute(pending, index, live_wall)
        await self.producer.flush()
        self.stats.phase = "finished"
        self.stats.event_time = start + plan.hours * 3600

    async def _publish_minute(
        self, events: list[dict[str, Any]], index: int, live_wall: float | None
    ) -> float | None:
        if index >= PREROLL_MINUTES:
            if live_wall is None:
                # The pre-roll is on the broker: event time starts ticking now.
                await self.producer.flush()
                live_wall = self.clock()
                self.stats.phase = "live"
            due = pace_at(
                live_wall=live_wall,
                minute_index=index,
                preroll=PREROLL_MINUTES,
                speed=self.plan.speed,
            )
            delay = due - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)
        await self.send(events)
        self.stats.event_time = self.plan.start.timestamp() + (index + 1) * 60.0
        # Give the other tasks (alerts, view) a turn during the pre-roll.
        await asyncio.sleep(0)
        return live_wall

    async def send(self, events: Iterable[dict[str, Any]]) -> None:
        """Publish events as JSON arrays keyed by use case (usage and outcomes apart)."""
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for e in events:
            topic = (
                self.topics.outcomes.name if e.get("type") == "outcome" else self.topics.usage.name
            )
            groups.setdefault((topic, str(e.get("use_case", ""))), []).append(e)
        size = self.batch_events
        for (topic, use_case), docs in groups.items():
            for i in range(0, len(docs), size):
                chunk = docs[i : i + size]
                await self.producer.send(topic, orjson.dumps(chunk), key=use_case.encode())
                self.stats.messages += 1
                self.stats.events += len(chunk)


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait for it, swallowing what cancelling raises."""
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
