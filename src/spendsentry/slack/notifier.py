"""The Slack notifier: ``ai.alerts`` in, one Slack message per state change out.

Delivery is at-least-once with deduplication, across restarts:

* A record's offset is committed only after its message is delivered (or it
  was judged unusable, or it was delivered before).
* Delivered dedupe keys (``alert_id:status:severity:incident_seq``, see
  :func:`spendsentry.messages.dedupe_key`) and each incident's thread are
  kept in :class:`~spendsentry.slack.state.DeliveryState`, saved atomically
  before the commit; a re-read record whose key is there is skipped.
* Slack down, 5xx or 429: slack-sdk's retry handlers retry a few times
  (honouring ``Retry-After``); after that the notifier's own loop keeps
  retrying the same record with capped exponential back-off, forever, without
  committing: alerts queue up on the topic and go out in order once Slack
  answers again. While it waits it keeps polling the (paused) consumer, so the
  group does not evict it however long the outage lasts.

The one duplicate this cannot rule out: a crash between Slack's answer and the
state file's fsync (milliseconds) re-posts that one message on restart. Slack
has no idempotency key for ``chat.postMessage`` that would close that gap.

Modes, from the environment (:class:`SlackSettings`): ``SLACK_BOT_TOKEN`` (the
channel is the alert's ``owner`` from its policy, else ``SLACK_DEFAULT_CHANNEL``;
escalations and the resolution update the parent and reply in its thread),
else ``SLACK_WEBHOOK_URL`` (one message per state change), else log only.

Secrets (the token, the webhook URL, which is a credential) never reach the
log: slack-sdk gets a logger whose filter masks them, and our own messages
never contain them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from spendsentry.kafka import TopicSpec, ensure_topics
from spendsentry.kafka import security as kafka_security
from spendsentry.messages.alert import ALERT_STATUSES, dedupe_key_of
from spendsentry.messages.severity import SEVERITIES
from spendsentry.messages.topics import ALERTS_TOPIC
from spendsentry.slack.blocks import SlackMessage, render_alert, render_update
from spendsentry.slack.incident_blocks import incident_key, render_incident, render_joined
from spendsentry.slack.state import DeliveryState, Thread

__all__ = [
    "DeliveryError",
    "NotifierConfig",
    "SlackNotifier",
    "SlackSettings",
    "alert_key",
    "parse_alert",
    "redact",
]

log = logging.getLogger(__name__)

#: The statuses an alert may have (the vocabulary's, kept under the old name).
STATUSES = ALERT_STATUSES
_CHANNEL = re.compile(r"#[a-z0-9][a-z0-9._-]{0,79}|[CGD][A-Z0-9]{6,}")
# chat.postMessage errors that mean "this channel will not take it": try the default.
_CHANNEL_ERRORS = frozenset(
    {"channel_not_found", "not_in_channel", "is_archived", "channel_is_archived"}
)
# Errors about the message itself: retrying it unchanged cannot succeed.
_MESSAGE_ERRORS = frozenset(
    {"invalid_blocks", "invalid_blocks_format", "msg_too_long", "invalid_arguments", "no_text"}
)
# chat.update errors that mean the parent is gone: start a new thread.
_PARENT_GONE = frozenset({"message_not_found", "cant_update_message", "channel_not_found"})


# -- secrets ----------------------------------------------------------------------


#: Incidents whose alerts the notifier remembers for their parent message.
_MAX_INCIDENTS = 2_000


class _RedactSecrets(logging.Filter):
    """Masks known secrets in every record of the logger it sits on."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            text = record.getMessage()
            masked = redact(text, self.secrets)
            if masked != text:
                record.msg, record.args = masked, None
        return True


_REDACT = _RedactSecrets()
#: The logger slack-sdk writes to (it logs request URLs, i.e. webhook URLs).
_SDK_LOG = logging.getLogger("spendsentry.slack.sdk")
_SDK_LOG.addFilter(_REDACT)


def redact(text: str, secrets: set[str] | frozenset[str]) -> str:
    """Replace every secret in ``text`` with ``***``.

    >>> redact("POST https://hooks.example/services/T1/B2/s3cret ok", {"/services/T1/B2/s3cret"})
    'POST https://hooks.example*** ok'
    """
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


