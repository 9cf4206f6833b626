"""``spendsentry produce FILE... --broker HOST:PORT``: publish JSON Lines events to Kafka.

The way to feed a worker from files: simulator output (``spendsentry simulate``),
a captured day of gateway traffic, or the bundled sample. Usage events go to the
usage topic and outcome events (``"type": "outcome"``) to the outcomes topic,
keyed by use case and sent as JSON arrays of up to ``--batch`` events, as a
gateway batching its usage events would. A line that is not a JSON object is
sent alone, unchanged: the worker dead-letters it with a reason, as it would
any producer's bad record. ``--rate`` paces the publishing (events per second).

``produce`` feeds a *live* worker: events are judged by event time, and a worker
that has already read newer events closes their minutes, so older events are
dead-lettered as ``late``. Before publishing, ``produce`` reads the newest event
time already on the input topics (the last messages of each partition: what
the topics' consumers have seen or will see, with or without a worker running);
if the files hold events more than the allowed lateness behind it, it says how
many on stderr and exits 3 without publishing, unless ``--allow-late``. (Standard
input cannot be read twice: it is checked while publishing, and the exit is 3
afterwards.) History goes through ``spendsentry replay``, which runs its own engine.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

    from spendsentry.worker.topics import TopicsConfig

#: Exit status when events would be dead-lettered as late (see the module doc).
EXIT_LATE = 3
#: Messages read back from the end of each input partition to find its newest event time.
TAIL_MESSAGES = 20


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
        "--allow-late",
        action="store_true",
        help="publish even events a worker that has read the topics would reject as late "
        "(default: warn and exit 3 without publishing; history goes through `replay`)",
    )
    parser.add_argument(
        "--allowed-lateness",
        type=float,
        default=None,
        metavar="SECONDS",
        help="the worker's allowed lateness (default: the engine's, 120 s)",
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


@dataclass(slots=True)
class LateCheck:
    """Events of the files behind what the input topics already hold."""

    #: Newest event time on the input topics (None: they hold no event).
    head: float | None
    #: Events before this time fall in minutes a worker has closed (None: no check).
    cutoff: float | None
    checked: int = 0
    late: int = 0
    oldest: float = math.inf

    def observe(self, doc: dict[str, Any]) -> None:
        ts = _event_ts(doc)
        if ts is None or self.cutoff is None:
            return
        self.checked += 1
        if ts < self.cutoff:
            self.late += 1
            self.oldest = min(self.oldest, ts)

    def message(self, topics: Iterable[str]) -> str:
        from spendsentry.timeutil import format_ts

        assert self.head is not None
        share = self.late / max(1, self.checked)
        return (
            f"spendsentry produce: {self.late:,} of {self.checked:,} events ({share:.0%}) are "
            f"older than {format_ts(self.cutoff or 0)}, the allowed lateness behind the newest "
            f"event time already on {', '.join(topics)} ({format_ts(self.head)}; oldest here "
            f"{format_ts(self.oldest)}): a worker that has read the topics dead-letters them "
            "as late. Run history through `spendsentry replay FILE`, or pass --allow-late."
        )


def run(args: argparse.Namespace) -> int:
    """Publish every line of the files; 0 when all were acknowledged, 3 for late events."""
    from spendsentry.errors import SpendSentryError

    if not args.broker:
        print("spendsentry produce: give --broker HOST:PORT (or set SPENDSENTRY_BROKER)",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        sent, events, raw, check = asyncio.run(_produce(args))
    except (OSError, SpendSentryError) as exc:
        print(f"spendsentry produce: {exc}", file=sys.stderr)
        return 1
    if sent == 0 and check.late:
        print(check.message(_input_names(args)), file=sys.stderr)
        print("published nothing", file=sys.stderr)
        return EXIT_LATE
    note = f" ({raw} not JSON objects, sent as they were)" if raw else ""
    print(f"published {events:,} events in {sent:,} messages to {args.broker}{note}")
    if check.late:
        print(check.message(_input_names(args)), file=sys.stderr)
        return 0 if args.allow_late else EXIT_LATE
    return 0


def _input_names(args: argparse.Namespace) -> list[str]:
    from spendsentry.worker.topics import TopicsConfig

    topics = TopicsConfig.load(args.topics)
    return [topics.usage.name, topics.outcomes.name]


def _event_ts(doc: Any) -> float | None:
    """The event time of a native event (None when it has none we can read)."""
    from spendsentry.timeutil import parse_ts

    if not isinstance(doc, dict) or "ts" not in doc:
        return None
    try:
        ts = parse_ts(doc["ts"])
    except (TypeError, ValueError):
        return None
    return ts if math.isfinite(ts) else None


def _newest_in(value: bytes | None) -> float | None:
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    stamps = [_event_ts(d) for d in (doc if isinstance(doc, list) else [doc])]
    return max((t for t in stamps if t is not None), default=None)


async def topic_head(
    bootstrap: str, topics: Iterable[str], security: dict[str, Any]
) -> float | None:
    """The newest event time in the last messages of every partition of ``topics``."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **security
    )
    await consumer.start()
    try:
        await consumer.topics()
        tps = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(consumer.partitions_for_topic(t) or ())
        ]
        if not tps:
            return None
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        begins = await consumer.beginning_offsets(tps)
        wanted = {tp for tp in tps if ends[tp] > begins[tp]}
        for tp in wanted:
            consumer.seek(tp, max(begins[tp], ends[tp] - TAIL_MESSAGES))
        head: float | None = None
        deadline = time.monotonic() + 20
        while wanted and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=TAIL_MESSAGES * len(tps))
            for tp, records in batch.items():
                for r in records:
                    ts = _newest_in(r.value)
                    if ts is not None and (head is None or ts > head):
                        head = ts
                    if r.offset + 1 >= ends[tp]:
                        wanted.discard(tp)
        return head
    finally:
        await consumer.stop()


