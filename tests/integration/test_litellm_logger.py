"""The LiteLLM CustomLogger with real LiteLLM (offline) and the embedded broker.

``litellm.acompletion(..., mock_response=...)`` makes no network call but runs
the callbacks, so the whole path runs for real: the SDK pre-call hook asks the
ThrottleGuard, the success callback maps LiteLLM's StandardLoggingPayload and
the UsageReporter publishes it; the events are read back from Kafka and decoded
by the same Decoder the worker uses.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

# LiteLLM fetches its price map from the internet at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
litellm = pytest.importorskip("litellm", reason="litellm is in the dev extra")

from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402

from spendsentry.actions import ThrottleKeys  # noqa: E402
from spendsentry.actions.commands import CommandReason, Scope, ThrottleCommand  # noqa: E402
from spendsentry.broker import EmbeddedBroker, TopicSpec, ensure_topics  # noqa: E402
from spendsentry.client import ThrottleGuard, UsageReporter  # noqa: E402
from spendsentry.ingest import Decoder, SourcePosition  # noqa: E402
from spendsentry.integrations.litellm import (  # noqa: E402
    PromptOverCap,
    SpendSentryLogger,
    UseCaseThrottled,
)

pytestmark = pytest.mark.integration

KEYS = ThrottleKeys.of("k-test")
MESSAGES = [{"role": "user", "content": "Where is my order 1234?"}]


def command(use_case: str, action: str, params: dict[str, Any] | None = None) -> bytes:
    now = time.time()
    cmd = ThrottleCommand.build(
        Scope(use_case),
        action,
        params or {},
        version=1,
        issued_at=now - 1,
        expires_at=now + 600,
        reason=CommandReason("ab" * 8, "cost_spike", "cost x4"),
        dry_run=False,
    )
    return orjson.dumps(cmd.to_dict(KEYS))


async def read_events(bootstrap: str, topic: str, expected: int) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        decoder = Decoder()
        events: list[Any] = []
        deadline = time.monotonic() + 20
        while len(events) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                for r in records:
                    decoded = decoder.decode(r.value or b"", SourcePosition(topic, offset=r.offset))
                    assert decoded.rejected == []
                    events += decoded.events
        return events
    finally:
        await consumer.stop()


@pytest.fixture
def restore_callbacks() -> Any:
    """Each test's loggers only: LiteLLM copies ``litellm.callbacks`` into its own
    callback lists on first use and skips a logger whose class is already there,
    so a previous test's logger (another guard) would get this test's events."""
    names = (
        "callbacks",
        "input_callback",
        "success_callback",
        "failure_callback",
        "_async_success_callback",
        "_async_failure_callback",
    )
    saved = {name: list(getattr(litellm, name)) for name in names}
    for name in names:
        setattr(litellm, name, [])
    yield
    for name, value in saved.items():
        setattr(litellm, name, value)


@pytest.mark.timeout(90)
def test_sdk_calls_are_reported_refused_and_rerouted(
    broker: EmbeddedBroker, unique_name: Callable[[str], str], restore_callbacks: Any
) -> None:
    topic = unique_name("usage")

    async def scenario() -> tuple[list[Any], SpendSentryLogger, dict[str, Any]]:
        await ensure_topics(broker.bootstrap, [TopicSpec(topic, 1)])
        reporter = UsageReporter(broker.bootstrap, topic=topic, linger_s=0.05)
        # Not started: the guard decides from the commands applied here (no I/O).
        guard = ThrottleGuard("127.0.0.1:1", KEYS)
        assert guard.apply(command("claims_triage", "block")) == "applied"
        assert (
            guard.apply(command("sales_email", "route_model", {"target_model": "gpt-4o-mini"}))
            == "applied"
        )
        logger = SpendSentryLogger(reporter, guard)
        await reporter.start()
        litellm.callbacks = [logger]
        seen: dict[str, Any] = {}
        try:
            ok = await litellm.acompletion(
                model="gpt-4o-mini",
                messages=MESSAGES,
                mock_response="It ships tomorrow.",
                metadata={"spendsentry.use_case": "support_chat", "session_id": "s-1"},
            )
            seen["ok"] = ok
            with pytest.raises(UseCaseThrottled) as refused:
                await litellm.acompletion(
                    model="gpt-4o",
                    messages=MESSAGES,
                    mock_response="never",
                    metadata={"tags": ["claims_triage"]},
                )
            seen["refused"] = refused.value
            routed = await litellm.acompletion(
                model="gpt-4o",
                messages=MESSAGES,
                mock_response="Dear customer",
                metadata={"spendsentry.use_case": "sales_email"},
            )
            seen["routed"] = routed
            # No use case anywhere: reported under the default, not dropped.
            await litellm.acompletion(model="gpt-4o-mini", messages=MESSAGES, mock_response="ok")
            # Success callbacks run after the call returns: wait until all are queued.
            deadline = time.monotonic() + 10
            while logger.counts.get("reported", 0) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            await reporter.stop()
        return await read_events(broker.bootstrap, topic, 3), logger, seen

    events, logger, seen = asyncio.run(scenario())
    refused: UseCaseThrottled = seen["refused"]
    assert refused.status_code == 429
    assert refused.retry_after_s == pytest.approx(600, abs=5)
    # The wait as a header too (the proxy copies an exception's headers), in whole seconds.
    assert refused.headers is not None
    assert int(refused.headers["retry-after"]) == pytest.approx(600, abs=5)
    assert refused.use_case == "claims_triage"
    assert seen["routed"].model.endswith("gpt-4o-mini")

    by_use_case = {e.use_case: e for e in events}
    # The refused call cost nothing; the call without a use case went to the default.
    assert set(by_use_case) == {"support_chat", "sales_email", "unattributed"}
    assert by_use_case["unattributed"].extra == {"source": "litellm_callback"}
    assert (by_use_case["unattributed"].cost_usd or 0) > 0
    support = by_use_case["support_chat"]
    assert support.event_id == seen["ok"].id
    assert (support.kind, support.provider, support.model) == ("llm_call", "openai", "gpt-4o-mini")
    assert support.input_tokens > 0 and support.output_tokens > 0
    assert support.cost_usd is not None and support.cost_usd > 0
    assert support.session_id == "s-1" and support.status == "ok"
    assert support.source_format == "native"  # the reporter publishes contract-shaped events
    sales = by_use_case["sales_email"]
    assert (sales.requested_model, sales.model) == ("gpt-4o", "gpt-4o-mini")
    assert logger.counts == {
        "reported": 3,
        "refused_deny": 1,
        "routed": 1,
        "default_use_case": 1,
    }


@pytest.mark.timeout(60)
def test_proxy_pre_call_hook_refuses_and_reroutes() -> None:
    from litellm.proxy._types import UserAPIKeyAuth

    guard = ThrottleGuard("127.0.0.1:1", KEYS)
    guard.apply(command("cx", "cap_input_tokens", {"max_input_tokens": 50}))
    guard.apply(command("search_rag", "route_model", {"target_model": "gpt-4o-mini"}))
    logger = SpendSentryLogger(None, guard)

    async def hook(team: str, data: dict[str, Any]) -> Any:
        key = UserAPIKeyAuth(team_alias=team)
        return await logger.async_pre_call_hook(key, None, data, "acompletion")

    long_prompt = [{"role": "user", "content": "word " * 200}]
    with pytest.raises(PromptOverCap) as capped:
        asyncio.run(hook("cx", {"model": "gpt-4o", "messages": long_prompt}))
    # A 4xx that clients do not retry: waiting does not shrink the prompt.
    assert capped.value.decision.action == "cap" and capped.value.status_code == 400
    assert not isinstance(capped.value, litellm.RateLimitError)
    assert capped.value.max_input_tokens == 50 and "retrying does not help" in str(capped.value)
    # A short prompt fits under the cap.
    short = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    assert asyncio.run(hook("cx", short))["model"] == "gpt-4o"
    # The use case comes from the team alias unless metadata names one.
    data = {"model": "gpt-4o", "messages": long_prompt, "metadata": {"tags": ["search_rag"]}}
    changed = asyncio.run(hook("cx", data))
    assert changed["model"] == "gpt-4o-mini"
    assert changed["metadata"]["spendsentry_requested_model"] == "gpt-4o"
    # Decided once: the SDK hook inside the proxy's router call does not decide again.
    assert asyncio.run(logger.async_pre_call_deployment_hook(changed, None)) is None
    assert logger.counts == {"refused_cap": 1, "routed": 1}


@pytest.mark.timeout(60)
def test_the_proxy_environment_sets_fail_closed_and_its_retry_after() -> None:
    from litellm.proxy._types import UserAPIKeyAuth

    from spendsentry.broker import free_port
    from spendsentry.errors import ConfigError

    env = {
        "SPENDSENTRY_BROKER": f"127.0.0.1:{free_port()}",  # nothing listens: unavailable
        "SPENDSENTRY_THROTTLE_KEY": "k-test",
        "SPENDSENTRY_GUARD_FAIL": "closed",
        "SPENDSENTRY_GUARD_UNAVAILABLE_RETRY_S": "7",
    }
    logger = SpendSentryLogger.from_env(env)
    try:
        assert logger.guard is not None and logger.guard.fail_open is False
        data = {"model": "gpt-4o", "messages": MESSAGES, "metadata": {"tags": ["cx"]}}
        with pytest.raises(UseCaseThrottled) as refused:
            asyncio.run(logger.async_pre_call_hook(UserAPIKeyAuth(), None, data, "acompletion"))
        assert refused.value.headers == {"retry-after": "7"}
        assert "fail closed" in str(refused.value)
    finally:
        assert logger.reporter is not None and logger.guard is not None
        logger.reporter.close()
        logger.guard.close()
    with pytest.raises(ConfigError, match="SPENDSENTRY_GUARD_STALE_AFTER_S"):
        SpendSentryLogger.from_env({**env, "SPENDSENTRY_GUARD_STALE_AFTER_S": "-1"})
