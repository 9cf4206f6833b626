"""The default use case: where spend without one goes, so no adapter drops it.

An OTLP span or a LiteLLM call that names no use case anywhere is still money
spent. Every adapter (OTLP on ``ai.usage`` and on ``/v1/traces``, LiteLLM
payloads, the LiteLLM callback) gives it the default use case, read from
``SPENDSENTRY_DEFAULT_USE_CASE`` (``unattributed`` when unset), and the worker
counts such events per source in ``spendsentry_unattributed_events_total``.
An adapter that republishes an event it gave the default (the callback, the
HTTP receiver) names itself in the event's ``source`` field, so the count
knows where it came from.

>>> default_use_case({}), default_use_case({"SPENDSENTRY_DEFAULT_USE_CASE": " shared "})
('unattributed', 'shared')
"""

from __future__ import annotations

import os
from collections.abc import Mapping

DEFAULT_USE_CASE_ENV = "SPENDSENTRY_DEFAULT_USE_CASE"
UNATTRIBUTED = "unattributed"
#: The event field an adapter outside the worker names itself in (defaulted events only).
SOURCE_FIELD = "source"


def default_use_case(environ: Mapping[str, str] | None = None) -> str:
    """``SPENDSENTRY_DEFAULT_USE_CASE``, or ``unattributed`` when unset or blank."""
    env = os.environ if environ is None else environ
    return env.get(DEFAULT_USE_CASE_ENV, "").strip() or UNATTRIBUTED
