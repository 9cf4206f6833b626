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
==========================================  =========  ==============================

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

from spendsentry.errors import ConfigError

__all__ = ["FAIL_ENV", "RETRY_ENV", "STALE_ENV", "guard_settings"]

FAIL_ENV = "SPENDSENTRY_GUARD_FAIL"
STALE_ENV = "SPENDSENTRY_GUARD_STALE_AFTER_S"
RETRY_ENV = "SPENDSENTRY_GUARD_UNAVAILABLE_RETRY_S"


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
    return {
        "fail_open": fail == "open",
        "stale_after_s": _seconds(env, STALE_ENV, 30.0),
        "retry_after_unavailable_s": _seconds(env, RETRY_ENV, 5.0),
    }


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
