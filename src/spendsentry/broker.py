"""Old home of the embedded broker and topic creation, re-exported from :mod:`spendsentry.kafka`.

``from spendsentry.broker import EmbeddedBroker, ensure_topics, TopicSpec, free_port``
keeps working for tests, docs and users; new code imports :mod:`spendsentry.kafka`.
"""

from __future__ import annotations

from spendsentry.kafka.admin import TopicSpec, ensure_topics, ensure_topics_sync
from spendsentry.kafka.embedded import HOST, EmbeddedBroker, free_port
from spendsentry.kafka.errors import BrokerError

__all__ = [
    "HOST",
    "BrokerError",
    "EmbeddedBroker",
    "TopicSpec",
    "ensure_topics",
    "ensure_topics_sync",
    "free_port",
]
