"""``spendsentry produce FILE... --broker HOST:PORT``: publish JSON Lines events to Kafka.

The way to feed a worker from files: simulator output (``spendsentry simulate``),
a captured day of gateway traffic, or the bundled sample. Usage events go to the
usage topic and outcome events (``"type": "outcome"``) to the outcomes topic,
keyed by use case and sent as JSON arrays of up to ``--batch`` events, as a
gateway batching its usage events would. A line that is not a JSON object is
sent alone, unchanged: the worker dead-letters it with a reason, as it would
any producer's bad record. ``--rate`` paces the publishing (events per second).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import orjson


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0: as fast as possible), not {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``produce`` command's options to ``parser``."""
    parser.add_argument("files", nargs="+", metavar="FILE", help="JSON Lines (.gz ok) or -")
    parser.add_argument(
        "--broker",
        metavar="HOST:PORT",
        default=os.environ.get("SPENDSENTRY_BROKER"),
        help="Kafka bootstrap (default: $SPENDSENTRY_BROKER)",
    )
    parser.add_argument(
        "--topics", metavar="FILE", help="topics TOML (default: streams/topics.toml if present)"
    )
    parser.add_argument(
        "--batch",
        type=_positive_int,
        default=100,
        metavar="N",
        help="events per message, as a JSON array (1: one event per message; default 100)",
    )
    parser.add_argument(
        "--rate",
        type=_rate,
        default=0.0,
        metavar="EVENTS_PER_S",
        help="pace the publishing (default 0: as fast as possible)",
    )
    parser.add_argument(
        "--no-create-topics",
        action="store_true",
        help="do not create missing topics first (they must exist with the right partitions)",
    )


def _lines(paths: list[str]) -> Iterator[bytes]:
    from spendsentry.replay import open_input

    for path in paths:
        with open_input(path) as fh:
            for raw in fh:
                line = raw.strip()
                if line:
                    yield line


def run(args: argparse.Namespace) -> int:
    """Publish every line of the files; 0 when all were acknowledged."""
    from spendsentry.errors import SpendSentryError

    if not args.broker:
        print("spendsentry produce: give --broker HOST:PORT (or set SPENDSENTRY_BROKER)",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        sent, events, raw = asyncio.run(_produce(args))
    except (OSError, SpendSentryError) as exc:
        print(f"spendsentry produce: {exc}", file=sys.stderr)
        return 1
    note = f" ({raw} not JSON objects, sent as they were)" if raw else ""
    print(f"published {events:,} events in {sent:,} messages to {args.broker}{note}")
    return 0


async def _produce(args: argparse.Namespace) -> tuple[int, int, int]:
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    from spendsentry import kafka_security
    from spendsentry.broker import BrokerError, ensure_topics
    from spendsentry.worker.topics import TopicsConfig

    topics = TopicsConfig.load(args.topics)
    security = kafka_security.client_kwargs()  # TLS/SASL from SPENDSENTRY_KAFKA_*
    if not args.no_create_topics:
        await ensure_topics(args.broker, topics.specs(), security=security)
    producer = AIOKafkaProducer(
        bootstrap_servers=args.broker,
        linger_ms=20,
        acks="all",
        enable_idempotence=False,
        **security,
    )
    try:
        await producer.start()
    except KafkaError as exc:
        raise BrokerError(f"cannot connect to {args.broker}: {exc}") from None
    sent = events = raw = 0
    pending: dict[tuple[str, str], list[Any]] = {}
    began = time.monotonic()

    async def send(topic: str, key: str | None, value: bytes, n: int) -> None:
        nonlocal sent, events
        await producer.send(topic, value, key=key.encode() if key is not None else None)
        sent += 1
        events += n
        if args.rate > 0:
            # Hold back until the wall clock allows this many events.
            ahead = events / args.rate - (time.monotonic() - began)
            if ahead > 0:
                await asyncio.sleep(ahead)

    try:
        for line in _lines(args.files):
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                doc = None
            if not isinstance(doc, dict):
                raw += 1
                await send(topics.usage.name, None, line, 1)
                continue
            topic = topics.outcomes.name if doc.get("type") == "outcome" else topics.usage.name
            key = str(doc.get("use_case", ""))
            group = pending.setdefault((topic, key), [])
            group.append(doc)
            if len(group) >= args.batch:
                del pending[(topic, key)]
                body = orjson.dumps(group if args.batch > 1 else group[0])
                await send(topic, key, body, len(group))
        for (topic, key), group in pending.items():
            await send(topic, key, orjson.dumps(group if args.batch > 1 else group[0]), len(group))
        await producer.flush()
    except KafkaError as exc:
        raise BrokerError(f"publishing to {args.broker} failed: {exc}") from None
    finally:
        await producer.stop()
    return sent, events, raw
