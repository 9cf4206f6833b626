"""The gateway side of spendsentry: obey throttle commands, report usage.

* :class:`ThrottleGuard` reads ``ai.throttle``, verifies each command's
  signature and answers "may this call go ahead, and how?".
* :class:`UsageReporter` publishes usage events to ``ai.usage`` in batches,
  without ever blocking or failing the caller.
* :class:`TokenBucket`, the rate limiter behind ``limit_rate``.
* :class:`ConcurrencyLimit` and :class:`Slot`: calls in flight at once, per use
  case and session, enforced by the guard (``acquire``/``release``/``slot``).

See docs/throttling.md.
"""

from __future__ import annotations

from spendsentry.actions.signing import ThrottleKeys
from spendsentry.actions.throttle_topic import ThrottleTopic, read_commands, read_latest
from spendsentry.client.buckets import TokenBucket
from spendsentry.client.guard import ConcurrencyLimited, Decision, ThrottleGuard
from spendsentry.client.reporter import UsageReporter
from spendsentry.client.slots import Slot
from spendsentry.concurrency import ConcurrencyLimit

__all__ = [
    "ConcurrencyLimit",
    "ConcurrencyLimited",
    "Decision",
    "Slot",
    "ThrottleGuard",
    "ThrottleKeys",
    "ThrottleTopic",
    "TokenBucket",
    "UsageReporter",
    "read_commands",
    "read_latest",
]
