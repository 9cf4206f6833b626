"""Kafka plumbing shared by the worker, the gateway client and the CLI.

* :mod:`~spendsentry.kafka.security`: :class:`KafkaSecurity`, the TLS/SASL
  settings read from the environment once and passed to whoever makes clients.
* :mod:`~spendsentry.kafka.admin`: :class:`TopicSpec` and :func:`ensure_topics`
  (create topics before anything touches them), :func:`topic_partitions`.
* :mod:`~spendsentry.kafka.compacted`: :func:`read_to_end` and
  :class:`CompactedFollower`, reading a compacted topic from its beginning.
* :mod:`~spendsentry.kafka.embedded`: :class:`EmbeddedBroker`, the Tansu broker
  process for development, tests, the demo and single-host deployments.

Importing this package imports no Kafka client library (each function imports
aiokafka when it runs), so the CLI's ``--help`` stays fast.
"""

from __future__ import annotations

from spendsentry.kafka.admin import TopicSpec, ensure_topics, ensure_topics_sync, topic_partitions
from spendsentry.kafka.compacted import CompactedFollower, read_to_end
from spendsentry.kafka.embedded import EmbeddedBroker, free_port, parent_death_preexec
from spendsentry.kafka.errors import BrokerError
from spendsentry.kafka.security import KafkaSecurity

__all__ = [
    "BrokerError",
    "CompactedFollower",
    "EmbeddedBroker",
    "KafkaSecurity",
    "TopicSpec",
    "ensure_topics",
    "ensure_topics_sync",
    "free_port",
    "parent_death_preexec",
    "read_to_end",
    "topic_partitions",
]