@dataclass(frozen=True, slots=True)
class SlackSettings:
    """Where alerts go. Secrets are excluded from ``repr``.

    >>> SlackSettings.from_env({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_DEFAULT_CHANNEL": "#ops"})
    SlackSettings(default_channel='#ops', api_url=None)
    >>> SlackSettings.from_env({}).mode
    'log'
    """

    bot_token: str | None = field(default=None, repr=False)
    webhook_url: str | None = field(default=None, repr=False)
    default_channel: str | None = None
    #: Slack Web API base URL (a proxy, or a test stand-in); default slack.com.
    api_url: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SlackSettings:
        """Read ``SLACK_BOT_TOKEN``, ``SLACK_WEBHOOK_URL``, ``SLACK_DEFAULT_CHANNEL``,
        ``SLACK_API_URL``; empty values count as unset."""
        env = os.environ if env is None else env
        return cls(
            bot_token=env.get("SLACK_BOT_TOKEN", "").strip() or None,
            webhook_url=env.get("SLACK_WEBHOOK_URL", "").strip() or None,
            default_channel=env.get("SLACK_DEFAULT_CHANNEL", "").strip() or None,
            api_url=env.get("SLACK_API_URL", "").strip() or None,
        )

    @property
    def mode(self) -> str:
        """``bot`` (token wins when both are set), ``webhook`` or ``log``."""
        if self.bot_token:
            return "bot"
        return "webhook" if self.webhook_url else "log"

    def secrets(self) -> set[str]:
        """What must never be logged: the token, the webhook URL and its path."""
        out = {s for s in (self.bot_token, self.webhook_url) if s}
        if self.webhook_url:
            path = urlsplit(self.webhook_url).path
            if len(path) > 8:  # the path is the credential; "/" alone is not
                out.add(path)
        return out


@dataclass(slots=True)
class NotifierConfig:
    """What the notifier reads and where it keeps its state."""

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
    #: Seconds allowed for one Slack HTTP request.
    request_timeout_s: float = 10.0
    #: Alerts older than this (Kafka record time) are logged, not posted; None: all.
    #: A first start would otherwise post a week of history into the channel.
    max_age_s: float | None = 86_400.0


class DeliveryError(Exception):
    """Slack did not take the message; ``retry`` says whether trying again can help."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


# -- alerts in ---------------------------------------------------------------------


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
    if doc.get("status") not in STATUSES:
        return None, f"status {doc.get('status')!r:.40} is not one of {', '.join(STATUSES)}"
    if doc.get("severity") not in SEVERITIES:
        return None, f"severity {doc.get('severity')!r:.40} is not one of {', '.join(SEVERITIES)}"
    for name in ("kind", "use_case"):
        if not isinstance(doc.get(name), str) or not doc[name]:
            return None, f"{name} missing or not a non-empty string"
    return doc, ""


def alert_key(alert: Mapping[str, Any]) -> str:
    """The dedupe key (:func:`spendsentry.messages.dedupe_key_of`).

    >>> alert_key({"alert_id": "ab", "status": "firing", "severity": "info", "incident_seq": 1})
    'ab:firing:info:1'
    """
    return dedupe_key_of(alert)


# -- Slack out ---------------------------------------------------------------------


class _ServerErrors(AsyncServerErrorRetryHandler):
    """slack-sdk's handler retries 500 and 503 only; gateways also answer 502 and 504."""

    async def _can_retry_async(
        self, *, state: Any, request: Any, response: Any = None, error: Any = None
    ) -> bool:
        return response is not None and response.status_code in (500, 502, 503, 504)


def _retry_handlers() -> list[AsyncRetryHandler]:
    return [
        AsyncConnectionErrorRetryHandler(max_retry_count=2),
        AsyncRateLimitErrorRetryHandler(max_retry_count=3),
        _ServerErrors(max_retry_count=2),
    ]


class _WebhookSink:
    """An incoming webhook: one message per state change, no threads."""

    def __init__(self, url: str, session: aiohttp.ClientSession, timeout_s: float) -> None:
        self.client = AsyncWebhookClient(
            url,
            timeout=int(timeout_s),
            session=session,
            logger=_SDK_LOG,
            retry_handlers=_retry_handlers(),
        )

    async def deliver(
        self, alert: Mapping[str, Any], thread: Thread | None, parent: SlackMessage | None = None
    ) -> Thread | None:
        msg = render_alert(alert)
        status, body = await self._send(msg.text, msg.blocks)
        if status == 400 and body in ("invalid_blocks", "invalid_payload", "invalid_blocks_format"):
            log.error(
                "the webhook refused the blocks of %s (%s); sending text only",
                alert_key(alert),
                body,
            )
            status, body = await self._send(msg.text, None)
        if status != 200:
            # 403/404/410 are configuration (revoked hook, archived channel): keep
            # the alert and retry until someone fixes it rather than drop it.
            raise DeliveryError(f"webhook answered {status} {body[:100]!r}", retry=True)
        return None

    async def _send(self, text: str, blocks: list[dict[str, Any]] | None) -> tuple[int, str]:
        try:
            resp = await self.client.send(text=text, blocks=blocks)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise DeliveryError(
                f"webhook unreachable: {type(exc).__name__}: {exc}", retry=True
            ) from None
        return resp.status_code, str(resp.body or "")


