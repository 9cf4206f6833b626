"""Which sinks beside Slack are on, from the environment, and the notifiers that drive them.

Variables (``_<NAME>`` variants are the targets an owner names, e.g. ``pagerduty:support``
picks ``PAGERDUTY_ROUTING_KEY_SUPPORT``):

* webhook: ``SPENDSENTRY_WEBHOOK_URL`` (``_<NAME>``), ``SPENDSENTRY_WEBHOOK_SECRET``
  (the HMAC key, required with a URL);
* pagerduty: ``PAGERDUTY_ROUTING_KEY`` (``_<NAME>``), ``PAGERDUTY_EVENTS_URL``
  (default ``https://events.pagerduty.com/v2/enqueue``), ``PAGERDUTY_MIN_SEVERITY``
  (``warning`` by default);
* alertmanager: ``ALERTMANAGER_URL`` (e.g. ``http://alertmanager:9093``),
  ``ALERTMANAGER_RESEND_S`` (re-send interval of firing alerts, default 60);
* any: ``SPENDSENTRY_<SINK>_ROUTE``, ``all`` (default) or ``owner`` (only alerts whose
  policy owner names the sink).

Each sink runs as its own notifier, in its own consumer group
(``<group>-<sink>``), so PagerDuty being down never holds Slack back.

>>> [s.name for s in sink_settings({"ALERTMANAGER_URL": "http://am:9093",
...                                  "PAGERDUTY_ROUTING_KEY_SUPPORT": "R2"})]
['pagerduty', 'alertmanager']
>>> sink_settings({"SPENDSENTRY_WEBHOOK_URL": "http://x"})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
spendsentry.errors.ConfigError: SPENDSENTRY_WEBHOOK_URL is set but SPENDSENTRY_WEBHOOK_SECRET ...
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from spendsentry.errors import ConfigError
from spendsentry.messages.severity import SEVERITIES
from spendsentry.sinks.notifier import AlertNotifier, NotifierConfig, SinkFactory

__all__ = ["SinkSetting", "notifiers", "sink_settings"]

_ROUTES = ("all", "owner")


@dataclass(frozen=True, slots=True)
class SinkSetting:
    """One configured sink: its name and what builds it. Secrets stay out of ``repr``."""

    name: str
    build: Any = field(repr=False)  # (session, state_dir) -> AlertSink
    secrets: frozenset[str] = field(default=frozenset(), repr=False)


def _named(env: Mapping[str, str], prefix: str) -> dict[str, str]:
    """``PREFIX`` as target ``""`` and ``PREFIX_<NAME>`` as ``name`` (lower case)."""
    out = {}
    for key, value in env.items():
        value = value.strip()
        if not value:
            continue
        if key == prefix:
            out[""] = value
        elif key.startswith(prefix + "_"):
            out[key[len(prefix) + 1 :].lower()] = value
    return out


def _route(env: Mapping[str, str], sink: str) -> str:
    route = env.get(f"SPENDSENTRY_{sink.upper()}_ROUTE", "").strip().lower() or "all"
    if route not in _ROUTES:
        raise ConfigError(f"SPENDSENTRY_{sink.upper()}_ROUTE must be one of {', '.join(_ROUTES)}")
    return route


def sink_settings(env: Mapping[str, str] | None = None) -> list[SinkSetting]:
    """The sinks beside Slack that the environment turns on, in a fixed order."""
    env = os.environ if env is None else env
    out: list[SinkSetting] = []
    urls = _named(env, "SPENDSENTRY_WEBHOOK_URL")
    if urls:
        secret = env.get("SPENDSENTRY_WEBHOOK_SECRET", "").strip()
        if not secret:
            raise ConfigError(
                "SPENDSENTRY_WEBHOOK_URL is set but SPENDSENTRY_WEBHOOK_SECRET is not: "
                "webhook deliveries are always signed"
            )
        route = _route(env, "webhook")

        def webhook(session: Any, state_dir: Path) -> Any:
            from spendsentry.sinks.webhook import WebhookSink

            return WebhookSink(session, urls, secret, route=route)

        out.append(SinkSetting("webhook", webhook, frozenset({secret, *urls.values()})))
    keys = _named(env, "PAGERDUTY_ROUTING_KEY")
    if keys:
        from spendsentry.sinks.pagerduty import EVENTS_URL

        events_url = env.get("PAGERDUTY_EVENTS_URL", "").strip() or EVENTS_URL
        least = env.get("PAGERDUTY_MIN_SEVERITY", "").strip().lower() or "warning"
        if least not in SEVERITIES:
            raise ConfigError(f"PAGERDUTY_MIN_SEVERITY must be one of {', '.join(SEVERITIES)}")
        route = _route(env, "pagerduty")

        def pagerduty(session: Any, state_dir: Path) -> Any:
            from spendsentry.sinks.pagerduty import PagerDutySink

            return PagerDutySink(
                session, keys, events_url=events_url, route=route, min_severity=least
            )

        out.append(SinkSetting("pagerduty", pagerduty, frozenset(keys.values())))
    am_url = env.get("ALERTMANAGER_URL", "").strip()
    if am_url:
        try:
            resend = float(env.get("ALERTMANAGER_RESEND_S", "").strip() or 60.0)
        except ValueError:
            raise ConfigError("ALERTMANAGER_RESEND_S must be a number of seconds") from None
        route = _route(env, "alertmanager")

        def alertmanager(session: Any, state_dir: Path) -> Any:
            from spendsentry.sinks.alertmanager import AlertmanagerSink

            return AlertmanagerSink(session, am_url, state_dir, route=route, resend_s=resend)

        out.append(SinkSetting("alertmanager", alertmanager))
    return out


def notifiers(config: NotifierConfig, settings: list[SinkSetting]) -> list[AlertNotifier]:
    """One notifier per sink, each in its own consumer group (``<group>-<sink>``)."""
    out = []
    for setting in settings:
        own = replace(config, group_id=f"{config.group_id}-{setting.name}")

        def factory(
            session: Any, build: Any = setting.build, state_dir: Path = own.state_dir
        ) -> Any:
            return build(session, state_dir)

        sink: SinkFactory = factory
        out.append(AlertNotifier(own, sink, name=setting.name, secrets=setting.secrets))
    return out
