"""What an alert sink is: the ``AlertSink`` protocol, its error, and routing by owner.

A sink turns one alert state change into one delivery (a Slack message, a
signed webhook POST, a PagerDuty event, an Alertmanager alert). Everything
around it (consuming ``ai.alerts``, the dedupe keys, retries with back-off,
committing only what was delivered) is :class:`spendsentry.sinks.notifier.AlertNotifier`'s,
shared by every sink.

Routing: a sink configured in the environment takes every alert (``route="all"``)
or only those whose policy ``owner`` names it (``route="owner"``). An owner is a
list of destinations separated by spaces or commas, e.g.
``"#support-ai-oncall pagerduty:support"``: a Slack channel and a PagerDuty
service whose routing key is ``PAGERDUTY_ROUTING_KEY_SUPPORT``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

from spendsentry.slack.state import Thread

__all__ = [
    "AlertSink",
    "DeliveryError",
    "alert_summary",
    "http_failure",
    "owner_targets",
    "pick_target",
    "post",
    "routed",
]

_SPLIT = re.compile(r"[\s,]+")


class DeliveryError(Exception):
    """The receiver did not take the message; ``retry`` says whether trying again can help.

    ``retry_after`` (seconds) is the receiver's own ``Retry-After``, when it gave one.
    """

    def __init__(self, message: str, *, retry: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry = retry
        self.retry_after = retry_after


class AlertSink(Protocol):
    """One destination of alerts (see :mod:`spendsentry.sinks`)."""

    #: Short name: the state file (``<name>-notifier.json``), logs, consumer group suffix.
    name: str

    def accepts(self, alert: Mapping[str, Any]) -> bool:
        """Whether this alert is for this sink (routing, minimum severity)."""
        ...

    async def deliver(self, alert: Mapping[str, Any], thread: Thread | None) -> Thread | None:
        """Deliver one state change; raise :class:`DeliveryError` when it was not taken.

        ``thread`` is what an earlier delivery of the same incident returned
        (Slack's parent message); sinks without threads return None.
        """
        ...

    async def tick(self, now: float) -> None:
        """Called between polls (about twice a second): periodic work such as re-sends."""
        ...


def owner_targets(owner: object, sink: str) -> list[str] | None:
    """The targets ``owner`` names for ``sink`` (``""``: its default), None: not named.

    >>> owner_targets("#support-ai pagerduty:support, webhook", "pagerduty")
    ['support']
    >>> owner_targets("#support-ai pagerduty:support, webhook", "webhook")
    ['']
    >>> owner_targets("#support-ai", "alertmanager") is None, owner_targets(None, "webhook")
    (True, None)
    """
    if not isinstance(owner, str):
        return None
    found = []
    for token in _SPLIT.split(owner.strip()):
        kind, _, target = token.partition(":")
        if kind.lower() == sink:
            found.append(target)
    return found or None


def pick_target(alert: Mapping[str, Any], sink: str, table: Mapping[str, str]) -> str | None:
    """The first entry of ``table`` the alert's owner names for ``sink``, else its default ``""``.

    >>> table = {"": "default", "support": "S"}
    >>> pick_target({"owner": "#x pagerduty:nope pagerduty:support"}, "pagerduty", table)
    'S'
    >>> pick_target({}, "pagerduty", table), pick_target({}, "pagerduty", {})
    ('default', None)
    """
    for target in owner_targets(alert.get("owner"), sink) or []:
        if target in table:
            return table[target]
    return table.get("")


def routed(alert: Mapping[str, Any], sink: str, route: str) -> bool:
    """Whether a sink with routing mode ``route`` ("all" or "owner") takes ``alert``.

    >>> routed({"owner": "#ops"}, "webhook", "all"), routed({"owner": "#ops"}, "webhook", "owner")
    (True, False)
    >>> routed({"owner": "#ops webhook:audit"}, "webhook", "owner")
    True
    """
    return route == "all" or owner_targets(alert.get("owner"), sink) is not None


def alert_summary(alert: Mapping[str, Any]) -> str:
    """One line naming an alert, for receivers that show a title.

    >>> alert_summary({"severity": "warning", "kind": "cost_spike", "use_case": "chat",
    ...                "summary": "cost 3.0x usual"})
    '[WARNING] cost_spike on chat: cost 3.0x usual'
    """
    severity = str(alert.get("severity", "?")).upper()
    head = f"[{severity}] {alert.get('kind')} on {alert.get('use_case')}"
    summary = alert.get("summary")
    return f"{head}: {summary}" if summary else head


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (a number or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        import time

        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def http_failure(
    what: str, status: int, body: str, headers: Mapping[str, str], *, permanent: frozenset[int]
) -> DeliveryError:
    """The error of a non-2xx answer: retried unless ``status`` is in ``permanent``.

    >>> e = http_failure("webhook", 429, "slow down", {"Retry-After": "2"}, permanent=frozenset())
    >>> e.retry, e.retry_after, str(e)
    (True, 2.0, "webhook answered 429 'slow down'")
    >>> http_failure("x", 400, "", {}, permanent=frozenset({400})).retry
    False
    """
    return DeliveryError(
        f"{what} answered {status} {body[:100]!r}",
        retry=status not in permanent,
        retry_after=_retry_after(headers.get("Retry-After")),
    )


async def post(
    session: Any,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    what: str,
    permanent: frozenset[int] = frozenset({400, 422}),
) -> str:
    """POST ``body``; the answer's text on a 2xx, else :class:`DeliveryError`.

    Connection errors and timeouts are retried; so is every status but
    ``permanent`` (a 401/403/404 is configuration: keep the alert until
    someone fixes it rather than drop it).
    """
    import aiohttp

    try:
        async with session.post(url, data=body, headers=dict(headers)) as resp:
            text = await resp.text(errors="replace")
            if 200 <= resp.status < 300:
                return str(text)
            raise http_failure(what, resp.status, text, resp.headers, permanent=permanent)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise DeliveryError(
            f"{what} unreachable: {type(exc).__name__}: {exc}", retry=True
        ) from None
