"""The PagerDuty sink: alert state changes as Events API v2 events, keyed by the incident.

``firing`` and ``escalated`` send ``trigger``, ``resolved`` sends ``resolve``, and
an operator's Acknowledge on ``ai.control`` (Slack's button) sends ``acknowledge``;
all carry ``dedup_key`` = the incident's ``alert_id``, so PagerDuty keeps one
alert per incident (an escalation updates it, the resolution closes it).
Severity maps one to one (``critical``, ``warning``, ``info``); alerts below
``min_severity`` (default ``warning``: ``info`` alerts are recommendations,
not pages) are not sent. The routing key is ``PAGERDUTY_ROUTING_KEY``, or
``PAGERDUTY_ROUTING_KEY_<NAME>`` when the policy owner says ``pagerduty:<name>``.
PagerDuty answers 202; 400 (an event it will never take) is given up and
logged, 429 and 5xx are retried with back-off.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from spendsentry.messages.control import ControlAction
from spendsentry.messages.severity import severity_rank
from spendsentry.sinks.base import DeliveryError, alert_summary, owner_targets, post, routed
from spendsentry.slack.state import Thread

__all__ = ["EVENTS_URL", "PagerDutySink", "event_of"]

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
_ACTIONS = {"firing": "trigger", "escalated": "trigger", "resolved": "resolve"}
#: PagerDuty's severities are critical, error, warning, info; ours map one to one.
_SEVERITY = {"critical": "critical", "warning": "warning", "info": "info"}


def _iso(when: object) -> str | None:
    """An alert time (already ISO 8601 on the topic, or epoch seconds) for PagerDuty."""
    if isinstance(when, str):
        return when
    if isinstance(when, int | float):
        return datetime.fromtimestamp(float(when), UTC).isoformat(timespec="seconds")
    return None


def event_of(alert: Mapping[str, Any], routing_key: str) -> dict[str, Any]:
    """The Events API v2 body for one alert state change.

    >>> e = event_of({"alert_id": "ab", "status": "resolved", "severity": "warning",
    ...               "kind": "cost_spike", "use_case": "chat"}, "R1")
    >>> e
    {'routing_key': 'R1', 'event_action': 'resolve', 'dedup_key': 'ab'}
    >>> e = event_of({"alert_id": "ab", "status": "firing", "severity": "critical",
    ...               "kind": "cost_spike", "use_case": "chat", "detected_at": 0}, "R1")
    >>> e["event_action"], e["payload"]["severity"], e["payload"]["timestamp"]
    ('trigger', 'critical', '1970-01-01T00:00:00+00:00')
    """
    action = _ACTIONS[str(alert["status"])]
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": str(alert["alert_id"]),
    }
    if action != "trigger":
        return event
    details = {
        k: alert[k]
        for k in (
            "alert_id",
            "status",
            "incident_seq",
            "evidence",
            "impact",
            "action",
            "owner",
            "tier",
            "started_at",
        )
        if alert.get(k) is not None
    }
    payload: dict[str, Any] = {
        "summary": alert_summary(alert)[:1024],  # PagerDuty's limit
        "source": f"spendsentry/{alert['use_case']}",
        "severity": _SEVERITY[str(alert["severity"])],
        "component": str(alert["use_case"]),
        "class": str(alert["kind"]),
        "custom_details": details,
    }
    stamp = _iso(alert.get("detected_at"))
    if stamp:
        payload["timestamp"] = stamp
    event["payload"] = payload
    event["client"] = "spendsentry"
    return event


class PagerDutySink:
    """Events API v2 (``events_url`` is configurable: a proxy, or a test stand-in)."""

    name = "pagerduty"

    def __init__(
        self,
        session: Any,
        routing_keys: Mapping[str, str],
        *,
        events_url: str = EVENTS_URL,
        route: str = "all",
        min_severity: str = "warning",
    ) -> None:
        self.session = session
        self.routing_keys = dict(routing_keys)
        self.events_url = events_url
        self.route = route
        self.min_rank = severity_rank(min_severity)

    def accepts(self, alert: Mapping[str, Any]) -> bool:
        if severity_rank(str(alert.get("severity"))) < self.min_rank:
            return False
        return routed(alert, self.name, self.route)

    def target_for(self, alert: Mapping[str, Any]) -> str | None:
        """The name of the routing key the owner names (``pagerduty:<name>``), ``""``: default."""
        for target in owner_targets(alert.get("owner"), self.name) or []:
            if target in self.routing_keys:
                return target
        return "" if "" in self.routing_keys else None

    async def deliver(self, alert: Mapping[str, Any], thread: Thread | None) -> Thread | None:
        target = self.target_for(alert)
        if target is None:
            raise DeliveryError(
                f"no PagerDuty routing key for owner {str(alert.get('owner'))[:80]!r}",
                retry=False,
            )
        await self._send(event_of(alert, self.routing_keys[target]))
        # The incident's memo: which key it went to (its name: the key stays out of files),
        # so an acknowledgement goes to the same service.
        return Thread("pagerduty", target)

    async def acknowledge(self, action: ControlAction, thread: Thread) -> Thread | None:
        """An operator's Acknowledge (Slack's button on ``ai.control``) for PagerDuty."""
        key = self.routing_keys.get(thread.ts) or self.routing_keys.get("")
        if key is None or action.alert_id is None:
            raise DeliveryError(f"no PagerDuty routing key named {thread.ts!r}", retry=False)
        await self._send(
            {"routing_key": key, "event_action": "acknowledge", "dedup_key": action.alert_id}
        )
        return None

    async def _send(self, event: dict[str, Any]) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": "spendsentry-pagerduty"}
        await post(
            self.session,
            self.events_url,
            orjson.dumps(event),
            headers,
            what="PagerDuty",
            permanent=frozenset({400}),
        )

    async def tick(self, now: float) -> None:
        return None