class _BotSink:
    """A bot token: the parent message per incident, updates in its thread."""

    def __init__(
        self,
        token: str,
        session: aiohttp.ClientSession,
        timeout_s: float,
        *,
        default_channel: str | None,
        api_url: str | None,
    ) -> None:
        kwargs: dict[str, Any] = {"base_url": api_url} if api_url else {}
        self.client = AsyncWebClient(
            token=token,
            timeout=int(timeout_s),
            session=session,
            logger=_SDK_LOG,
            retry_handlers=_retry_handlers(),
            **kwargs,
        )
        self.default_channel = default_channel

    def channel_for(self, alert: Mapping[str, Any]) -> str | None:
        owner = alert.get("owner")
        if isinstance(owner, str) and _CHANNEL.fullmatch(owner):
            return owner
        return self.default_channel

    async def deliver(
        self, alert: Mapping[str, Any], thread: Thread | None, parent: SlackMessage | None = None
    ) -> Thread | None:
        """Post or update the incident's parent (``parent``: its rendering), reply in its thread.

        A thread exists once the incident's first alert was posted: a kind that
        joins it (``firing``), an escalation and a resolution update the parent
        and reply in the thread.
        """
        parent = parent or render_alert(alert)
        if thread is not None:
            try:
                await self._call(
                    "chat_update",
                    channel=thread.channel,
                    ts=thread.ts,
                    text=parent.text,
                    blocks=parent.blocks,
                )
            except DeliveryError as exc:
                if getattr(exc, "slack_error", None) not in _PARENT_GONE:
                    raise
                log.warning("the parent of %s is gone; starting a new thread", alert_key(alert))
            else:
                joined = alert.get("status") == "firing"
                reply = render_joined(alert) if joined else render_update(alert)
                # A jump to critical is news for the whole channel, not just the thread.
                broadcast = (
                    alert.get("status") == "escalated" and alert.get("severity") == "critical"
                )
                await self._post(
                    thread.channel, reply, alert, thread_ts=thread.ts, reply_broadcast=broadcast
                )
                return thread
        # Firing, or an update whose parent we never posted (e.g. state lost):
        # a parent message of its own, which later updates thread under.
        channel = self.channel_for(alert)
        if channel is None:
            raise DeliveryError(
                f"no channel for use case {str(alert.get('use_case'))[:80]!r}: its policy has "
                "no owner channel and SLACK_DEFAULT_CHANNEL is not set",
                retry=False,
            )
        data = await self._post(channel, parent, alert)
        return Thread(str(data.get("channel") or channel), str(data.get("ts")))

    async def _post(
        self, channel: str, msg: SlackMessage, alert: Mapping[str, Any], **extra: Any
    ) -> dict[str, Any]:
        try:
            return await self._call(
                "chat_postMessage", channel=channel, text=msg.text, blocks=msg.blocks, **extra
            )
        except DeliveryError as exc:
            error = getattr(exc, "slack_error", None)
            if (
                error in _CHANNEL_ERRORS
                and self.default_channel
                and channel != self.default_channel
            ):
                log.error(
                    "channel %s refused %s (%s); posting to the default channel",
                    channel,
                    alert_key(alert),
                    error,
                )
                extra.pop("thread_ts", None)
                extra.pop("reply_broadcast", None)
                return await self._post(self.default_channel, msg, alert, **extra)
            if error in _MESSAGE_ERRORS:
                log.error(
                    "Slack refused the blocks of %s (%s); sending text only",
                    alert_key(alert),
                    error,
                )
                return await self._call("chat_postMessage", channel=channel, text=msg.text, **extra)
            raise

    async def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        try:
            resp = await getattr(self.client, method)(**kwargs)
        except SlackApiError as exc:
            error = str(exc.response.get("error", "")) if exc.response is not None else ""
            status = getattr(exc.response, "status_code", 0)
            permanent = error in _MESSAGE_ERRORS or error in _PARENT_GONE
            err = DeliveryError(f"{method} failed: HTTP {status} {error}", retry=not permanent)
            err.slack_error = error  # type: ignore[attr-defined]
            raise err from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise DeliveryError(
                f"Slack unreachable: {type(exc).__name__}: {exc}", retry=True
            ) from None
        return dict(resp.data) if isinstance(resp.data, dict) else {}


# -- the consumer ------------------------------------------------------------------


