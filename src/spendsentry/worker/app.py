"""The worker's Faust app: lifecycle and the web server (``/``, ``/metrics``, ``/status``,
``POST /v1/traces``).

Faust's own Kafka consumer, producer, tables and agents are switched off (see
:mod:`spendsentry.worker.service` for why the hot path is an aiokafka consumer);
the app serves the web views and runs the :class:`IngestService`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import faust
from faust.app.base import BootStrategy
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from spendsentry.engine import Engine
from spendsentry.slack.interactions import register_from_env as register_slack_interactions
from spendsentry.worker.metrics import WorkerMetrics
from spendsentry.worker.otlp_http import register_from_env as register_otlp_http
from spendsentry.worker.service import STATUS_USE_CASES, IngestService, WorkerConfig
from spendsentry.worker.status_page import render as render_status_page

log = logging.getLogger(__name__)


class _WebOnly(BootStrategy):
    # Faust starts no Kafka client of its own: the IngestService owns them.
    enable_kafka = False


class WorkerApp(faust.App):
    """A Faust app that boots only sensors and the web server."""

    BootStrategy = _WebOnly


def build_app(
    config: WorkerConfig,
    service: IngestService,
    registry: CollectorRegistry,
    *,
    web_port: int = 6066,
    web_host: str = "127.0.0.1",
) -> WorkerApp:
    """Create the Faust app with the ``/metrics`` and ``/status`` pages."""
    # Faust creates its data directory with a non-recursive mkdir.
    config.state_dir.mkdir(parents=True, exist_ok=True)
    app = WorkerApp(
        config.group_id,
        broker=f"kafka://{config.bootstrap}",
        web_enabled=True,
        web_port=web_port,
        web_bind=web_host,
        web_host=web_host,
        datadir=str(config.state_dir / "faust"),
        autodiscover=False,
    )

    @app.page("/metrics")
    async def metrics(self: Any, request: Any) -> Any:
        # As a header: aiohttp refuses a content_type argument with a charset.
        return self.bytes(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/status")
    async def status(self: Any, request: Any) -> Any:
        # ?use_cases_limit=N&use_cases_offset=M pages through the use cases by cost.
        query = request.query
        try:
            limit = int(query.get("use_cases_limit", STATUS_USE_CASES))
            offset = max(0, int(query.get("use_cases_offset", 0)))
        except ValueError:
            return self.json(
                {"error": "use_cases_limit and use_cases_offset are integers"}, status=400
            )
        return self.json(service.status(use_cases_limit=limit, use_cases_offset=offset))

    @app.page("/")
    async def page(self: Any, request: Any) -> Any:
        return self.html(render_status_page(service.page_snapshot()))

    # POST /slack/interactions (Slack buttons -> ai.control), only with SLACK_SIGNING_SECRET.
    register_slack_interactions(app.web, lambda: service.producer, config.topics.control.name)
    # POST /v1/traces (OTLP/HTTP -> ai.usage); a bearer token off loopback.
    register_otlp_http(
        app.web,
        lambda: service.producer,
        config.topics.usage.name,
        web_host,
        metrics=service.metrics,
    )
    return app


async def run_worker(
    config: WorkerConfig,
    engine: Engine,
    stop: asyncio.Event,
    *,
    web_port: int = 6066,
    web_host: str = "127.0.0.1",
    registry: CollectorRegistry | None = None,
    shutdown_timeout_s: float = 20.0,
    on_started: Any = None,
) -> int:
    """Run the worker until ``stop`` is set or the consume loop fails.

    Returns
    -------
    int
        0 after a clean stop, 1 when the consume loop failed.
    """
    registry = registry if registry is not None else CollectorRegistry()
    metrics = WorkerMetrics.create(registry, use_case_limit=config.use_case_label_limit)
    service = IngestService(config, engine, metrics)
    app = build_app(config, service, registry, web_port=web_port, web_host=web_host)
    await app.start()
    code = 0
    try:
        await service.start()
        if on_started is not None:
            on_started(service)
        assert service.failed is not None
        failed: asyncio.Future[Any] = service.failed
        stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if failed.done():
            code = 1
    finally:
        # Bounded: a Faust worker has been seen hanging in shutdown for minutes.
        try:
            await asyncio.wait_for(service.stop(), shutdown_timeout_s)
        except TimeoutError:
            log.error("the ingest service did not stop within %.0fs", shutdown_timeout_s)
            code = code or 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(app.stop(), 5.0)
    return code
