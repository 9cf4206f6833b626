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

Concurrency limits (in-flight slots, :mod:`spendsentry.client.slots`) are
enforced around the call, not in ``check``::

    guard = ThrottleGuard(..., concurrency={"support_chat": 20}, replicas=3)
    with guard.slot("support_chat", session_id=sid):   # ConcurrencyLimited when full
        call_the_model()

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
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from spendsentry.actions.commands import Rejection, scope_keys_of_call, trusted_command
from spendsentry.actions.signing import ThrottleKeys
from spendsentry.actions.throttle_topic import ThrottleTopic, read_commands, read_latest
from spendsentry.client.buckets import TokenBucket
from spendsentry.client.slots import Slot, SlotPool
from spendsentry.concurrency import ConcurrencyLimit
from spendsentry.kafka.compacted import CompactedFollower
from spendsentry.kafka.security import KafkaSecurity
from spendsentry.messages.scope import scope_key
from spendsentry.messages.topics import THROTTLE_TOPIC
from spendsentry.timeutil import parse_ts

__all__ = [
    "ConcurrencyLimited",
    "Decision",
    "ThrottleGuard",
    "ThrottleTopic",
    "read_commands",
    "read_latest",
]

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
    decided; ``test`` is True when that command is a test
    (``spendsentry throttle test``). ``slot`` is the in-flight slot a granted
    :meth:`ThrottleGuard.acquire` took (None otherwise): release it.
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
    test: bool = False
    slot: Slot | None = None


_ALLOW = Decision()


