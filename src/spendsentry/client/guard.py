"""ThrottleGuard: the gateway side of ``ai.throttle``.

The guard reads the compacted ``ai.throttle`` topic from the beginning, keeps
the latest verified command per scope, and answers :meth:`ThrottleGuard.check`
for each call the gateway is about to make::

    guard = ThrottleGuard("kafka:9092", keys=ThrottleKeys.from_env())
    guard.start_background()                 # or: await guard.start() in asyncio code
    decision = guard.check("support_chat", model="gpt-4o", input_tokens=1800)
    if not decision.allowed:
        return http_429(retry_after=decision.retry_after_s)
    model = decision.model or "gpt-4o"

Commands that are unsigned, fail verification, are not newer than the one
held for their scope (replays), have expired, or are malformed are ignored
and counted in :attr:`ThrottleGuard.counts`. When the broker cannot be
reached (before the first full read, or after ``stale_after_s`` without
contact) the guard allows everything (``fail_open=True``, the default) or
denies everything; it reconnects by itself and resumes where it was.
``check`` does no I/O and is safe to call from any thread or coroutine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from spendsentry import kafka_security
from spendsentry.actions.commands import Rejection, scope_keys_of_call, trusted_command
from spendsentry.actions.signing import ThrottleKeys
from spendsentry.client.buckets import TokenBucket
from spendsentry.messages.topics import THROTTLE_TOPIC
from spendsentry.timeutil import parse_ts

__all__ = ["Decision", "ThrottleGuard", "ThrottleTopic", "read_commands", "read_latest"]

log = logging.getLogger(__name__)

#: Verdicts of :meth:`ThrottleGuard.apply` (and the keys of ``counts``).
VERDICTS = ("applied", "released", "unsigned", "bad_signature", "replayed", "expired", "invalid")


@dataclass(frozen=True, slots=True)
class Decision:
    """What the gateway should do with one call.

    ``action`` is "allow", "deny" (``retry_after_s`` says when to retry),
    "route" (serve the call with ``model``) or "cap" (prompts above
    ``max_input_tokens`` are refused; ``allowed`` says whether this one fits).
    ``dry_run_action`` is what a dry-run command would have done (log it; it
    is not enforced). ``scope_key`` and ``command_id`` name the command that
    decided.
    """

    action: str = "allow"
    allowed: bool = True
    retry_after_s: float | None = None
    model: str | None = None
    max_input_tokens: int | None = None
    scope_key: str | None = None
    command_id: str | None = None
    dry_run_action: str | None = None
    reason: str = ""


_ALLOW = Decision()


@dataclass(slots=True)
class _Held:
    doc: dict[str, Any]
    expires_at: float
    issued_at: float


class ThrottleGuard:
    """Keeps the latest command per scope and decides calls (see the module doc).

    Parameters
    ----------
    bootstrap : str
        Kafka bootstrap servers (``host:port[,host:port]``).
    keys : ThrottleKeys
        Keys accepted when verifying signatures (only ``accepted`` is used).
    topic : str
        The throttle topic.
    fail_open : bool
        Allow (True) or deny (False) every call while commands cannot be read.
    stale_after_s : float
        Without contact with the broker for this long, commands count as unreadable.
    retry_after_unavailable_s : float
        ``retry_after_s`` of fail-closed denials.
    clock : callable
        Wall-clock seconds (commands expire by wall clock).
    """

    def __init__(
        self,
        bootstrap: str,
        keys: ThrottleKeys,
        *,
        topic: str = THROTTLE_TOPIC,
        fail_open: bool = True,
        stale_after_s: float = 30.0,
        retry_after_unavailable_s: float = 5.0,
        health_interval_s: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not keys.accepted:
            log.warning("ThrottleGuard has no key: every command will be ignored as unverified")
        self.bootstrap = bootstrap
        self.keys = keys
        self.topic = topic
        self.fail_open = fail_open
        self.stale_after_s = stale_after_s
        self.retry_after_unavailable_s = retry_after_unavailable_s
        self.health_interval_s = health_interval_s
        self.clock = clock
        #: How many commands got each verdict, plus "unavailable" decisions.
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}
        self._versions: dict[str, int] = {}
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._logged_dry_runs: set[str] = set()
        # Consumer state (only used once started).
        self._managed = False
        self._synced = threading.Event()
        self._last_contact = -float("inf")
        self._positions: dict[int, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: asyncio.Event | None = None

    # -- commands -------------------------------------------------------------

    def apply(self, message: bytes | str | Mapping[str, Any], *, now: float | None = None) -> str:
        """Take one message from ``ai.throttle``; return its verdict (see ``VERDICTS``)."""
        now = self.clock() if now is None else now
        verdict, scope_key = self._judge(message, now)
        self.counts[verdict] += 1
        if verdict in ("unsigned", "bad_signature", "invalid"):
            log.warning("ignored a throttle command for %r: %s", scope_key, verdict)
        return verdict

    def _judge(self, message: bytes | str | Mapping[str, Any], now: float) -> tuple[str, str]:
        doc = trusted_command(message, self.keys)
        if isinstance(doc, Rejection):
            return doc.reason, doc.scope_key
        scope_key = doc["scope_key"]
        version = int(doc["version"])
        expires_at, issued_at = parse_ts(doc["expires_at"]), parse_ts(doc["issued_at"])
        with self._lock:
            if version <= self._versions.get(scope_key, 0):
                return "replayed", scope_key
            self._versions[scope_key] = version
            self._drop(scope_key)
            if now >= expires_at:
                # The newest word on the scope has run out: back to normal.
                return "expired", scope_key
            if doc["action"] == "release":
                return "released", scope_key
            self._held[scope_key] = _Held(doc, expires_at, issued_at)
        return "applied", scope_key

    def _drop(self, scope_key: str) -> None:
        self._held.pop(scope_key, None)
        for kind in ("rpm", "tpm"):
            self._buckets.pop((scope_key, kind), None)

    def active(self, *, now: float | None = None) -> dict[str, dict[str, Any]]:
        """The commands in force (verified, not expired, not released), by scope key."""
        now = self.clock() if now is None else now
        with self._lock:
            return {k: dict(h.doc) for k, h in sorted(self._held.items()) if now < h.expires_at}

    # -- decisions ------------------------------------------------------------

    @property
    def available(self) -> bool:
        """Whether the commands held are current (always True when not consuming)."""
        if not self._managed:
            return True
        fresh = time.monotonic() - self._last_contact <= self.stale_after_s
        return self._synced.is_set() and fresh

    def check(
        self,
        use_case: str,
        model: str | None = None,
        input_tokens: int | None = None,
        *,
        agent_id: str | None = None,
        now: float | None = None,
    ) -> Decision:
        """Decide one call of ``use_case`` (to ``model``, by ``agent_id``).

        Rate limits take one request and ``input_tokens`` tokens from the
        scope's buckets when the call is allowed.
        """
        now = self.clock() if now is None else now
        if not self.available:
            self.counts["unavailable"] += 1
            if self.fail_open:
                return Decision(reason="throttle commands unavailable (fail open)")
            return Decision(
                "deny",
                False,
                retry_after_s=self.retry_after_unavailable_s,
                reason="throttle commands unavailable (fail closed)",
            )
        keys = scope_keys_of_call(use_case, model, agent_id)
        with self._lock:
            enforced: list[tuple[str, _Held]] = []
            dry: list[tuple[str, _Held]] = []
            for key in keys:
                held = self._held.get(key)
                if held is None:
                    continue
                if now >= held.expires_at:
                    self._drop(key)
                    continue
                (dry if held.doc["dry_run"] else enforced).append((key, held))
            if not enforced and not dry:
                return _ALLOW
            decision = self._decide(enforced, model, input_tokens, now, take=True)
            if dry:
                would = self._decide(dry, model, input_tokens, now, take=True)
                if would.action != "allow":
                    self.counts[f"dry_run_{would.action}"] += 1
                    if would.command_id not in self._logged_dry_runs:
                        self._logged_dry_runs.add(str(would.command_id))
                        log.info(
                            "dry run: %s would %s (%s)", would.scope_key, would.action, would.reason
                        )
                    if decision.action == "allow":
                        decision = Decision(
                            dry_run_action=would.action,
                            scope_key=would.scope_key,
                            command_id=would.command_id,
                            reason=f"dry run: {would.reason}",
                        )
            return decision

    def _decide(
        self,
        held: list[tuple[str, _Held]],
        model: str | None,
        input_tokens: int | None,
        now: float,
        *,
        take: bool,
    ) -> Decision:
        def cid(h: _Held) -> str:
            return str(h.doc["command_id"])

        for key, h in held:
            if h.doc["action"] == "block":
                return Decision(
                    "deny",
                    False,
                    retry_after_s=max(0.0, h.expires_at - now),
                    scope_key=key,
                    command_id=cid(h),
                    reason="blocked",
                )
        cap: tuple[int, str, _Held] | None = None
        for key, h in held:
            if h.doc["action"] == "cap_input_tokens":
                limit = int(h.doc["params"]["max_input_tokens"])
                if cap is None or limit < cap[0]:
                    cap = (limit, key, h)
        if cap is not None and input_tokens is not None and input_tokens > cap[0]:
            return Decision(
                "cap",
                False,
                max_input_tokens=cap[0],
                scope_key=cap[1],
                command_id=cid(cap[2]),
                reason=f"prompt of {input_tokens} tokens over the cap of {cap[0]}",
            )
        wanted: list[tuple[TokenBucket, float, str, _Held]] = []
        for key, h in held:
            if h.doc["action"] != "limit_rate":
                continue
            params = h.doc["params"]
            for kind, name, n in (
                ("rpm", "requests_per_minute", 1.0),
                ("tpm", "tokens_per_minute", float(input_tokens or 0)),
            ):
                if name not in params:
                    continue
                bucket = self._buckets.get((key, kind))
                if bucket is None:
                    bucket = self._buckets[(key, kind)] = TokenBucket(params[name], now=now)
                wanted.append((bucket, n, key, h))
        waits = [(b.peek(n, now=now), key, h) for b, n, key, h in wanted]
        worst = max(waits, default=None, key=lambda w: w[0])
        if worst is not None and worst[0] > 0:
            return Decision(
                "deny",
                False,
                retry_after_s=round(worst[0], 3),
                scope_key=worst[1],
                command_id=cid(worst[2]),
                reason="rate limit",
            )
        if take:
            for bucket, n, _, _ in wanted:
                bucket.take(n, now=now)
        # The most specific route wins (scopes are listed general first).
        for key, h in reversed(held):
            if h.doc["action"] == "route_model":
                target = str(h.doc["params"]["target_model"])
                return Decision(
                    "route",
                    True,
                    model=target,
                    max_input_tokens=cap[0] if cap else None,
                    scope_key=key,
                    command_id=cid(h),
                    reason=f"routed to {target}",
                )
        if cap is not None:
            return Decision(
                "cap",
                True,
                max_input_tokens=cap[0],
                scope_key=cap[1],
                command_id=cid(cap[2]),
                reason=f"prompts capped at {cap[0]}",
            )
        if worst is not None:
            return Decision(scope_key=worst[1], command_id=cid(worst[2]), reason="within rate")
        return _ALLOW

    # -- consuming ai.throttle ------------------------------------------------

    async def start(self) -> None:
        """Start consuming in the running event loop (returns at once)."""
        self._managed = True
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="spendsentry-throttle-guard")

    async def stop(self) -> None:
        self._stopping = True
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._task = None

    async def wait_synced(self, timeout: float) -> bool:
        """Wait until the topic has been read to its end once; False on timeout."""
        return await asyncio.to_thread(self._synced.wait, timeout)

    def start_background(self) -> None:
        """Consume in a daemon thread with its own event loop (for sync gateways)."""
        ready = threading.Event()

        async def main() -> None:
            self._closing = asyncio.Event()
            await self.start()
            ready.set()
            await self._closing.wait()
            await self.stop()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(main())
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="spendsentry-guard", daemon=True)
        self._thread.start()
        ready.wait(10)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the background thread started by :meth:`start_background`."""
        loop, thread, closing = self._loop, self._thread, self._closing
        if loop is None or thread is None or closing is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already finished
            loop.call_soon_threadsafe(closing.set)
        thread.join(timeout)
        self._thread = self._loop = None

    def __enter__(self) -> ThrottleGuard:
        self.start_background()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> ThrottleGuard:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _run(self) -> None:
        backoff = 0.5
        while not self._stopping:
            try:
                await self._consume()
                backoff = 0.5
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if self._stopping or (task is not None and task.cancelling()):
                    raise  # stop() cancelled us
                # aiokafka can surface a CancelledError of its own when the
                # broker drops connections mid-request; that is an outage, not
                # a stop, and must not end the reconnect loop.
                error: BaseException = exc
            except Exception as exc:  # the broker went away: reconnect
                error = exc
            else:
                continue
            log.warning(
                "throttle guard lost %s (%s); reconnecting in %.1fs",
                self.bootstrap,
                type(error).__name__,
                backoff,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _consume(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            request_timeout_ms=10_000,
            **kafka_security.client_kwargs(),
        )
        await asyncio.wait_for(consumer.start(), 15)
        try:
            partitions = await _partitions(consumer, self.topic)
            if not partitions:
                # Not created yet: do not ask for it by name (Tansu would create it).
                self._last_contact = time.monotonic()
                self._synced.set()
                await asyncio.sleep(self.health_interval_s)
                return
            tps = [TopicPartition(self.topic, p) for p in partitions]
            consumer.assign(tps)
            for tp in tps:
                if tp.partition in self._positions:
                    consumer.seek(tp, self._positions[tp.partition])
                else:
                    await consumer.seek_to_beginning(tp)
            ends = await asyncio.wait_for(consumer.end_offsets(tps), 10)
            for tp in tps:
                held = self._positions.get(tp.partition)
                if held is not None and held > ends[tp]:
                    # The log ends before what we read: the topic was recreated or
                    # truncated (a broker that lost its data). The broker would not
                    # say "out of range" until it grows past our old position, so
                    # commands published since would be skipped: read it again.
                    log.warning(
                        "throttle guard: %s:%d ends at %d, before offset %d read earlier "
                        "(recreated or truncated); reading it from the start",
                        self.topic,
                        tp.partition,
                        ends[tp],
                        held,
                    )
                    del self._positions[tp.partition]
                    await consumer.seek_to_beginning(tp)
            self._last_contact = time.monotonic()
            next_health = time.monotonic() + self.health_interval_s
            while not self._stopping:
                batch = await consumer.getmany(timeout_ms=300, max_records=1000)
                for tp, records in batch.items():
                    for r in records:
                        if r.value is not None:
                            self.apply(r.value)
                        self._positions[tp.partition] = r.offset + 1
                if not self._synced.is_set() and all(
                    self._positions.get(tp.partition, 0) >= ends[tp] for tp in tps
                ):
                    self._synced.set()
                if time.monotonic() >= next_health:
                    # Proof of contact: a fetch that returns nothing says nothing.
                    await asyncio.wait_for(consumer.end_offsets(tps), 5)
                    self._last_contact = time.monotonic()
                    next_health = time.monotonic() + self.health_interval_s
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), 5)


