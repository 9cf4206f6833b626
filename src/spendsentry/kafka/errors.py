"""BrokerError: the one error the Kafka helpers raise (broker process and topic admin)."""

from __future__ import annotations

from spendsentry.errors import SpendSentryError

__all__ = ["BrokerError"]


class BrokerError(SpendSentryError):
    """The embedded broker could not be found, started, or used, or topics not created."""