class ConcurrencyLimited(RuntimeError):
    """Raised by :meth:`ThrottleGuard.slot` when the use case (or session) is full;
    ``decision`` is the denial (``retry_after_s``, ``reason``)."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.reason)
        self.decision = decision


@dataclass(slots=True)
class _Held:
    doc: dict[str, Any]
    expires_at: float
    issued_at: float


@dataclass(frozen=True, slots=True)
class _Cap:
    limit: int
    key: str
    held: _Held


def _command_id(h: _Held) -> str:
    return str(h.doc["command_id"])


def _block(held: list[tuple[str, _Held]], now: float) -> Decision | None:
    """The denial of the first ``block`` command held, if any."""
    for key, h in held:
        if h.doc["action"] == "block":
            return Decision(
                "deny",
                False,
                retry_after_s=max(0.0, h.expires_at - now),
                scope_key=key,
                command_id=_command_id(h),
                reason="blocked",
            )
    return None


def _tightest_cap(held: list[tuple[str, _Held]]) -> _Cap | None:
    """The lowest ``cap_input_tokens`` held (the first of equals), if any."""
    cap: _Cap | None = None
    for key, h in held:
        if h.doc["action"] == "cap_input_tokens":
            limit = int(h.doc["params"]["max_input_tokens"])
            if cap is None or limit < cap.limit:
                cap = _Cap(limit, key, h)
    return cap


def _rate_costs(
    buckets: dict[tuple[str, str], TokenBucket],
    held: list[tuple[str, _Held]],
    input_tokens: int | None,
    now: float,
) -> list[tuple[TokenBucket, float, str, _Held]]:
    """(bucket, cost of this call, scope key, command) of every ``limit_rate`` held.

    Buckets are made on first use and kept in ``buckets`` by (scope key, kind).
    """
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
            bucket = buckets.get((key, kind))
            if bucket is None:
                bucket = buckets[(key, kind)] = TokenBucket(params[name], now=now)
            wanted.append((bucket, n, key, h))
    return wanted


def _allowed(
    held: list[tuple[str, _Held]], cap: _Cap | None, worst: tuple[float, str, _Held] | None
) -> Decision:
    """The decision for a call that may go ahead: routed, capped, within rate, or plain."""
    # The most specific route wins (scopes are listed general first).
    for key, h in reversed(held):
        if h.doc["action"] == "route_model":
            target = str(h.doc["params"]["target_model"])
            return Decision(
                "route",
                True,
                model=target,
                max_input_tokens=cap.limit if cap else None,
                scope_key=key,
                command_id=_command_id(h),
                reason=f"routed to {target}",
            )
    if cap is not None:
        return Decision(
            "cap",
            True,
            max_input_tokens=cap.limit,
            scope_key=cap.key,
            command_id=_command_id(cap.held),
            reason=f"prompts capped at {cap.limit}",
        )
    if worst is not None:
        return Decision(scope_key=worst[1], command_id=_command_id(worst[2]), reason="within rate")
    return _ALLOW


class ConcurrencySlots:
    """A guard's in-flight slots (:mod:`spendsentry.client.slots`): one concept of
    :class:`ThrottleGuard`, kept apart from its commands. Local to the guard, so
    limits hold while ``ai.throttle`` is unreadable too."""

    slots: SlotPool
    counts: Counter[str]
    retry_after_busy_s: float

    def acquire(self, use_case: str, session_id: str | None = None) -> Decision:
        """Take an in-flight slot for one call of ``use_case`` (in ``session_id``).

        Granted: an allowing decision whose ``slot`` must be given back with
        :meth:`release` when the call ends (success or failure). Refused: a
        "deny" decision (``reason`` "concurrency limit: N in flight ...",
        ``retry_after_s`` the busy hint). Never waits and does no I/O; slots are
        local to this guard, so they hold while ``ai.throttle`` is unreadable too.
        """
        slot, refusal = self.slots.take_or_refusal(use_case, session_id)
        if slot is not None:
            return Decision(slot=slot)
        assert refusal is not None
        self.counts[f"concurrency_{refusal.scope}"] += 1
        return Decision(
            "deny",
            False,
            retry_after_s=self.retry_after_busy_s,
            scope_key=scope_key(use_case, session_id=session_id)
            if refusal.scope == "session"
            else scope_key(use_case),
            reason=refusal.reason,
        )

    def release(self, slot: Slot | Decision | None) -> bool:
        """Give back a slot (or the slot of a decision); False when there is none
        or it was given back already (releasing twice is harmless)."""
        if isinstance(slot, Decision):
            slot = slot.slot
        return slot is not None and self.slots.give_back(slot)

    def in_flight(self, use_case: str | None = None, session_id: str | None = None) -> int:
        """Calls holding a slot of this guard: all, of ``use_case``, or of one session."""
        return self.slots.in_flight(use_case, session_id)

    @contextlib.contextmanager
    def slot(self, use_case: str, session_id: str | None = None) -> Iterator[Decision]:
        """Hold a slot for the ``with`` block; raises :class:`ConcurrencyLimited` when full.

        The slot is given back however the block ends (exceptions included).
        """
        decision = self.acquire(use_case, session_id)
        if not decision.allowed:
            raise ConcurrencyLimited(decision)
        try:
            yield decision
        finally:
            self.release(decision)

    @contextlib.asynccontextmanager
    async def aslot(self, use_case: str, session_id: str | None = None) -> AsyncIterator[Decision]:
        """:meth:`slot` for ``async with`` (taking a slot never waits either way)."""
        with self.slot(use_case, session_id) as decision:
            yield decision


class ThrottleGuard(ConcurrencySlots):
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
    health_interval_s : float
        How often to prove contact with the broker while the topic is quiet.
    clock : callable
        Wall-clock seconds (commands expire by wall clock).
    security : KafkaSecurity, optional
        TLS/SASL settings for the consumer; the environment's (read once, here)
        when omitted.
    concurrency : mapping, optional
        Concurrency limits by use case: a :class:`ConcurrencyLimit`, or an int
        (``max_in_flight`` alone). They are limits across all replicas.
    replicas, replica_index : int
        How many gateway replicas share each limit and which one this is
        (0-based, None when unknown); this guard holds its share
        (:func:`spendsentry.concurrency.replica_share`).
    retry_after_busy_s : float
        ``retry_after_s`` of concurrency denials (a slot frees when a call ends,
        which the guard cannot foresee).
    slot_max_hold_s : float or None
        A full use case first reclaims slots held longer than this (a release
        that never came); None keeps them until released.
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
        security: KafkaSecurity | None = None,
        concurrency: Mapping[str, ConcurrencyLimit | int] | None = None,
        replicas: int = 1,
        replica_index: int | None = None,
        retry_after_busy_s: float = 1.0,
        slot_max_hold_s: float | None = 900.0,
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
        self.retry_after_busy_s = retry_after_busy_s
        self.slots = SlotPool(
            {
                use_case: limit if isinstance(limit, ConcurrencyLimit) else ConcurrencyLimit(limit)
                for use_case, limit in (concurrency or {}).items()
            },
            replicas=replicas,
            replica_index=replica_index,
            max_hold_s=slot_max_hold_s,
        )
        # Consumer state (only used once started).
        self._managed = False
        self._follower = CompactedFollower(
            bootstrap,
            topic,
            self.apply,
            security=security,
            health_interval_s=health_interval_s,
            name="throttle guard",
        )
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
        return not self._managed or self._follower.fresh(self.stale_after_s)

    def check(
        self,
        use_case: str,
        model: str | None = None,
        input_tokens: int | None = None,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        now: float | None = None,
    ) -> Decision:
        """Decide one call of ``use_case`` (to ``model``, by ``agent_id``, in ``session_id``).

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
        keys = scope_keys_of_call(use_case, model, agent_id, session_id)
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
            return self._marked(decision)

    def _marked(self, decision: Decision) -> Decision:
        """``decision`` marked as a test's when the command that decided is one."""
        held = self._held.get(decision.scope_key or "")
        if held is None or held.doc["command_id"] != decision.command_id:
            return decision
        if not held.doc.get("test"):
            return decision
        return replace(decision, test=True, reason=f"{decision.reason} (test command)")

    def _decide(
        self,
        held: list[tuple[str, _Held]],
        model: str | None,
        input_tokens: int | None,
        now: float,
        *,
        take: bool,
    ) -> Decision:
        """What the commands in ``held`` (general scopes first) say about one call.

        In order: a block denies; a prompt over the tightest cap is refused; an
        empty rate bucket denies (the longest wait wins) and otherwise every
        bucket pays for the call when ``take``; then the most specific route,
        the cap, or "within rate" names the command that let the call through.
        """
        blocked = _block(held, now)
        if blocked is not None:
            return blocked
        cap = _tightest_cap(held)
        if cap is not None and input_tokens is not None and input_tokens > cap.limit:
            return Decision(
                "cap",
                False,
                max_input_tokens=cap.limit,
                scope_key=cap.key,
                command_id=_command_id(cap.held),
                reason=f"prompt of {input_tokens} tokens over the cap of {cap.limit}",
            )
        wanted = _rate_costs(self._buckets, held, input_tokens, now)
        waits = [(b.peek(n, now=now), key, h) for b, n, key, h in wanted]
        worst = max(waits, default=None, key=lambda w: w[0])
        if worst is not None and worst[0] > 0:
            return Decision(
                "deny",
                False,
                retry_after_s=round(worst[0], 3),
                scope_key=worst[1],
                command_id=_command_id(worst[2]),
                reason="rate limit",
            )
        if take:
            for bucket, n, _, _ in wanted:
                bucket.take(n, now=now)
        return _allowed(held, cap, worst)

    # -- consuming ai.throttle ------------------------------------------------

    async def start(self) -> None:
        """Start consuming in the running event loop (returns at once)."""
        self._managed = True
        await self._follower.start("spendsentry-throttle-guard")

    async def stop(self) -> None:
        await self._follower.stop()

    async def wait_synced(self, timeout: float) -> bool:
        """Wait until the topic has been read to its end once; False on timeout."""
        return await self._follower.wait_synced(timeout)

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
