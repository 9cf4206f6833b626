"""``spendsentry notify``: deliver the alerts on ``ai.alerts`` to Slack and the other sinks.

Runs the notifiers on their own (the worker can also run them in-process with
``--notify``). Where alerts go comes from the environment: ``SLACK_BOT_TOKEN``
(channel per use case from its policy's owner, else ``SLACK_DEFAULT_CHANNEL``),
else ``SLACK_WEBHOOK_URL``; and a signed webhook, PagerDuty, Alertmanager
(:mod:`spendsentry.sinks.settings`), each in a consumer group of its own; with
none of them, the log only. SIGINT/SIGTERM stop it; what was not delivered
yet is not committed and goes out on the next start.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

# The levels --log-level accepts (any case), shared with ``worker``.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def add_log_level(parser: argparse.ArgumentParser) -> None:
    """The ``--log-level`` option every long-running command takes."""
    parser.add_argument(
        "--log-level",
        default="INFO",
        metavar="LEVEL",
        choices=LOG_LEVELS,
        type=str.upper,
        help="one of " + ", ".join(LOG_LEVELS),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``notify`` command's options to ``parser``."""
    parser.add_argument(
        "--broker",
        metavar="HOST:PORT",
        default=os.environ.get("SPENDSENTRY_BROKER"),
        help="Kafka bootstrap (default: $SPENDSENTRY_BROKER)",
    )
    parser.add_argument(
        "--state-dir",
        default=os.environ.get("SPENDSENTRY_STATE_DIR", ".spendsentry-state"),
        metavar="DIR",
        help="where delivered alerts and threads are remembered (default: .spendsentry-state)",
    )
    parser.add_argument(
        "--group",
        default="spendsentry-notifier",
        metavar="ID",
        help="consumer group id; each sink beside Slack uses ID-<sink> (default: %(default)s)",
    )
    parser.add_argument(
        "--topics", metavar="FILE", help="topics TOML (default: streams/topics.toml if present)"
    )
    parser.add_argument(
        "--max-age",
        type=float,
        default=86_400.0,
        metavar="SECONDS",
        help="alerts older than this are logged, not posted; 0 posts all (default 86400)",
    )
    add_log_level(parser)


def run(args: argparse.Namespace) -> int:
    """Run the notifier until SIGINT/SIGTERM; 0 on a clean stop, 2 on bad settings."""
    from spendsentry.errors import SpendSentryError

    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.broker:
        print("spendsentry notify: no broker (--broker or SPENDSENTRY_BROKER)", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_main(args))
    except SpendSentryError as exc:
        print(f"spendsentry notify: {exc}", file=sys.stderr)
        return 2


async def _main(args: argparse.Namespace) -> int:
    from spendsentry.sinks.notifier import AlertNotifier
    from spendsentry.sinks.settings import notifiers, sink_settings
    from spendsentry.slack.notifier import NotifierConfig, SlackNotifier, SlackSettings
    from spendsentry.worker.topics import TopicsConfig

    topics = TopicsConfig.load(args.topics)
    config = NotifierConfig(
        bootstrap=args.broker,
        alerts=topics.alerts,
        control=topics.control,
        group_id=args.group,
        state_dir=Path(args.state_dir),
        max_age_s=args.max_age or None,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    slack = SlackSettings.from_env()
    running: list[AlertNotifier] = notifiers(config, sink_settings())
    if slack.mode != "log" or not running:
        running.insert(0, SlackNotifier(config, slack))
    await asyncio.gather(*(n.run(stop) for n in running))
    return 0


def add_worker_flag(parser: argparse.ArgumentParser) -> None:
    """``--notify/--no-notify`` for ``spendsentry worker``."""
    parser.add_argument(
        "--notify",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run the alert notifiers in this process (default: when Slack "
        "(SLACK_BOT_TOKEN, SLACK_WEBHOOK_URL) or another sink (SPENDSENTRY_WEBHOOK_URL, "
        "PAGERDUTY_ROUTING_KEY, ALERTMANAGER_URL) is set)",
    )