async def _partitions(consumer: Any, topic: str) -> list[int]:
    # topics() fetches metadata for every topic, which never auto-creates one.
    await asyncio.wait_for(consumer.topics(), 10)
    found = consumer.partitions_for_topic(topic)
    return sorted(found) if found else []


@dataclass(slots=True)
class ThrottleTopic:
    """What a read of ai.throttle found (see :func:`read_commands`)."""

    #: The newest trusted command per scope key (sorted by key).
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Records ignored, by reason (``invalid``, ``unsigned``, ``bad_signature``).
    rejected: Counter[str] = field(default_factory=Counter)
    #: The first few of them, for a log line (their scope keys are not trusted).
    examples: list[Rejection] = field(default_factory=list)
    #: Records read (tombstones included).
    records: int = 0

    def take(self, value: bytes | None, keys: ThrottleKeys) -> None:
        """Count one record; keep it if it is a trusted command newer than the one held."""
        self.records += 1
        if value is None:
            return  # a tombstone: compaction's business
        doc = trusted_command(value, keys)
        if isinstance(doc, Rejection):
            self.rejected[doc.reason] += 1
            if len(self.examples) < _EXAMPLES:
                self.examples.append(doc)
            return
        held = self.latest.get(doc["scope_key"])
        if held is None or doc["version"] > held["version"]:
            self.latest[doc["scope_key"]] = doc

    def versions(self, limit: int) -> dict[str, int]:
        """Version per scope of the ``limit`` most recently issued trusted commands."""
        newest = sorted(self.latest.items(), key=lambda kv: _issued(kv[1]), reverse=True)
        return {key: int(doc["version"]) for key, doc in newest[:limit]}

    def describe_rejected(self) -> str:
        """One line for the log: how many were ignored and why, with examples."""
        counts = ", ".join(f"{reason}={n}" for reason, n in sorted(self.rejected.items()))
        shown = "; ".join(
            f"{r.scope_key[:60]!r}: {r.reason} ({r.detail[:120]})" for r in self.examples
        )
        return f"{sum(self.rejected.values())} ignored ({counts}), e.g. {shown}"


