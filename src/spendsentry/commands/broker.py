"""``spendsentry broker``: run the embedded Kafka-protocol broker in the foreground.

Prints ``bootstrap=127.0.0.1:PORT`` on stdout once the broker answers requests,
then runs until SIGINT or SIGTERM and stops the broker before exiting, so the
line can be read by scripts and ``kill``/Ctrl-C leaves no broker behind.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

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


def run(args: argparse.Namespace) -> int:
    """Run the broker until SIGINT or SIGTERM.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments; uses ``args.port``.

    Returns
    -------
    int
        0 after a requested shutdown; 1 if the broker failed to start or died.
    """
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