def _cutoff(head: float | None, lateness: float) -> float | None:
    """Events before this time are in minutes a worker at ``head`` has closed."""
    if head is None:
        return None
    return math.floor((head - lateness) / 60.0) * 60.0


def _prescan(paths: list[str], check: LateCheck) -> None:
    for line in _lines(paths):
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        for d in doc if isinstance(doc, list) else [doc]:
            check.observe(d)


async def _produce(args: argparse.Namespace) -> tuple[int, int, int, LateCheck]:
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    from spendsentry.kafka import BrokerError, ensure_topics
    from spendsentry.kafka import security as kafka_security
    from spendsentry.worker.topics import TopicsConfig

    topics = TopicsConfig.load(args.topics)
    security = kafka_security.client_kwargs()  # TLS/SASL from SPENDSENTRY_KAFKA_*
    if not args.no_create_topics:
        await ensure_topics(args.broker, topics.specs(), security=security)
    check = await _late_check(args, topics, security)
    if check.cutoff is not None and "-" not in args.files:
        _prescan(args.files, check)
        if check.late and not args.allow_late:
            return 0, 0, 0, check
        checked = LateCheck(None, None)  # counted already
    else:
        checked = check
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
    try:
        sent, events, raw = await _publish(producer, args, topics, checked)
        await producer.flush()
    except KafkaError as exc:
        raise BrokerError(f"publishing to {args.broker} failed: {exc}") from None
    finally:
        await producer.stop()
    return sent, events, raw, check


async def _late_check(
    args: argparse.Namespace, topics: TopicsConfig, security: dict[str, Any]
) -> LateCheck:
    """How far the topics' event time has got, and so which events a worker would call late."""
    from spendsentry.engine import EngineConfig

    lateness = (
        EngineConfig().allowed_lateness_s
        if args.allowed_lateness is None
        else args.allowed_lateness
    )
    try:
        head = await topic_head(args.broker, [topics.usage.name, topics.outcomes.name], security)
    except Exception as exc:  # aiokafka's errors: the check is advice, not a gate
        print(f"spendsentry produce: could not read the topics' event time: {exc}",
              file=sys.stderr)  # fmt: skip
        head = None
    return LateCheck(head, _cutoff(head, lateness))


async def _publish(
    producer: AIOKafkaProducer,
    args: argparse.Namespace,
    topics: TopicsConfig,
    checked: LateCheck,
) -> tuple[int, int, int]:
    """Send every line, grouped per (topic, use case) up to ``--batch``; (sent, events, raw)."""
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

    for line in _lines(args.files):
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            raw += 1
            await send(topics.usage.name, None, line, 1)
            continue
        checked.observe(doc)
        topic = topics.outcomes.name if doc.get("type") == "outcome" else topics.usage.name
        key = str(doc.get("use_case", ""))
        group = pending.setdefault((topic, key), [])
        group.append(doc)
        if len(group) >= args.batch:
            del pending[(topic, key)]
            await send(topic, key, orjson.dumps(group if args.batch > 1 else group[0]), len(group))
    for (topic, key), group in pending.items():
        await send(topic, key, orjson.dumps(group if args.batch > 1 else group[0]), len(group))
    return sent, events, raw
