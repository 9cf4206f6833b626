"""``spendsentry worker``: the stream processor on Kafka.

Consumes ``ai.usage`` and ``ai.outcomes``, runs the engine, publishes alerts and
dead letters, and serves ``/metrics`` and ``/status`` on the web port. With no
broker (``--broker`` or ``SPENDSENTRY_BROKER``) it starts the embedded broker and
prints ``bootstrap=HOST:PORT``. SIGINT or SIGTERM stop it cleanly within a
bounded time; a second signal exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from spendsentry.commands.notify import add_log_level
from spendsentry.commands.notify import add_worker_flag as add_notify_flag
from spendsentry.errors import ConfigError

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``worker`` command's options to ``parser``."""
    parser.add_argument(
        "--broker",
        metavar="HOST:PORT",
        default=os.environ.get("SPENDSENTRY_BROKER"),
        help="Kafka bootstrap (default: $SPENDSENTRY_BROKER, else an embedded broker)",
    )
    parser.add_argument(
        "--web-port",
        type=int,
        # A string default goes through type=int too: a bad variable is a usage error.
        default=os.environ.get("SPENDSENTRY_WEB_PORT", "6066"),
        metavar="N",
        help="web port for /, /metrics, /status and POST /v1/traces (OTLP/HTTP) "
        "($SPENDSENTRY_WEB_PORT sets it; the container's health check reads the same variable)",
    )
    parser.add_argument(
        "--web-host",
        default=os.environ.get("SPENDSENTRY_WEB_HOST", "127.0.0.1"),
        metavar="ADDR",
        help="web bind address ($SPENDSENTRY_WEB_HOST sets it; loopback by default)",
    )
    parser.add_argument(
        "--policies", metavar="DIR", help="policy directory (default: streams/policies if present)"
    )
    parser.add_argument(
        "--prices",
        metavar="FILE",
        help="price overrides TOML (default: streams/prices.toml if present)",
    )
    parser.add_argument(
        "--topics", metavar="FILE", help="topics TOML (default: streams/topics.toml if present)"
    )
    parser.add_argument("--group", default="spendsentry", metavar="ID", help="consumer group id")
    parser.add_argument(
        "--state-dir",
        default=os.environ.get("SPENDSENTRY_STATE_DIR", ".spendsentry-state"),
        metavar="DIR",
        help="local data directory; engine state lives in the ai.state topic "
        "(the environment's SPENDSENTRY_STATE_DIR sets it)",
    )
    parser.add_argument(
        "--focus-dir",
        default=os.environ.get("SPENDSENTRY_FOCUS_DIR") or None,
        metavar="DIR",
        help="write FOCUS 1.3 cost rows of each closed hour, one CSV per hour and input "
        "partition (default: off; SPENDSENTRY_FOCUS_DIR sets it)",
    )
    parser.add_argument(
        "--allowed-lateness",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="event-time lateness tolerated behind the watermark (default 120)",
    )
    parser.add_argument(
        "--idle-partition",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="a partition silent this long stops holding the watermark back (default 30)",
    )
    parser.add_argument(
        "--fetch-max-wait-ms",
        type=int,
        default=50,
        metavar="MS",
        help="longest the broker may hold an empty fetch; bounds alert latency (default 50)",
    )
    parser.add_argument(
        "--snapshot-interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="seconds between state snapshots (and offset commits) (default 5)",
    )
    parser.add_argument(
        "--session-timeout-ms",
        type=int,
        default=10_000,
        metavar="MS",
        help="consumer group session timeout (default 10000)",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=5_000,
        metavar="N",
        help="most records handled in one engine batch",
    )
    add_log_level(parser)
    add_notify_flag(parser)  # --notify/--no-notify: the Slack notifier in this process


