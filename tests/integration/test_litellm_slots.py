"""The LiteLLM logger takes a concurrency slot per call and gives it back when the
call ends (success or failure), through LiteLLM's real callback machinery.

``litellm.acompletion(..., mock_response=...)`` makes no network call; no broker
is needed (the guard is not started, the logger has no reporter).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest

# LiteLLM fetches its price map from the internet at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
litellm = pytest.importorskip("litellm", reason="litellm is in the dev extra")

from test_litellm_logger import restore_callbacks  # noqa: E402, F401

from spendsentry.actions import ThrottleKeys  # noqa: E402
from spendsentry.client import ConcurrencyLimit, ThrottleGuard  # noqa: E402
from spendsentry.integrations.litellm import SpendSentryLogger, UseCaseThrottled  # noqa: E402

KEYS = ThrottleKeys.of("k-test")
MESSAGES = [{"role": "user", "content": "Where is my order 1234?"}]
META = {"spendsentry.use_case": "support_chat", "session_id": "s-1"}


async def settled(guard: ThrottleGuard, in_flight: int) -> int:
    """Log events run after the call returns: wait for them (bounded)."""
    deadline = time.monotonic() + 10
    while guard.in_flight() != in_flight and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return guard.in_flight()


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("restore_callbacks")
def test_sdk_calls_hold_a_slot_until_they_end() -> None:
    guard = ThrottleGuard("127.0.0.1:1", KEYS, concurrency={"support_chat": ConcurrencyLimit(1)})
    logger = SpendSentryLogger(None, guard)
    litellm.callbacks = [logger]

    async def scenario() -> None:
        ok = await litellm.acompletion(
            model="gpt-4o-mini", messages=MESSAGES, mock_response="ok", metadata=dict(META)
        )
        assert ok.choices[0].message.content == "ok"
        assert await settled(guard, 0) == 0  # given back by the success event
        # A failing call gives its slot back too (the failure event).
        with pytest.raises(Exception, match="provider down"):
            await litellm.acompletion(
                model="gpt-4o-mini",
                messages=MESSAGES,
                mock_response=Exception("provider down"),
                metadata=dict(META),
            )
        assert await settled(guard, 0) == 0
        # While another call holds the only slot, the call is refused with a 429.
        held = guard.acquire("support_chat")
        assert held.slot is not None and held.slot.number == 3  # both calls took one
        with pytest.raises(UseCaseThrottled) as full:
            await litellm.acompletion(
                model="gpt-4o-mini", messages=MESSAGES, mock_response="never", metadata=dict(META)
            )
        assert full.value.decision.reason == "concurrency limit: 1 in flight"
        assert full.value.headers == {"retry-after": "1"}
        guard.release(held)
        # Other use cases are not limited.
        await litellm.acompletion(
            model="gpt-4o-mini",
            messages=MESSAGES,
            mock_response="ok",
            metadata={"spendsentry.use_case": "search"},
        )
        assert await settled(guard, 0) == 0

    asyncio.run(scenario())
    assert logger.counts.get("refused_concurrency") == 1
    assert logger._slots == {}


@pytest.mark.timeout(60)
def test_proxy_hook_takes_the_slot_the_log_event_gives_back() -> None:
    from litellm.proxy._types import UserAPIKeyAuth

    guard = ThrottleGuard("127.0.0.1:1", KEYS, concurrency={"support_chat": ConcurrencyLimit(2, 1)})
    logger = SpendSentryLogger(None, guard)

    def request(call_id: str, session: str) -> dict[str, Any]:
        return {
            "model": "gpt-4o",
            "messages": MESSAGES,
            "litellm_call_id": call_id,
            "metadata": {"spendsentry.use_case": "support_chat", "session_id": session},
        }

    async def scenario() -> None:
        key = UserAPIKeyAuth()
        await logger.async_pre_call_hook(key, None, request("c1", "s-1"), "acompletion")
        with pytest.raises(UseCaseThrottled, match="per session"):
            await logger.async_pre_call_hook(key, None, request("c2", "s-1"), "acompletion")
        # A client may reuse a call id (x-litellm-call-id): both slots are kept.
        await logger.async_pre_call_hook(key, None, request("c1", "s-2"), "acompletion")
        with pytest.raises(UseCaseThrottled, match="concurrency limit: 2 in flight"):
            await logger.async_pre_call_hook(key, None, request("c3", "s-3"), "acompletion")
        assert guard.in_flight("support_chat") == 2
        await logger.async_log_success_event({"litellm_call_id": "c1"}, None, None, None)
        await logger.async_log_failure_event({"litellm_call_id": "c1"}, None, None, None)
        await logger.async_log_failure_event({"litellm_call_id": "c1"}, None, None, None)
        assert guard.in_flight() == 0
        # Without a call id there is no way to give a slot back: none is taken.
        no_id = request("", "s-4")
        await logger.async_pre_call_hook(key, None, no_id, "acompletion")
        assert guard.in_flight() == 0 and logger.counts["slot_without_call_id"] == 1

    asyncio.run(scenario())
