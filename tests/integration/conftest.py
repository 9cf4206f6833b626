"""Fixtures of the integration tests (the broker and unique names are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _worker_harness import WorkerProcess


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """Workers a test starts; every one is stopped (by pid) afterwards."""
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        w.stop()