class _Stopped(Exception):
    """Stop was requested while a delivery was pending."""


@dataclass(slots=True)
class NotifierStats:
    delivered: int = 0
    duplicates: int = 0
    skipped: int = 0
    failed_attempts: int = 0


class SlackNotifier:
    """Consume ``ai.alerts`` and deliver each state change to Slack once.

    Parameters
    ----------
    config : NotifierConfig
        Broker, topic, group, state directory, retry timing.
    settings : SlackSettings
        Token / webhook / default channel; log-only when neither is set.

    Examples
    --------
    >>> async def main(stop):  # doctest: +SKIP
    ...     notifier = SlackNotifier(NotifierConfig("127.0.0.1:9092"), SlackSettings.from_env())
    ...     await notifier.run(stop)
    """

    def __init__(self, config: NotifierConfig, settings: SlackSettings) -> None:
        self.config = config
        self.settings = settings
        self.stats = NotifierStats()
        self.state: DeliveryState | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self._session: aiohttp.ClientSession | None = None
        self._sink: _WebhookSink | _BotSink | None = None
        self._secrets = frozenset(settings.secrets())
        _REDACT.secrets |= self._secrets
        #: incident key -> alert_id -> its latest message: what a parent shows
        #: (the most recent incidents, bounded; after a restart, what came since).
        self._incidents: OrderedDict[str, dict[str, dict[str, Any]]] = OrderedDict()

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
        if self.settings.mode != "log":
            self.state = await asyncio.to_thread(DeliveryState.load, cfg.state_dir)
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=cfg.request_timeout_s)
            )
            if self.settings.mode == "bot":
                assert self.settings.bot_token is not None
                self._sink = _BotSink(
                    self.settings.bot_token,
                    self._session,
                    cfg.request_timeout_s,
                    default_channel=self.settings.default_channel,
                    api_url=self.settings.api_url,
                )
            else:
                assert self.settings.webhook_url is not None
                self._sink = _WebhookSink(
                    self.settings.webhook_url, self._session, cfg.request_timeout_s
                )
        log.info(
            "Slack notifier: mode %s, topic %s, group %s",
            self.settings.mode,
            cfg.alerts.name,
            cfg.group_id,
        )
        security = kafka_security.client_kwargs()  # TLS/SASL from SPENDSENTRY_KAFKA_*
        await ensure_topics(cfg.bootstrap, [cfg.alerts], security=security)
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
        self.consumer.subscribe([cfg.alerts.name])

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
        alert, reason = parse_alert(record.value)
        if alert is None:
            self.stats.skipped += 1
            log.warning("skipping alert record %s: %s", where, reason)
            return
        key = alert_key(alert)
        max_age = self.config.max_age_s
        if max_age and record.timestamp > 0 and record.timestamp / 1000 < time.time() - max_age:
            self.stats.skipped += 1
            log.info("not posting %s (%s): older than %.0fs", key, where, max_age)
            return
        if self._sink is None:
            log.info("alert %s: %s", key, alert.get("summary", ""))
            self.stats.delivered += 1
            return
        state = self.state
        assert state is not None
        if state.delivered(key):
            self.stats.duplicates += 1
            log.debug("already delivered %s (%s)", key, where)
            return
        thread = await self._deliver(alert, key, stop)
        await asyncio.to_thread(state.record, key, incident_key(alert), thread=thread)
        self.stats.delivered += 1
        log.info("delivered %s to Slack", key)

    async def _deliver(self, alert: dict[str, Any], key: str, stop: asyncio.Event) -> Thread | None:
        sink, state = self._sink, self.state
        assert sink is not None and state is not None
        delay = self.config.retry_initial_s
        parent = render_incident(self._members(alert))
        while True:
            if stop.is_set():
                raise _Stopped
            thread = state.thread(incident_key(alert))
            attempt = asyncio.ensure_future(sink.deliver(alert, thread, parent))
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
                    log.error("giving up on %s: %s", key, message)
                    return None
                self.stats.failed_attempts += 1
                log.warning("delivery of %s failed: %s; retrying in %.1fs", key, message, delay)
            await self._idle(delay, stop)
            delay = min(delay * 2, self.config.retry_max_s)

    def _members(self, alert: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The incident's alerts with ``alert`` as the latest of its own."""
        key = incident_key(alert)
        members = self._incidents.setdefault(key, {})
        self._incidents.move_to_end(key)
        members.pop(str(alert["alert_id"]), None)
        members[str(alert["alert_id"])] = alert
        while len(self._incidents) > _MAX_INCIDENTS:
            self._incidents.popitem(last=False)
        return members

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
