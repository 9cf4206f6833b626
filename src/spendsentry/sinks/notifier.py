"""``ai.alerts`` in, each state change delivered once to one sink: the shared machinery.

Delivery is at-least-once with deduplication, across restarts, for every sink:

* A record's offset is committed only after it was delivered (or judged
  unusable, not routed to this sink, or delivered before).
* Delivered dedupe keys (``alert_id:status:severity:incident_seq``, see
  :func:`spendsentry.messages.dedupe_key`) are kept in a
  :class:`~spendsentry.slack.state.DeliveryState` per sink
  (``<state_dir>/<sink>-notifier.json``), saved atomically before the commit;
  a re-read record whose key is there is skipped.
* A failed delivery is retried with capped exponential back-off (longer when
  the receiver sent ``Retry-After``), forever, without committing: alerts queue
  up on the topic and go out in order once the receiver answers again. While
  it waits it keeps polling the (paused) consumer, so the group does not evict
  it however long the outage lasts.

The one duplicate this cannot rule out: a crash between the receiver's answer
and the state file's fsync (milliseconds) delivers that one state change again
on restart; receivers get the dedupe key (webhook header, PagerDuty
``dedup_key``, Alertmanager labels) to absorb it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from spendsentry.kafka import TopicSpec, ensure_topics
from spendsentry.kafka import security as kafka_security
from spendsentry.messages.alert import ALERT_STATUSES, dedupe_key_of
from spendsentry.messages.severity import SEVERITIES
from spendsentry.messages.topics import ALERTS_TOPIC
from spendsentry.sinks.base import AlertSink, DeliveryError
from spendsentry.slack.state import DeliveryState, Thread

__all__ = ["AlertNotifier", "NotifierConfig", "NotifierStats", "parse_alert", "redact"]

log = logging.getLogger(__name__)

#: Builds a sink once the notifier's HTTP session exists (inside the event loop).
SinkFactory = Callable[[aiohttp.ClientSession], AlertSink]


def redact(text: str, secrets: set[str] | frozenset[str]) -> str:
    """Replace every secret in ``text`` with ``***``.

    >>> redact("POST https://hooks.example/services/T1/B2/s3cret ok", {"/services/T1/B2/s3cret"})
    'POST https://hooks.example*** ok'
    """
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


@dataclass(slots=True)
class NotifierConfig:
    """What a notifier reads and where it keeps its state."""

    bootstrap: str
    alerts: TopicSpec = field(default_factory=lambda: TopicSpec(ALERTS_TOPIC, 3))
    #: Its own group: it must not share offsets with the engine's consumer.
    group_id: str = "spendsentry-notifier"
    state_dir: Path = Path(".spendsentry-state")
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    #: Outer retry loop: first wait and cap, seconds (doubling in between).
    retry_initial_s: float = 1.0
    retry_max_s: float = 60.0
    #: Seconds allowed for one HTTP request.
    request_timeout_s: float = 10.0
    #: Alerts older than this (Kafka record time) are logged, not delivered; None: all.
    #: A first start would otherwise post a week of history.
    max_age_s: float | None = 86_400.0
    #: Operator actions (``ai.control``), read by sinks that relay acknowledgements
    #: (PagerDuty); None: not read.
    control: TopicSpec | None = None


def parse_alert(value: bytes | None) -> tuple[dict[str, Any] | None, str]:
    """Decode one ``ai.alerts`` record; ``(alert, "")`` or ``(None, reason)``.

    Only what delivery needs is required; everything else renders as "?".

    >>> parse_alert(b'{"alert_id": "ab", "status": "firing", "severity": "info",'
    ...             b' "kind": "cost_spike", "use_case": "u"}')[1]
    ''
    >>> parse_alert(b"[1]"), parse_alert(b'{"alert_id": "ab", "status": "open"}')[1]
    ((None, 'not a JSON object'), "status 'open' is not one of firing, escalated, resolved")
    """
    if not value:
        return None, "empty record"
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return None, f"not JSON ({exc})"
    if not isinstance(doc, dict):
        return None, "not a JSON object"
    alert_id = doc.get("alert_id")
    if not isinstance(alert_id, str) or not 0 < len(alert_id) <= 64:
        return None, "alert_id missing or not a string of 1-64 characters"
    if doc.get("status") not in ALERT_STATUSES:
        return None, f"status {doc.get('status')!r:.40} is not one of {', '.join(ALERT_STATUSES)}"
    if doc.get("severity") not in SEVERITIES:
        return None, f"severity {doc.get('severity')!r:.40} is not one of {', '.join(SEVERITIES)}"
    for name in ("kind", "use_case"):
        if not isinstance(doc.get(name), str) or not doc[name]:
            return None, f"{name} missing or not a non-empty string"
    return doc, ""


class _Stopped(Exception):
    """Stop was requested while a delivery was pending."""


@dataclass(slots=True)
class NotifierStats:
    delivered: int = 0
    duplicates: int = 0
    skipped: int = 0
    failed_attempts: int = 0
    #: Alerts not routed to this sink (owner, minimum severity).
    not_routed: int = 0


class AlertNotifier:
    """Consume ``ai.alerts`` and deliver each state change to one sink, once.

    ``sink`` builds the sink (None: log only, nothing remembered); ``name``
    names the state file (``<name>-notifier.json``); ``secrets`` are masked in
    every message this notifier logs.
    """

    def __init__(
        self,
        config: NotifierConfig,
        sink: SinkFactory | None,
        *,
        name: str,
        secrets: frozenset[str] = frozenset(),
    ) -> None:
        self.config = config
        self.name = name
        self.stats = NotifierStats()
        self.state: DeliveryState | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.sink: AlertSink | None = None
        self._factory = sink
        self._session: aiohttp.ClientSession | None = None
        self._secrets = secrets

    @property
    def mode(self) -> str:
        """What this notifier delivers to (for the start-up line)."""
        return self.name if self._factory is not None else "log"

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; commits only what was delivered."""
        await self.start()
        try:
            await self._loop(stop)
        except _Stopped:
            pass
        finally:
            await self.close()

    async def start(self) -> None:
        cfg = self.config
        if self._factory is not None:
            self.state = await asyncio.to_thread(
                DeliveryState.load, cfg.state_dir, f"{self.name}-notifier"
            )
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=cfg.request_timeout_s)
            )
            self.sink = self._factory(self._session)
        log.info("alert notifier: %s, topic %s, group %s", self.mode, cfg.alerts.name, cfg.group_id)
        security = kafka_security.client_kwargs()  # TLS/SASL from SPENDSENTRY_KAFKA_*
        topics = [cfg.alerts]
        if cfg.control is not None and hasattr(self.sink, "acknowledge"):
            topics.append(cfg.control)
        await ensure_topics(cfg.bootstrap, topics, security=security)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=cfg.bootstrap,
            group_id=cfg.group_id,
            enable_auto_commit=False,
            # Nothing published while the notifier was away may be lost; old
            # history is held back by max_age_s instead.
            auto_offset_reset="earliest",
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=cfg.heartbeat_interval_ms,
            **security,
        )
        await self.consumer.start()
        self.consumer.subscribe([t.name for t in topics])

    async def close(self) -> None:
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await self.consumer.stop()
            self.consumer = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _loop(self, stop: asyncio.Event) -> None:
        consumer = self.consumer
        assert consumer is not None
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500, max_records=200)
            for tp, records in batch.items():
                for record in records:
                    await self._handle(record, stop)
                    await self._commit(tp, record.offset + 1)
            if self.sink is not None:
                await self.sink.tick(time.time())

    async def _commit(self, tp: TopicPartition, offset: int) -> None:
        assert self.consumer is not None
        try:
            await self.consumer.commit({tp: offset})
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance took the partition: its new owner re-reads from the last
            # commit, and the state file makes the re-read a no-op for us.
            log.warning("could not commit %s:%d at %d: %s", tp.topic, tp.partition, offset, exc)

    async def _handle(self, record: Any, stop: asyncio.Event) -> None:
        where = f"{record.topic}:{record.partition}@{record.offset}"
        control = self.config.control
        if control is not None and record.topic == control.name:
            await self._handle_control(record, where, stop)
            return
        alert, reason = parse_alert(record.value)
        if alert is None:
            self.stats.skipped += 1
            log.warning("skipping alert record %s: %s", where, reason)
            return
        key = dedupe_key_of(alert)
        max_age = self.config.max_age_s
        if max_age and record.timestamp > 0 and record.timestamp / 1000 < time.time() - max_age:
            self.stats.skipped += 1
            log.info("not posting %s (%s): older than %.0fs", key, where, max_age)
            return
        if self.sink is None:
            log.info("alert %s: %s", key, alert.get("summary", ""))
            self.stats.delivered += 1
            return
        if not self.sink.accepts(alert):
            self.stats.not_routed += 1
            log.debug("%s is not routed to %s", key, self.name)
            return
        state = self.state
        assert state is not None
        if state.delivered(key):
            self.stats.duplicates += 1
            log.debug("already delivered %s (%s)", key, where)
            return
        thread_key = self.thread_key(alert)
        context = self._context(alert)
        thread = await self._deliver(
            lambda: self._send(alert, state.thread(thread_key), context), key, stop
        )
        await asyncio.to_thread(state.record, key, thread_key, thread=thread)
        self.stats.delivered += 1
        log.info("delivered %s to %s", key, self.name)

    async def _handle_control(self, record: Any, where: str, stop: asyncio.Event) -> None:
        """Relay an operator's acknowledgement of an incident this sink delivered, once."""
        from spendsentry.actions import ControlError
        from spendsentry.messages.control import ControlAction

        try:
            action = ControlAction.parse(record.value or b"")
        except ControlError as exc:
            log.debug("not an operator action %s: %s", where, exc)
            return
        state, sink = self.state, self.sink
        if action.action != "ack" or not action.alert_id or state is None or sink is None:
            return
        thread = state.thread(action.alert_id)
        if thread is None:  # never delivered here: nothing to acknowledge
            return
        key = f"{action.alert_id}:ack:{action.at:.3f}"
        if state.delivered(key):
            self.stats.duplicates += 1
            return
        acknowledge = sink.acknowledge  # type: ignore[attr-defined]
        await self._deliver(lambda: acknowledge(action, thread), key, stop)
        await asyncio.to_thread(state.record, key, action.alert_id)
        self.stats.delivered += 1
        log.info("relayed the acknowledgement of %s to %s", action.alert_id, self.name)

    def _sink(self) -> AlertSink:
        assert self.sink is not None
        return self.sink

    def thread_key(self, alert: Mapping[str, Any]) -> str:
        """What the state remembers a delivery's thread under (a subclass may group
        alerts: Slack keeps one thread per incident)."""
        return str(alert["alert_id"])

    def _context(self, alert: dict[str, Any]) -> Any:
        """Worked out once per delivery, before any attempt (default: nothing)."""
        return None

    async def _send(
        self, alert: dict[str, Any], thread: Thread | None, context: Any = None
    ) -> Thread | None:
        """One delivery attempt (``context``: from :meth:`_context`)."""
        return await self._sink().deliver(alert, thread)

    async def _deliver(
        self, send: Callable[[], Awaitable[Thread | None]], key: str, stop: asyncio.Event
    ) -> Thread | None:
        """Run ``send`` until it succeeds, fails for good, or ``stop`` is set."""
        delay = self.config.retry_initial_s
        while True:
            if stop.is_set():
                raise _Stopped
            attempt = asyncio.ensure_future(send())
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({attempt, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not attempt.done():
                attempt.cancel()
                with contextlib.suppress(BaseException):
                    await attempt
                raise _Stopped
            try:
                return attempt.result()
            except DeliveryError as exc:
                message = redact(str(exc), self._secrets)
                if not exc.retry:
                    # Retrying the same message cannot help; it stays on the topic
                    # and in the log.
                    log.error("giving up on %s (%s): %s", key, self.name, message)
                    return None
                self.stats.failed_attempts += 1
                # The receiver's Retry-After, within our own cap.
                wait = min(max(delay, exc.retry_after or 0.0), self.config.retry_max_s)
                log.warning(
                    "delivery of %s to %s failed: %s; retrying in %.1fs",
                    key,
                    self.name,
                    message,
                    wait,
                )
            await self._idle(wait, stop)
            delay = min(delay * 2, self.config.retry_max_s)

    async def _idle(self, seconds: float, stop: asyncio.Event) -> None:
        """Wait, polling the paused consumer so the group keeps us (max.poll.interval)."""
        consumer = self.consumer
        assert consumer is not None
        paused = consumer.assignment()
        consumer.pause(*paused)
        try:
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                stray = await consumer.getmany(timeout_ms=0)
                for tp, records in stray.items():
                    # Partitions assigned during the pause are not paused; give
                    # back what they returned so the next poll reads it again.
                    consumer.seek(tp, records[0].offset)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(left, 1.0))
                if stop.is_set():
                    raise _Stopped
        finally:
            consumer.resume(*[tp for tp in paused if tp in consumer.assignment()])
