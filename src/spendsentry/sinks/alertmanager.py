"""The Alertmanager sink: incidents as alerts on ``POST /api/v2/alerts``, kept alive while firing.

Alertmanager treats an alert whose ``endsAt`` has passed as resolved, so a
client re-sends what is still firing (Prometheus does so every minute with
``endsAt`` a few intervals ahead). This sink does the same: a firing or
escalated incident is posted with ``endsAt = now + 4 x resend_s`` and re-posted
every ``resend_s`` until its ``resolved`` record is posted with ``endsAt`` = the
resolution time. What is firing is kept in ``<state_dir>/alertmanager-firing.json``,
so a restarted notifier keeps re-sending what it had sent.

Labels identify an alert in Alertmanager (its fingerprint): ``alertname``
(``spendsentry_<kind>``), ``use_case``, ``kind``, ``severity``, ``alert_id``,
``tier`` and ``owner`` when the alert has them, so routes, silences and
inhibition rules match on them. Severity is a label, so an escalation resolves
the lower-severity alert (``endsAt`` now) in the same POST that fires the new one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from spendsentry.sinks.base import DeliveryError, alert_summary, post, routed
from spendsentry.slack.state import StateError, Thread, write_atomically

__all__ = ["AlertmanagerSink", "postable"]

log = logging.getLogger(__name__)


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def postable(alert: Mapping[str, Any]) -> dict[str, Any]:
    """An Alertmanager ``postableAlert`` for ``alert`` (``endsAt`` is set by the caller).

    >>> p = postable({"alert_id": "ab", "status": "firing", "severity": "warning",
    ...               "kind": "cost_spike", "use_case": "chat", "summary": "cost 3.0x usual",
    ...               "started_at": "2026-11-02T09:00:00Z"})
    >>> p["labels"]
    {'alertname': 'spendsentry_cost_spike', 'alert_id': 'ab', 'kind': 'cost_spike', \
'severity': 'warning', 'use_case': 'chat'}
    >>> p["startsAt"], p["annotations"]["summary"]
    ('2026-11-02T09:00:00Z', '[WARNING] cost_spike on chat: cost 3.0x usual')
    """
    labels = {
        "alertname": f"spendsentry_{alert['kind']}",
        "alert_id": str(alert["alert_id"]),
        "kind": str(alert["kind"]),
        "severity": str(alert["severity"]),
        "use_case": str(alert["use_case"]),
    }
    for name in ("tier", "owner"):
        if alert.get(name):
            labels[name] = str(alert[name])
    annotations = {"summary": alert_summary(alert)}
    impact = alert.get("impact")
    if isinstance(impact, Mapping):
        for name, value in impact.items():
            annotations[str(name)] = str(value)
    if alert.get("evidence") is not None:
        annotations["evidence"] = json.dumps(alert["evidence"], sort_keys=True)
    out: dict[str, Any] = {"labels": labels, "annotations": annotations}
    if isinstance(alert.get("started_at"), str):
        out["startsAt"] = alert["started_at"]
    return out


class AlertmanagerSink:
    """Posts to ``<url>/api/v2/alerts`` and re-sends firing alerts every ``resend_s``."""

    name = "alertmanager"

    def __init__(
        self,
        session: Any,
        url: str,
        state_dir: Path,
        *,
        route: str = "all",
        resend_s: float = 60.0,
    ) -> None:
        self.session = session
        self.url = url.rstrip("/") + "/api/v2/alerts"
        self.route = route
        self.resend_s = resend_s
        self.path = Path(state_dir) / "alertmanager-firing.json"
        #: alert_id -> the postable alert last sent as firing (without endsAt)
        self.firing: dict[str, dict[str, Any]] = self._load()
        self._next_resend = 0.0
        #: Re-sends posted (for the status line and tests).
        self.resends = 0

    def accepts(self, alert: Mapping[str, Any]) -> bool:
        return routed(alert, self.name, self.route)

    async def deliver(self, alert: Mapping[str, Any], thread: Thread | None) -> Thread | None:
        import time

        now = time.time()
        alert_id = str(alert["alert_id"])
        new = postable(alert)
        old = self.firing.get(alert_id)
        batch = []
        if old is not None and old["labels"] != new["labels"]:
            batch.append({**old, "endsAt": _rfc3339(now)})  # the lower severity ends now
        if alert.get("status") == "resolved":
            ends = alert.get("resolved_at")
            batch.append({**new, "endsAt": ends if isinstance(ends, str) else _rfc3339(now)})
        else:
            batch.append({**new, "endsAt": self._hold_until(now)})
        await self._post(batch)
        if alert.get("status") == "resolved":
            self.firing.pop(alert_id, None)
        else:
            self.firing[alert_id] = new
        self._save()
        return None

    async def tick(self, now: float) -> None:
        """Re-send what is firing once ``resend_s`` has passed since the last time."""
        if now < self._next_resend:
            return
        self._next_resend = now + self.resend_s
        if not self.firing:
            return
        ends = self._hold_until(now)
        try:
            await self._post([{**p, "endsAt": ends} for p in self.firing.values()])
        except DeliveryError as exc:
            # Not a lost alert: the next re-send carries it, and endsAt leaves
            # four intervals before Alertmanager would call it resolved.
            log.warning("re-sending %d firing alerts failed: %s", len(self.firing), exc)
            return
        self.resends += 1

    def _hold_until(self, now: float) -> str:
        return _rfc3339(now + 4 * self.resend_s)

    async def _post(self, alerts: list[dict[str, Any]]) -> None:
        body = orjson.dumps(alerts)
        headers = {"Content-Type": "application/json", "User-Agent": "spendsentry-alertmanager"}
        await post(self.session, self.url, body, headers, what="Alertmanager")

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            doc = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StateError(
                f"Alertmanager state {self.path} is unreadable ({exc}); fix or delete it "
                "(deleting it stops the re-sends of alerts firing now until they change)"
            ) from None
        if not isinstance(doc, dict):
            raise StateError(f"Alertmanager state {self.path} is not a JSON object")
        return {str(k): v for k, v in doc.items() if isinstance(v, dict) and "labels" in v}

    def _save(self) -> None:
        write_atomically(self.path, json.dumps(self.firing, sort_keys=True).encode())
