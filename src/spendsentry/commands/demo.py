"""``spendsentry demo``: broker, worker and simulated traffic with incidents, live.

Needs nothing but the installed package: it starts the embedded broker and the
worker, publishes simulated traffic for a dozen use cases (the first two hours
of event time as fast as possible, so the detectors warm up, then ``--speed``
times the wall clock), and shows cost, tokens, cost per outcome, alerts and
throttles per use case in the terminal; the worker's status page is on
``--web-port``. Stops after ``--duration`` seconds, or on Ctrl-C, leaving no
process behind.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"port must be between 1 and 65535, not {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``demo`` command's options to ``parser``."""
    parser.add_argument(
        "--duration",
        type=_positive,
        default=None,
        metavar="SECONDS",
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    parser.add_argument(
        "--speed",
        type=_positive,
        default=60.0,
        metavar="X",
        help="event seconds per wall second after the warm-up (default 60)",
    )
    parser.add_argument(
        "--web-port", type=_port, default=6066, metavar="N", help="status page port (default 6066)"
    )
    parser.add_argument("--seed", type=int, default=7, help="simulator seed (default 7)")
    parser.add_argument(
        "--policies", metavar="DIR", help="policy directory (default: streams/policies if present)"
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 after a clean stop."""
    from spendsentry.demo import DemoOptions, run_demo
    from spendsentry.errors import SpendSentryError
    from spendsentry.kafka.embedded import EmbeddedBroker

    options = DemoOptions(
        duration_s=args.duration,
        speed=args.speed,
        web_port=args.web_port,
        seed=args.seed,
        policies=args.policies,
    )
    try:
        with EmbeddedBroker() as broker:
            return asyncio.run(run_demo(options, broker.bootstrap))
    except SpendSentryError as exc:
        print(f"spendsentry demo: {exc}", file=sys.stderr)
        return 2
