"""The default topic names, by logical name (a topics file may rename them).

>>> DEFAULT_TOPICS["throttle"], THROTTLE_TOPIC
('ai.throttle', 'ai.throttle')
"""

from __future__ import annotations

from types import MappingProxyType

__all__ = [
    "ALERTS_TOPIC",
    "CONTROL_TOPIC",
    "DEADLETTER_TOPIC",
    "DEFAULT_TOPICS",
    "OUTCOMES_TOPIC",
    "STATE_TOPIC",
    "THROTTLE_TOPIC",
    "USAGE_TOPIC",
]

#: Usage events, from the gateways (``UsageReporter``) to the worker.
USAGE_TOPIC = "ai.usage"
#: Outcome events (a ticket resolved, a claim triaged), to the worker.
OUTCOMES_TOPIC = "ai.outcomes"
#: Alerts, from the worker to the notifier and other sinks.
ALERTS_TOPIC = "ai.alerts"
#: Signed throttle commands, from the worker to the gateways (``ThrottleGuard``).
THROTTLE_TOPIC = "ai.throttle"
#: Rejected records with the reason.
DEADLETTER_TOPIC = "ai.deadletter"
#: Operator actions (ack, release, snooze), from Slack and the CLI to the worker.
CONTROL_TOPIC = "ai.control"
#: The worker's per-partition engine snapshots.
STATE_TOPIC = "ai.state"

#: Logical name -> default topic name (the logical names of ``[topics.<logical>]``).
DEFAULT_TOPICS = MappingProxyType(
    {
        "usage": USAGE_TOPIC,
        "outcomes": OUTCOMES_TOPIC,
        "alerts": ALERTS_TOPIC,
        "throttle": THROTTLE_TOPIC,
        "deadletter": DEADLETTER_TOPIC,
        "control": CONTROL_TOPIC,
        "state": STATE_TOPIC,
    }
)
