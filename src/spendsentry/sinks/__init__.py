"""Alert sinks: where alert state changes go, and the one machinery that delivers them.

* :mod:`spendsentry.sinks.base`: the ``AlertSink`` protocol, ``DeliveryError``, routing by owner.
* :mod:`spendsentry.sinks.notifier`: ``ai.alerts`` -> one sink, at-least-once, deduplicated.
* :mod:`spendsentry.sinks.webhook` / :mod:`~spendsentry.sinks.signature`: signed JSON POSTs.
* :mod:`spendsentry.sinks.pagerduty`: PagerDuty Events API v2.
* :mod:`spendsentry.sinks.alertmanager`: Prometheus Alertmanager API v2.
* :mod:`spendsentry.sinks.settings`: which sinks the environment turns on.

Slack's sink is :mod:`spendsentry.slack.notifier`. See docs/integrations.md.
"""