#: Rejected records kept as examples for the log.
_EXAMPLES = 3


def _issued(doc: Mapping[str, Any]) -> float:
    try:
        return parse_ts(doc["issued_at"])
    except (KeyError, TypeError, ValueError):
        return -float("inf")


async def read_commands(
    bootstrap: str,
    topic: str = THROTTLE_TOPIC,
    *,
    keys: ThrottleKeys,
    timeout_s: float = 20.0,
) -> ThrottleTopic:
    """The newest trusted command per scope on ``topic`` (read from the beginning).

    Only commands that :func:`~spendsentry.actions.commands.trusted_command`
    accepts with ``keys`` count: a forged record (unsigned, signed with
    another key, malformed, a version out of range) is counted in
    ``rejected`` and can neither hide nor replace a real command.

    Raises
    ------
    TimeoutError
        The topic could not be read to its end within ``timeout_s``.
    """
    found = ThrottleTopic()
    await _read_topic(bootstrap, topic, timeout_s, lambda value: found.take(value, keys))
    found.latest = dict(sorted(found.latest.items()))
    return found


async def read_latest(
    bootstrap: str,
    topic: str = THROTTLE_TOPIC,
    *,
    keys: ThrottleKeys | None = None,
    timeout_s: float = 20.0,
) -> dict[str, tuple[dict[str, Any], bool | None]]:
    """The newest command per scope key on ``topic`` (read from the beginning).

    Returns ``{scope_key: (command, verified)}``. With ``keys``, only trusted
    commands (as :func:`read_commands`; ``verified`` is True). Without keys,
    every record that is a JSON object with a scope key and a version, not
    verified (``verified`` is None): for looking, never for acting on.

    Raises
    ------
    TimeoutError
        The topic could not be read to its end within ``timeout_s``.
    """
    if keys is not None:
        found = await read_commands(bootstrap, topic, keys=keys, timeout_s=timeout_s)
        return {key: (doc, True) for key, doc in found.latest.items()}
    latest: dict[str, tuple[dict[str, Any], bool | None]] = {}

    def take(value: bytes | None) -> None:
        try:
            doc = orjson.loads(value or b"")
            key, version = doc["scope_key"], int(doc["version"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return
        held = latest.get(key)
        if held is None or version > int(held[0]["version"]):
            latest[key] = (doc, None)

    await _read_topic(bootstrap, topic, timeout_s, take)
    return dict(sorted(latest.items()))


async def _read_topic(
    bootstrap: str, topic: str, timeout_s: float, take: Callable[[bytes | None], None]
) -> None:
    """Pass every record value of ``topic``, from the beginning to its end, to ``take``."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=10_000,
        **kafka_security.client_kwargs(),
    )
    await asyncio.wait_for(consumer.start(), timeout_s)
    try:
        partitions = await _partitions(consumer, topic)
        if not partitions:
            return
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end in {timeout_s:g}s")
            batch = await consumer.getmany(timeout_ms=300, max_records=5000)
            for records in batch.values():
                for r in records:
                    take(r.value)
            # Past the end offsets and nothing more: done. The end offset alone
            # is not enough: the embedded broker can report one below records
            # already written (seen: 49912 of 50001), and the newest command
            # on a scope is the one that counts.
            if not batch and not [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                return
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), 5)
