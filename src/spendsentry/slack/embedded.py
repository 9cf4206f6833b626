"""The alert notifiers (Slack and the other sinks) as a task in the worker (``worker --notify``)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from spendsentry.kafka.admin import TopicSpec
from spendsentry.sinks.notifier import AlertNotifier
from spendsentry.sinks.settings import notifiers, sink_settings
from spendsentry.slack.notifier import NotifierConfig, SlackNotifier, SlackSettings


class EmbeddedNotifier:
    """The notifier running as a task inside the worker process."""

    def __init__(self, task: asyncio.Task[None], stop_event: asyncio.Event) -> None:
        self.task = task
        self.stop_event = stop_event

    async def stop(self, timeout_s: float = 15.0) -> None:
        """Stop it (what is not delivered yet stays uncommitted for the next start)."""
        self.stop_event.set()
        try:
            await asyncio.wait_for(self.task, timeout_s)
        except TimeoutError:
            logging.getLogger(__name__).error("the alert notifiers did not stop in time")


def start_embedded(
    flag: bool | None,
    bootstrap: str,
    alerts: TopicSpec,
    state_dir: Path,
    group: str,
    control: TopicSpec | None = None,
) -> EmbeddedNotifier | None:
    """Start the notifier next to the worker, or return None when it is not wanted.

    ``flag`` is ``--notify``/``--no-notify``; None: when Slack or another sink
    (:mod:`spendsentry.sinks.settings`) is configured.

    Slack uses its own consumer group (``<group>-notifier``), each other sink
    ``<group>-notifier-<sink>``: the engine's offsets and snapshots never
    depend on a receiver being up, nor one receiver on another.
    """
    settings = SlackSettings.from_env()
    others = sink_settings()
    if not ((settings.mode != "log" or bool(others)) if flag is None else flag):
        return None
    config = NotifierConfig(
        bootstrap=bootstrap,
        alerts=alerts,
        group_id=f"{group}-notifier",
        state_dir=state_dir,
        control=control,
    )
    running: list[AlertNotifier] = notifiers(config, others)
    if settings.mode != "log" or not running:
        running.insert(0, SlackNotifier(config, settings))
    stop = asyncio.Event()
    log = logging.getLogger(__name__)

    async def run_one(notifier: AlertNotifier) -> None:
        try:
            await notifier.run(stop)
        except Exception:
            # A receiver's trouble must not take the engine down; alerts stay on the topic.
            log.exception(
                "the %s notifier stopped; alerts are still on %s", notifier.name, alerts.name
            )

    async def run() -> None:
        await asyncio.gather(*(run_one(n) for n in running))

    return EmbeddedNotifier(asyncio.create_task(run(), name="spendsentry-notifier"), stop)
