"""The Slack notifier as a task inside the worker process (``spendsentry worker --notify``)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from spendsentry.kafka.admin import TopicSpec
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
            logging.getLogger(__name__).error("the Slack notifier did not stop in time")


def start_embedded(
    flag: bool | None, bootstrap: str, alerts: TopicSpec, state_dir: Path, group: str
) -> EmbeddedNotifier | None:
    """Start the notifier next to the worker, or return None when it is not wanted.

    ``flag`` is ``--notify``/``--no-notify``; None: when Slack is configured.

    It uses its own consumer group (``<group>-notifier``): the engine's offsets
    and snapshots never depend on Slack being up.
    """
    settings = SlackSettings.from_env()
    if not (settings.mode != "log" if flag is None else flag):
        return None
    config = NotifierConfig(
        bootstrap=bootstrap, alerts=alerts, group_id=f"{group}-notifier", state_dir=state_dir
    )
    stop = asyncio.Event()
    log = logging.getLogger(__name__)

    async def run() -> None:
        try:
            await SlackNotifier(config, settings).run(stop)
        except Exception:
            # Slack trouble must not take the engine down; alerts stay on the topic.
            log.exception("the Slack notifier stopped; alerts are still on %s", alerts.name)

    return EmbeddedNotifier(asyncio.create_task(run(), name="spendsentry-notifier"), stop)
