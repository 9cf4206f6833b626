"""Publish one operator throttle command and its ``ai.control`` note together."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from spendsentry.kafka import security as kafka_security


async def publish_command(
    broker: str,
    timeout: float,
    *,
    throttle_topic: str,
    control_topic: str,
    scope_key: str,
    use_case: str,
    command: dict[str, Any],
    control: dict[str, Any],
) -> None:
    """Send a signed ``command`` (keyed by scope) and then its ``control`` record.

    The command goes first and both wait for ``acks="all"``: the control record
    tells the worker the command's version, and a worker that read it before the
    command existed could issue an older version that gateways then drop.
    """
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=broker,
        acks="all",
        enable_idempotence=False,
        **kafka_security.client_kwargs(),
    )
    await asyncio.wait_for(producer.start(), timeout)
    try:
        await producer.send_and_wait(throttle_topic, orjson.dumps(command), key=scope_key.encode())
        await producer.send_and_wait(control_topic, orjson.dumps(control), key=use_case.encode())
    finally:
        await producer.stop()
