"""Shared pytest fixtures.

``broker`` is one embedded Tansu broker for the whole session: it starts in well
under a second, but topics and consumer groups are isolated by name instead of by
broker, so use ``unique_name`` for every topic and group id a test creates.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from spendsentry.broker import EmbeddedBroker


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """A started EmbeddedBroker on a free loopback port, stopped after the session."""
    with EmbeddedBroker() as started:
        yield started


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Return a factory of unique names: ``unique_name("usage")`` -> ``"usage-1f3a..."``.

    Unique names keep tests independent on the shared broker, and matter for
    group ids in particular: see the consumer-group notes in test_broker.py.
    """

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    return make
