"""The generic webhook sink: the alert's JSON, signed (HMAC-SHA256 over timestamp + body).

One POST per alert state change, body = the alert exactly as it is on
``ai.alerts`` (``schemas/alert.json``), headers: the signature
(:mod:`spendsentry.sinks.signature`) and ``X-Spendsentry-Dedupe-Key`` (also
sent as ``Idempotency-Key``), the key the notifier dedupes by, so a receiver
can drop the rare redelivery after a crash. A 2xx is delivered; 400 and 422
(the receiver cannot read it) are given up and logged; anything else is
retried with back-off.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from spendsentry.messages.alert import dedupe_key_of
from spendsentry.sinks.base import pick_target, post, routed
from spendsentry.sinks.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from spendsentry.slack.state import Thread

__all__ = ["WebhookSink"]


class WebhookSink:
    """POST each state change to a URL (the owner may name another: ``webhook:<name>``).

    ``urls`` maps target names to URLs; ``""`` is the default one.
    """

    name = "webhook"

    def __init__(
        self,
        session: Any,
        urls: Mapping[str, str],
        secret: str,
        *,
        route: str = "all",
        clock: Any = time.time,
    ) -> None:
        self.session = session
        self.urls = dict(urls)
        self.secret = secret
        self.route = route
        self.clock = clock

    def accepts(self, alert: Mapping[str, Any]) -> bool:
        return routed(alert, self.name, self.route)

    def url_for(self, alert: Mapping[str, Any]) -> str | None:
        """The owner's named webhook when it names a known one, else the default."""
        return pick_target(alert, self.name, self.urls)

    async def deliver(self, alert: Mapping[str, Any], thread: Thread | None) -> Thread | None:
        from spendsentry.sinks.base import DeliveryError

        url = self.url_for(alert)
        if url is None:
            raise DeliveryError(
                f"no webhook URL for owner {str(alert.get('owner'))[:80]!r}", retry=False
            )
        body = orjson.dumps(alert)
        stamp = int(self.clock())
        key = dedupe_key_of(alert)
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(stamp),
            SIGNATURE_HEADER: sign(self.secret, stamp, body),
            "X-Spendsentry-Dedupe-Key": key,
            "Idempotency-Key": key,
            "User-Agent": "spendsentry-webhook",
        }
        await post(self.session, url, body, headers, what="webhook")
        return None

    async def tick(self, now: float) -> None:
        return None
