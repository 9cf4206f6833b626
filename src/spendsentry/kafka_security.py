"""Old home of the Kafka TLS/SASL settings, re-exported from :mod:`spendsentry.kafka.security`."""

from __future__ import annotations

from spendsentry.kafka.security import (
    MECHANISMS,
    PREFIX,
    PROTOCOLS,
    KafkaSecurity,
    client_kwargs,
    resolve,
)

__all__ = ["MECHANISMS", "PREFIX", "PROTOCOLS", "KafkaSecurity", "client_kwargs", "resolve"]
