"""A LiteLLM ``CustomLogger``: report every call, obey throttles before each call.

Install with ``pip install spendsentry[litellm]``. In the LiteLLM proxy's
``config.yaml``::

    litellm_settings:
      callbacks: spendsentry.integrations.litellm.proxy_handler_instance

(``proxy_handler_instance`` is built on first use from ``SPENDSENTRY_BROKER`` and
the ``SPENDSENTRY_THROTTLE_KEY*`` variables). With the SDK::

    logger = SpendSentryLogger(UsageReporter(bootstrap), ThrottleGuard(bootstrap, keys))
    await logger.start()
    litellm.callbacks = [logger]

After each call (success or failure) LiteLLM's ``StandardLoggingPayload`` is
mapped by :func:`spendsentry.ingest.litellm.map_payload` and handed to
:class:`~spendsentry.client.UsageReporter` (buffered, never blocks the call).

Before each call :class:`~spendsentry.client.ThrottleGuard` decides it: on the
proxy in ``async_pre_call_hook``, in the SDK in ``async_pre_call_deployment_hook``
(LiteLLM runs it inside ``acompletion`` before the provider request). "deny"
raises :class:`UseCaseThrottled` (a ``litellm.RateLimitError``: HTTP 429 on the
proxy, with ``retry_after_s`` and a ``Retry-After`` header); a prompt over a cap
raises :class:`PromptOverCap` (a ``litellm.BadRequestError``: HTTP 400, which
clients do not retry); "route" replaces the model. A use case with a
concurrency limit in the guard also takes an in-flight slot (a full one raises
:class:`UseCaseThrottled`), kept under the call's ``litellm_call_id`` and given
back by the success or failure log event of that call (a lost one is
reclaimed by the guard after ``slot_max_hold_s``). The call's
use case comes from the same places as the payload's (metadata key, first tag,
team alias: :class:`~spendsentry.ingest.litellm.LiteLLMMapping`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import litellm
from litellm.integrations.custom_logger import CustomLogger

from spendsentry.client import Decision, ThrottleGuard, ThrottleKeys, UsageReporter
from spendsentry.client.settings import guard_settings
from spendsentry.ingest.attribution import SOURCE_FIELD
from spendsentry.ingest.litellm import LiteLLMMapping, map_payload
from spendsentry.ingest.otlp import MappingError
from spendsentry.messages.topics import THROTTLE_TOPIC, USAGE_TOPIC

__all__ = ["PromptOverCap", "SpendSentryLogger", "UseCaseThrottled", "retry_after_header"]

log = logging.getLogger(__name__)

#: Set in the request metadata once a call was decided, so the proxy's
#: deployment hook does not take a second token from the rate buckets.
CHECKED_KEY = "spendsentry_checked"
#: The model the caller asked for, when a throttle re-routed the call.
REQUESTED_KEY = "spendsentry_requested_model"


class UseCaseThrottled(litellm.RateLimitError):
    """A call refused by a block, a rate limit or unavailable commands (fail closed):
    HTTP 429 on the proxy, with a ``Retry-After`` header (whole seconds, at least 1)."""

    def __init__(self, use_case: str, decision: Decision, model: str | None) -> None:
        self.use_case = use_case
        self.decision = decision
        self.retry_after_s = decision.retry_after_s
        wait = f"; retry after {decision.retry_after_s:.0f} s" if decision.retry_after_s else ""
        super().__init__(
            message=f"spendsentry: use case {use_case!r} is throttled ({decision.reason}){wait}",
            llm_provider="spendsentry",
            model=model or "",
        )
        # Set after the constructor, which takes ``headers`` only in newer
        # LiteLLM releases; the proxy copies an exception's ``headers`` into
        # its error response.
        self.headers = retry_after_header(decision.retry_after_s)


class PromptOverCap(litellm.BadRequestError):
    """A prompt over a ``cap_input_tokens`` command's cap: HTTP 400 on the proxy.

    Not a 429: waiting does not shrink the prompt, and clients (the OpenAI SDKs,
    LiteLLM's router) retry 429s but not a 400. Not LiteLLM's
    ``ContextWindowExceededError`` either, which its router may answer by
    falling back to a model with a larger context.
    """

    def __init__(self, use_case: str, decision: Decision, model: str | None) -> None:
        self.use_case = use_case
        self.decision = decision
        self.max_input_tokens = decision.max_input_tokens
        super().__init__(
            message=(
                f"spendsentry: use case {use_case!r}: {decision.reason} "
                f"(throttle on {decision.scope_key}); shorten the prompt, retrying does not help"
            ),
            model=model or "",
            llm_provider="spendsentry",
        )


def retry_after_header(seconds: float | None) -> dict[str, str] | None:
    """The ``Retry-After`` header for a wait of ``seconds`` (None without one).

    >>> retry_after_header(0.2), retry_after_header(599.4), retry_after_header(None)
    ({'retry-after': '1'}, {'retry-after': '600'}, None)
    """
    if seconds is None:
        return None
    return {"retry-after": str(max(1, math.ceil(seconds)))}


class SpendSentryLogger(CustomLogger):
    """Reports LiteLLM calls as usage events and applies throttle decisions.

    Parameters
    ----------
    reporter : UsageReporter, optional
        Where usage events go; without one nothing is reported.
    guard : ThrottleGuard, optional
        Decides calls; without one every call goes ahead.
    mapping : LiteLLMMapping, optional
        Where the use case comes from (default: the environment).
    default_use_case : str, optional
        For calls with no use case anywhere (default: the mapping's, from
        ``SPENDSENTRY_DEFAULT_USE_CASE``, ``unattributed`` when unset). Such
        calls are checked against that use case's throttles and reported
        under it, marked ``"source": "litellm_callback"`` so the worker counts
        them (``spendsentry_unattributed_events_total``) and
        ``counts["default_use_case"]``: no spend is dropped.
    """

    def __init__(
        self,
        reporter: UsageReporter | None = None,
        guard: ThrottleGuard | None = None,
        *,
        mapping: LiteLLMMapping | None = None,
        default_use_case: str | None = None,
    ) -> None:
        super().__init__()
        self.reporter = reporter
        self.guard = guard
        mapping = mapping or LiteLLMMapping.from_env()
        if default_use_case:
            mapping = dataclasses.replace(mapping, default_use_case=default_use_case)
        self.mapping = mapping
        self.default_use_case = mapping.default_use_case
        self.counts: dict[str, int] = {}
        # In-flight slots by litellm_call_id (a list: a client may reuse an id).
        self._slots: dict[str, list[Decision]] = {}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SpendSentryLogger:
        """Build from ``SPENDSENTRY_BROKER``, ``SPENDSENTRY_USAGE_TOPIC``,
        ``SPENDSENTRY_THROTTLE_TOPIC``, the throttle key variables and the
        guard's ``SPENDSENTRY_GUARD_*`` (:mod:`spendsentry.client.settings`),
        and start the reporter and guard in background threads.

        Raises
        ------
        ValueError
            ``SPENDSENTRY_BROKER`` is not set.
        ConfigError
            A ``SPENDSENTRY_GUARD_*`` value or the key file is invalid.
        """
        env = os.environ if environ is None else environ
        bootstrap = env.get("SPENDSENTRY_BROKER", "").strip()
        if not bootstrap:
            raise ValueError("SPENDSENTRY_BROKER is not set (host:port of the Kafka cluster)")
        reporter = UsageReporter(bootstrap, topic=env.get("SPENDSENTRY_USAGE_TOPIC", USAGE_TOPIC))
        guard = ThrottleGuard(
            bootstrap,
            ThrottleKeys.from_env(env),
            topic=env.get("SPENDSENTRY_THROTTLE_TOPIC", THROTTLE_TOPIC),
            **guard_settings(env),
        )
        reporter.start_background()
        guard.start_background()
        return cls(reporter, guard, mapping=LiteLLMMapping.from_env(env))

    async def start(self) -> None:
        """Start the reporter and guard in the running event loop."""
        if self.reporter is not None:
            await self.reporter.start()
        if self.guard is not None:
            await self.guard.start()

    async def stop(self) -> None:
        """Flush the reporter and stop both (bounded)."""
        if self.reporter is not None:
            await self.reporter.stop()
        if self.guard is not None:
            await self.guard.stop()

    def _count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    # -- before the call ------------------------------------------------------

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: Any
    ) -> dict[str, Any]:
        """Proxy: refuse (raise) or re-route (return the changed request)."""
        team = getattr(user_api_key_dict, "team_alias", None)
        return self._decide(data, team)

    async def async_pre_call_deployment_hook(
        self, kwargs: dict[str, Any], call_type: Any
    ) -> dict[str, Any] | None:
        """SDK: the same decision inside ``acompletion``, before the provider call."""
        metadata = _metadata(kwargs)
        if metadata.get(CHECKED_KEY):
            return None  # decided by the proxy hook already
        return self._decide(kwargs, None)

    def _decide(self, data: dict[str, Any], team: str | None) -> dict[str, Any]:
        guard = self.guard
        if guard is None:
            return data
        metadata = _metadata(data)
        use_case = self._request_use_case(data, metadata, team)
        model = data.get("model") if isinstance(data.get("model"), str) else None
        call_id = self._take_slot(guard, data, metadata, use_case, model)
        decision = guard.check(use_case, model=model, input_tokens=_input_tokens(data, model))
        if not decision.allowed:
            self._give_back(call_id)
            self._count(f"refused_{decision.action}")
            if decision.action == "cap":
                raise PromptOverCap(use_case, decision, model)
            raise UseCaseThrottled(use_case, decision, model)
        if decision.action == "route" and decision.model and decision.model != model:
            self._count("routed")
            data["model"] = decision.model
            metadata[REQUESTED_KEY] = model
        metadata[CHECKED_KEY] = True
        data.setdefault("metadata", metadata)
        return data

    def _take_slot(
        self,
        guard: ThrottleGuard,
        data: dict[str, Any],
        metadata: dict[str, Any],
        use_case: str,
        model: str | None,
    ) -> str | None:
        """A slot for a use case with a concurrency limit; the call id it is kept under.

        Raises :class:`UseCaseThrottled` when the use case (or session) is full.
        """
        if use_case not in guard.slots.limits:
            return None
        call_id = data.get("litellm_call_id")
        if not isinstance(call_id, str) or not call_id:
            self._count("slot_without_call_id")  # no way to give it back: take none
            return None
        session = metadata.get("session_id")
        decision = guard.acquire(
            use_case, session if isinstance(session, str) and session else None
        )
        if not decision.allowed:
            self._count("refused_concurrency")
            raise UseCaseThrottled(use_case, decision, model)
        self._slots.setdefault(call_id, []).append(decision)
        return call_id

    def _give_back(self, call_id: Any) -> None:
        """Release a slot taken for ``call_id``, if one is held."""
        if not isinstance(call_id, str) or self.guard is None:
            return
        held = self._slots.get(call_id)
        if not held:
            return
        decision = held.pop()
        if not held:
            self._slots.pop(call_id, None)
        self.guard.release(decision)

    def _request_use_case(
        self, data: dict[str, Any], metadata: dict[str, Any], team: str | None
    ) -> str:
        for source in self.mapping.use_case_from:
            found: Any = None
            if source == "metadata":
                found = metadata.get(self.mapping.use_case_key)
            elif source == "tag":
                tags = metadata.get("tags") or data.get("tags")
                if isinstance(tags, list) and tags:
                    found = tags[0]
            else:
                found = team or metadata.get("user_api_key_team_alias")
            if isinstance(found, str) and found:
                return found
        return self.default_use_case

    # -- after the call -------------------------------------------------------

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._report(kwargs)

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._report(kwargs)

    def log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._report(kwargs)

    def log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._report(kwargs)

    def _report(self, kwargs: dict[str, Any]) -> None:
        """Give back the call's slot, map and queue the call; never raises into
        LiteLLM's callback loop."""
        self._give_back(kwargs.get("litellm_call_id"))
        if self.reporter is None:
            return
        payload = kwargs.get("standard_logging_object")
        if not isinstance(payload, dict):
            self._count("no_payload")
            return
        if _refused_here(kwargs, payload):
            return  # refused before any provider call: nothing was spent
        params = kwargs.get("litellm_params")
        metadata = params.get("metadata") if isinstance(params, dict) else None
        if not isinstance(metadata, dict):
            metadata = {}
        try:
            event = map_payload(payload, self.mapping, request_metadata=metadata)
        except MappingError as exc:
            # The reason only: payloads carry prompts and key metadata.
            self._count(f"unmapped_{exc.reason.value}")
            log.debug("LiteLLM call not reported: %s", exc.message)
            return
        except Exception:  # a LiteLLM payload change must not break the caller
            self._count("unmapped_error")
            log.warning("LiteLLM payload could not be mapped", exc_info=True)
            return
        if event is None:
            self._count("skipped")
            return
        requested = metadata.get(REQUESTED_KEY)
        if isinstance(requested, str) and requested != event.get("model"):
            event["requested_model"] = requested
        if event["use_case"] == self.default_use_case:
            event[SOURCE_FIELD] = "litellm_callback"  # counted per source by the worker
            self._count("default_use_case")
        self.reporter.report(event)
        self._count("reported")


def _refused_here(kwargs: dict[str, Any], payload: dict[str, Any]) -> bool:
    """Whether the call failed because this logger refused it."""
    if isinstance(kwargs.get("exception"), UseCaseThrottled):
        return True
    info = payload.get("error_information")
    return isinstance(info, dict) and info.get("error_class") == UseCaseThrottled.__name__


def _metadata(data: dict[str, Any]) -> dict[str, Any]:
    """The request's metadata dict (LiteLLM uses ``litellm_metadata`` on some routes)."""
    for key in ("metadata", "litellm_metadata"):
        found = data.get(key)
        if isinstance(found, dict):
            return found
    return {}


def _input_tokens(data: dict[str, Any], model: str | None) -> int | None:
    """Prompt tokens of a chat request, for token caps and token rate limits."""
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    try:
        return int(litellm.token_counter(model=model or "", messages=messages))
    except Exception:
        # Unknown model or an offline tokenizer: about four characters a token.
        chars = sum(len(str(m.get("content", ""))) for m in messages if isinstance(m, dict))
        return math.ceil(chars / 4)


_instance: SpendSentryLogger | None = None


def __getattr__(name: str) -> Any:
    """``proxy_handler_instance``: the proxy config's callback, built on first use."""
    global _instance
    if name == "proxy_handler_instance":
        if _instance is None:
            _instance = SpendSentryLogger.from_env()
        return _instance
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
