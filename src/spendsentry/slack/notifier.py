"""The Slack notifier: ``ai.alerts`` in, one Slack message per state change out.

The consume / dedupe / retry machinery is :class:`spendsentry.sinks.notifier.AlertNotifier`'s
(see there for the delivery guarantees); this module is the Slack sink it drives.
slack-sdk's retry handlers retry 5xx and 429 a few times (honouring
``Retry-After``) before the notifier's own back-off loop takes over.

Modes, from the environment (:class:`SlackSettings`): ``SLACK_BOT_TOKEN`` (the
channel is the alert's ``owner`` from its policy, else ``SLACK_DEFAULT_CHANNEL``;
escalations and the resolution update the parent and reply in its thread),
else ``SLACK_WEBHOOK_URL`` (one message per state change), else log only.

Secrets (the token, the webhook URL, which is a credential) never reach the
log: slack-sdk gets a logger whose filter masks them, and our own messages
never contain them.
"""

from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from spendsentry.messages.alert import ALERT_STATUSES, dedupe_key_of
from spendsentry.sinks.base import DeliveryError
from spendsentry.sinks.notifier import (
    AlertNotifier,
    NotifierConfig,
    NotifierStats,
    parse_alert,
    redact,
)
from spendsentry.slack.blocks import SlackMessage, render_alert, render_update
from spendsentry.slack.incident_blocks import incident_key, render_incident, render_joined
from spendsentry.slack.state import Thread

__all__ = [
    "DeliveryError",
    "NotifierConfig",
    "NotifierStats",
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


class _SlackSink:
    """What both Slack modes share as an :class:`~spendsentry.sinks.base.AlertSink`."""

    name = "slack"

    def accepts(self, alert: Mapping[str, Any]) -> bool:
        return True  # Slack takes every alert: the owner only picks the channel

    async def tick(self, now: float) -> None:
        return None


class _WebhookSink(_SlackSink):
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


class _BotSink(_SlackSink):
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
        if isinstance(owner, str):
            # An owner may list other destinations too ("#oncall pagerduty:support").
            for token in re.split(r"[\s,]+", owner.strip()):
                if _CHANNEL.fullmatch(token):
                    return token
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


# -- the notifier -----------------------------------------------------------------


class SlackNotifier(AlertNotifier):
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
        secrets = frozenset(settings.secrets())
        _REDACT.secrets |= secrets
        self.settings = settings
        factory = None if settings.mode == "log" else self._build
        super().__init__(config, factory, name="slack", secrets=secrets)
        #: incident key -> alert_id -> its latest message: what a parent shows
        #: (the most recent incidents, bounded; after a restart, what came since).
        self._incidents: OrderedDict[str, dict[str, dict[str, Any]]] = OrderedDict()

    @property
    def mode(self) -> str:
        return self.settings.mode

    def _build(self, session: aiohttp.ClientSession) -> _WebhookSink | _BotSink:
        timeout = self.config.request_timeout_s
        if self.settings.mode == "bot":
            assert self.settings.bot_token is not None
            return _BotSink(
                self.settings.bot_token,
                session,
                timeout,
                default_channel=self.settings.default_channel,
                api_url=self.settings.api_url,
            )
        assert self.settings.webhook_url is not None
        return _WebhookSink(self.settings.webhook_url, session, timeout)

    def thread_key(self, alert: Mapping[str, Any]) -> str:
        """One Slack thread per incident: its first alert's parent message."""
        return incident_key(alert)

    def _context(self, alert: dict[str, Any]) -> SlackMessage:
        """The incident's parent message, with ``alert`` joined (once per delivery)."""
        return render_incident(self._members(alert))

    async def _send(
        self, alert: dict[str, Any], thread: Thread | None, context: Any = None
    ) -> Thread | None:
        sink = self._sink()
        assert isinstance(sink, _WebhookSink | _BotSink)
        return await sink.deliver(alert, thread, context)

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
