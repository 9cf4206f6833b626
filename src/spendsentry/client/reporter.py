"""UsageReporter: publish usage events from a gateway without slowing it down.

:meth:`UsageReporter.report` only appends to a bounded in-memory buffer and
returns at once, from any thread; a background task sends the buffer to
``ai.usage`` with aiokafka, keyed by use case (so one use case's events stay
in order on one partition), as JSON arrays of up to ``batch_size`` events
(``as_array=False``: one event per message). When the buffer is full, or the
broker is unreachable long enough for it to fill, events are dropped and
counted in :attr:`UsageReporter.counts` — the caller's request never waits
for Kafka and never fails because of it::

    reporter = UsageReporter("kafka:9092")
    reporter.start_background()            # or: await reporter.start()
    reporter.report({"event_id": call_id, "ts": time.time(), "use_case": "support_chat",
                     "model": "gpt-4o-mini", "input_tokens": 1200, "output_tokens": 180})
    ...
    reporter.close()                        # flushes what it can (bounded)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

import orjson

from spendsentry.kafka.security import KafkaSecurity, resolve
from spendsentry.messages.topics import USAGE_TOPIC

__all__ = ["UsageReporter"]

log = logging.getLogger(__name__)


class UsageReporter:
    """Buffered, batched, never-blocking publisher of usage events.

    Parameters
    ----------
    bootstrap : str
        Kafka bootstrap servers.
    topic : str
        Where usage events go.
    batch_size : int
        Most events in one message (and per send round per use case).
    linger_s : float
        Longest an event waits in the buffer before a send round.
    max_buffer : int
        Events held at most; beyond it new events are dropped (counted).
    as_array : bool
        Send JSON arrays (True) or one event per message.
    security : KafkaSecurity, optional
        TLS/SASL settings for the producer; the environment's (read once, here)
        when omitted.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        topic: str = USAGE_TOPIC,
        batch_size: int = 200,
        linger_s: float = 0.2,
        max_buffer: int = 50_000,
        as_array: bool = True,
        security: KafkaSecurity | None = None,
    ) -> None:
        if batch_size < 1 or max_buffer < 1:
            raise ValueError("batch_size and max_buffer must be at least 1")
        self.bootstrap = bootstrap
        self.topic = topic
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.max_buffer = max_buffer
        self.as_array = as_array
        self.security = resolve(security)
        #: "reported", "sent", "dropped_full", "dropped_invalid", "dropped_send_failed".
        self.counts: Counter[str] = Counter()
        self._buffer: deque[tuple[str, bytes]] = deque()
        self._lock = threading.Lock()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._closing: asyncio.Event | None = None
        self._flush_timeout_s = 5.0
        self._stopping = False
        self.connected = False

    # -- the caller's side ----------------------------------------------------

    def report(self, event: Mapping[str, Any]) -> bool:
        """Queue one usage event; False (and counted) if it had to be dropped.

        Never raises for a bad event or a full buffer, never blocks.
        """
        use_case = event.get("use_case") if isinstance(event, Mapping) else None
        if not isinstance(use_case, str) or not use_case:
            self.counts["dropped_invalid"] += 1
            return False
        try:
            raw = orjson.dumps(event)
        except (TypeError, orjson.JSONEncodeError):
            self.counts["dropped_invalid"] += 1
            return False
        with self._lock:
            if len(self._buffer) >= self.max_buffer:
                self.counts["dropped_full"] += 1
                return False
            self._buffer.append((use_case, raw))
            self.counts["reported"] += 1
            full = len(self._buffer) >= self.batch_size
        if full:
            self._nudge()
        return True

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def _nudge(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(wake.set)

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Start the sender in the running event loop (returns at once)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="spendsentry-usage-reporter")

    async def stop(self, flush_timeout_s: float = 5.0) -> None:
        """Send what is buffered (for at most ``flush_timeout_s``), then stop."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        task = self._task
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), flush_timeout_s)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._task = None

    def start_background(self) -> None:
        """Run the sender in a daemon thread with its own event loop."""
        ready = threading.Event()

        async def main() -> None:
            self._closing = asyncio.Event()
            await self.start()
            ready.set()
            await self._closing.wait()
            await self.stop(self._flush_timeout_s)

        def run() -> None:
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(main())
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="spendsentry-reporter", daemon=True)
        self._thread.start()
        ready.wait(10)

    def close(self, flush_timeout_s: float = 5.0) -> None:
        """Stop the background thread, flushing for at most ``flush_timeout_s``."""
        loop, thread, closing = self._loop, self._thread, self._closing
        if loop is None or thread is None or closing is None:
            return
        self._flush_timeout_s = flush_timeout_s
        with contextlib.suppress(RuntimeError):  # the loop already finished
            loop.call_soon_threadsafe(closing.set)
        thread.join(flush_timeout_s + 10)
        self._thread = None

    # -- the sender -----------------------------------------------------------

    async def _run(self) -> None:
        from aiokafka import AIOKafkaProducer

        backoff = 0.5
        producer: Any = None
        try:
            while True:
                if producer is None:
                    if self._stopping:
                        return  # nothing can be sent: the buffer is dropped below
                    producer = AIOKafkaProducer(
                        bootstrap_servers=self.bootstrap,
                        linger_ms=5,
                        acks="all",
                        # Tansu (and some proxies) reject idempotent producers.
                        enable_idempotence=False,
                        request_timeout_ms=10_000,
                        **self.security.client_kwargs(),
                    )
                    try:
                        await asyncio.wait_for(producer.start(), 10)
                        self.connected = True
                        backoff = 0.5
                    except Exception as exc:
                        log.warning(
                            "usage reporter cannot reach %s (%s); retrying in %.1fs",
                            self.bootstrap,
                            type(exc).__name__,
                            backoff,
                        )
                        with contextlib.suppress(Exception):
                            await producer.stop()
                        producer = None
                        self.connected = False
                        await self._sleep(backoff)
                        backoff = min(backoff * 2, 10.0)
                        continue
                if not self._buffer:
                    if self._stopping:
                        return
                    await self._sleep(self.linger_s)
                    continue
                try:
                    await self._send_round(producer)
                except Exception as exc:
                    log.warning("usage reporter lost %s (%s)", self.bootstrap, type(exc).__name__)
                    with contextlib.suppress(Exception):
                        await producer.stop()
                    producer = None
                    self.connected = False
        finally:
            with self._lock:
                left = len(self._buffer)
                self._buffer.clear()
            if left:
                self.counts["dropped_unsent"] += left
            if producer is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.stop(), 5)

    async def _sleep(self, seconds: float) -> None:
        wake = self._wake
        assert wake is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), seconds)
        wake.clear()

    async def _send_round(self, producer: Any) -> None:
        with self._lock:
            take = min(len(self._buffer), self.batch_size * 20)
            items = [self._buffer.popleft() for _ in range(take)]
        by_use_case: dict[str, list[bytes]] = {}
        for use_case, raw in items:
            by_use_case.setdefault(use_case, []).append(raw)
        sends = []
        for use_case, raws in by_use_case.items():
            key = use_case.encode()
            if self.as_array:
                for i in range(0, len(raws), self.batch_size):
                    chunk = raws[i : i + self.batch_size]
                    sends.append((key, b"[" + b",".join(chunk) + b"]", len(chunk)))
            else:
                sends.extend((key, raw, 1) for raw in raws)
        futures = []
        try:
            for key, value, n in sends:
                futures.append((await producer.send(self.topic, value, key=key), n))
        except Exception:
            unsent = sum(n for _, _, n in sends[len(futures) :])
            self.counts["dropped_send_failed"] += unsent
            raise
        started = time.monotonic()
        for fut, n in futures:
            try:
                await asyncio.wait_for(fut, max(1.0, 15 - (time.monotonic() - started)))
                self.counts["sent"] += n
            except Exception:
                self.counts["dropped_send_failed"] += n
