"""The guard's settings from environment variables, for gateways set up by environment.

A LiteLLM proxy (or any process that builds its :class:`ThrottleGuard` with
``SpendSentryLogger.from_env``) has no code to pass arguments from, so the
choices an operator makes are read here:

==========================================  =========  ==============================
variable                                    default    meaning
==========================================  =========  ==============================
``SPENDSENTRY_GUARD_FAIL``                  ``open``   ``open``: allow every call while
                                                       commands cannot be read;
                                                       ``closed``: deny them (429)
``SPENDSENTRY_GUARD_STALE_AFTER_S``         ``30``     seconds without contact with the
                                                       broker after which commands count
                                                       as unreadable
``SPENDSENTRY_GUARD_UNAVAILABLE_RETRY_S``   ``5``      ``Retry-After`` of fail-closed
                                                       denials, seconds
``SPENDSENTRY_GUARD_CONCURRENCY``           (none)     ``use_case=N,...``: calls of each
                                                       use case in flight at once, across
                                                       all replicas (``max_in_flight``)
``SPENDSENTRY_GUARD_CONCURRENCY_PER_SESSION``  (none)  ``use_case=M,...``: the same per
                                                       session (``max_in_flight_per_session``)
``SPENDSENTRY_GUARD_REPLICAS``              ``1``      gateway replicas sharing each limit
``SPENDSENTRY_GUARD_REPLICA_INDEX``         (none)     this replica's index (0-based, e.g.
                                                       a StatefulSet ordinal); unset: each
                                                       replica takes ``limit // replicas``
==========================================  =========  ==============================

The concurrency keys are returned only when set (docs/throttling.md, "Concurrency
limits").

>>> guard_settings({"SPENDSENTRY_GUARD_FAIL": "closed"})
{'fail_open': False, 'stale_after_s': 30.0, 'retry_after_unavailable_s': 5.0}
>>> guard_settings({"SPENDSENTRY_GUARD_FAIL": "sometimes"})
Traceback (most recent call last):
    ...
spendsentry.errors.ConfigError: SPENDSENTRY_GUARD_FAIL='sometimes': use open or closed
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from spendsentry.concurrency import ConcurrencyLimit, replica_share
from spendsentry.errors import ConfigError

__all__ = [
    "CONCURRENCY_ENV",
    "FAIL_ENV",
    "REPLICAS_ENV",
    "REPLICA_INDEX_ENV",
    "RETRY_ENV",
    "SESSION_CONCURRENCY_ENV",
    "STALE_ENV",
    "guard_settings",
]

FAIL_ENV = "SPENDSENTRY_GUARD_FAIL"
STALE_ENV = "SPENDSENTRY_GUARD_STALE_AFTER_S"
RETRY_ENV = "SPENDSENTRY_GUARD_UNAVAILABLE_RETRY_S"
CONCURRENCY_ENV = "SPENDSENTRY_GUARD_CONCURRENCY"
SESSION_CONCURRENCY_ENV = "SPENDSENTRY_GUARD_CONCURRENCY_PER_SESSION"
REPLICAS_ENV = "SPENDSENTRY_GUARD_REPLICAS"
REPLICA_INDEX_ENV = "SPENDSENTRY_GUARD_REPLICA_INDEX"


def guard_settings(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments of :class:`~spendsentry.client.ThrottleGuard` from ``environ``
    (``os.environ`` when None).

    Raises
    ------
    ConfigError
        A value that is not one of the choices or not a positive number (the
        message names the variable).
    """
    env = os.environ if environ is None else environ
    fail = env.get(FAIL_ENV, "open").strip().lower() or "open"
    if fail not in ("open", "closed"):
        raise ConfigError(f"{FAIL_ENV}={env.get(FAIL_ENV)!r}: use open or closed")
    settings: dict[str, Any] = {
        "fail_open": fail == "open",
        "stale_after_s": _seconds(env, STALE_ENV, 30.0),
        "retry_after_unavailable_s": _seconds(env, RETRY_ENV, 5.0),
    }
    settings.update(_concurrency(env))
    return settings


def _concurrency(env: Mapping[str, str]) -> dict[str, Any]:
    """The concurrency keyword arguments, only those set."""
    out: dict[str, Any] = {}
    whole = _per_use_case(env, CONCURRENCY_ENV)
    per_session = _per_use_case(env, SESSION_CONCURRENCY_ENV)
    if whole or per_session:
        out["concurrency"] = {
            use_case: ConcurrencyLimit(whole.get(use_case), per_session.get(use_case))
            for use_case in {**whole, **per_session}
        }
    replicas = _count(env, REPLICAS_ENV, minimum=1)
    index = _count(env, REPLICA_INDEX_ENV, minimum=0)
    if replicas is not None:
        out["replicas"] = replicas
    if index is not None:
        out["replica_index"] = index
        try:
            replica_share(1, replicas or 1, index)
        except ValueError as exc:
            raise ConfigError(f"{REPLICA_INDEX_ENV}={index}: {exc} ({REPLICAS_ENV})") from None
    return out


def _per_use_case(env: Mapping[str, str], name: str) -> dict[str, int]:
    """``use_case=N,use_case=N`` (N a whole number >= 1)."""
    out: dict[str, int] = {}
    for item in env.get(name, "").split(","):
        if not item.strip():
            continue
        use_case, _, raw = item.partition("=")
        use_case = use_case.strip()
        if not use_case or not raw.strip().isdigit() or int(raw) < 1:
            raise ConfigError(f"{name}: {item.strip()!r} is not use_case=N with N >= 1")
        out[use_case] = int(raw)
    return out


def _count(env: Mapping[str, str], name: str, *, minimum: int) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < minimum:
        raise ConfigError(f"{name}={raw!r}: a whole number >= {minimum}")
    return int(raw)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}={raw!r}: a number of seconds above 0")
    return value
