"""``spendsentry broker``: run the embedded Kafka-protocol broker in the foreground.

Creates the topics of the topics file (``streams/topics.toml`` by default) with
their partition counts, so a gateway that publishes before any worker ran does
not make the broker auto-create ``ai.usage`` with its own count; then prints
``bootstrap=127.0.0.1:PORT`` on stdout, and runs until SIGINT or SIGTERM and
stops the broker before exiting, so the line can be read by scripts and
``kill``/Ctrl-C leaves no broker behind.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from spendsentry.errors import ConfigError
from spendsentry.kafka.admin import ensure_topics_sync
from spendsentry.kafka.embedded import BrokerError, EmbeddedBroker

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"port must be between 1 and 65535, not {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``broker`` command's options to *parser*.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The sub-command's parser.
    """
    parser.add_argument(
        "--port",
        type=_port,
        default=None,
        metavar="N",
        help="port to listen on at 127.0.0.1 (default: a free port)",
    )
    parser.add_argument(
        "--topics",
        metavar="FILE",
        default=None,
        help="topics TOML whose topics are created at start "
        "(default: streams/topics.toml if present, else the built-in layout)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the broker until SIGINT or SIGTERM.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments; uses ``args.port``.

    Returns
    -------
    int
        0 after a requested shutdown; 1 if the broker failed to start or died;
        2 if the topics file is unreadable.
    """
    from spendsentry.worker.topics import TopicsConfig

    try:
        topics = TopicsConfig.load(args.topics)
    except ConfigError as exc:
        print(f"spendsentry broker: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Handlers go in before the broker starts, so a signal during start-up is not
    # lost (nor turned into a KeyboardInterrupt mid-spawn): the loop below sees it
    # as soon as the broker is up and stops it at once.
    previous = {sig: signal.signal(sig, request_stop) for sig in _STOP_SIGNALS}
    try:
        broker = EmbeddedBroker(port=args.port)
        try:
            broker.start()
        except BrokerError as exc:
            print(f"spendsentry broker: {exc}", file=sys.stderr)
            return 1
        try:
            # Before the bootstrap line: whoever waits for it finds the topics.
            ensure_topics_sync(broker.bootstrap, topics.specs())
        except BrokerError as exc:
            broker.stop()
            print(f"spendsentry broker: {exc}", file=sys.stderr)
            return 1
        try:
            print(f"bootstrap={broker.bootstrap}", flush=True)
            # Poll rather than block forever, to notice the broker dying on its own.
            while not stop.wait(0.25):
                if not broker.running:
                    print(
                        f"spendsentry broker: the broker exited unexpectedly; its log ends:\n"
                        f"{broker.log_tail()}",
                        file=sys.stderr,
                    )
                    return 1
        finally:
            broker.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