def run(args: argparse.Namespace) -> int:
    """Run the worker until SIGINT/SIGTERM; 0 on a clean stop."""
    from spendsentry.errors import SpendSentryError
    from spendsentry.kafka.embedded import EmbeddedBroker

    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        # Before the broker and the app start: a taken port is the common mistake
        # (a second worker on one host), and it otherwise surfaces as a deep traceback.
        _check_web_port(args.web_host, args.web_port)
        # Off loopback, POST /v1/traces needs its token: refuse before anything starts.
        from spendsentry.worker.otlp_http import check_config as check_otlp_http

        check_otlp_http(args.web_host)
        if args.broker:
            return asyncio.run(_main(args, args.broker))
        with EmbeddedBroker() as broker:
            print(f"bootstrap={broker.bootstrap}", flush=True)
            return asyncio.run(_main(args, broker.bootstrap))
    except SpendSentryError as exc:
        print(f"spendsentry worker: {exc}", file=sys.stderr)
        return 2


def _port_taken(host: str, port: int) -> ConfigError:
    return ConfigError(
        f"web port {host}:{port} is already in use (another worker?); "
        "choose a free one with --web-port N"
    )


def _check_web_port(host: str, port: int) -> None:
    """Raise :class:`ConfigError` when ``host:port`` cannot be bound now."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # As asyncio's create_server does: a port in TIME_WAIT is free to take.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise _port_taken(host, port) from None
            raise ConfigError(f"cannot bind the web port {host}:{port}: {exc.strerror}") from None


async def _main(args: argparse.Namespace, bootstrap: str) -> int:
    from spendsentry.actions import ThrottleKeys
    from spendsentry.kafka import security as kafka_security
    from spendsentry.setup import build_engine
    from spendsentry.worker.app import run_worker
    from spendsentry.worker.readiness import throttle_warnings
    from spendsentry.worker.service import WorkerConfig
    from spendsentry.worker.topics import TopicsConfig, fit_to_broker

    engine = build_engine(args.policies, args.prices, allowed_lateness_s=args.allowed_lateness)
    # After the configuration is read (its errors come first, broker or not): a
    # gateway that published first left ai.usage with the broker's partition
    # count, and the topics still missing follow it instead of the file.
    topics = await fit_to_broker(
        TopicsConfig.load(args.topics), bootstrap, kafka_security.client_kwargs()
    )
    config = WorkerConfig(
        bootstrap=bootstrap,
        group_id=args.group,
        topics=topics,
        state_dir=Path(args.state_dir),
        focus_dir=Path(args.focus_dir) if args.focus_dir else None,
        engine_config=engine.config,
        max_batch=args.max_batch,
        idle_partition_s=args.idle_partition,
        fetch_max_wait_ms=args.fetch_max_wait_ms,
        snapshot_interval_s=args.snapshot_interval,
        session_timeout_ms=args.session_timeout_ms,
        heartbeat_interval_ms=max(100, args.session_timeout_ms // 3),
        # Keys come from the environment (or SPENDSENTRY_THROTTLE_KEY_FILE) only.
        throttle_keys=ThrottleKeys.from_env(),
    )
    for line in throttle_warnings(engine.policies, config.throttle_keys):
        logging.getLogger("spendsentry.worker").warning("%s", line)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal() -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            # The operator asked twice: do not wait for a slow shutdown.
            os._exit(130)
        stop.set()

    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal)

    def announce(service: object) -> None:
        print(f"web=http://{args.web_host}:{args.web_port}", flush=True)

    from spendsentry.slack.embedded import start_embedded

    notifier = start_embedded(
        args.notify,
        bootstrap,
        config.topics.alerts,
        config.state_dir,
        args.group,
        control=config.topics.control,
    )
    try:
        code = await run_worker(
            config,
            engine,
            stop,
            web_port=args.web_port,
            web_host=args.web_host,
            on_started=announce,
        )
    except OSError as exc:
        # Taken between the check in run() and the bind: the same answer.
        if exc.errno != errno.EADDRINUSE:
            raise
        raise _port_taken(args.web_host, args.web_port) from None
    if notifier is not None:
        await notifier.stop()
    return code
