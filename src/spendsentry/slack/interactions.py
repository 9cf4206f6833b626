"""Slack button clicks -> control actions on ``ai.control``.

Slack posts each click to the app's interactivity URL (``POST
/slack/interactions``, form-encoded ``payload=<JSON>``), signed with the app's
signing secret. This handler:

1. answers 413 to a body over :data:`MAX_BODY_BYTES` (before reading it all);
2. answers 401 unless ``X-Slack-Signature`` is the HMAC of the exact body
   bytes with a ``X-Slack-Request-Timestamp`` within 5 minutes (Slack's v0
   scheme, as slack-sdk's ``SignatureVerifier`` checks it, but over bytes: a
   body that is not UTF-8 is answered 401 like any other forgery, never 500):
   a forged or replayed-late request changes nothing;
3. parses the ``block_actions`` payload and the button's value (alert_id,
   use_case, kind, scope_key, see :func:`spendsentry.slack.blocks.button_value`),
   answering 400 with the reason when it is malformed (a correctly signed body
   that is not form-encoded UTF-8 included: the sender holds the secret, so
   the answer says what is wrong rather than "unauthorized");
4. publishes one control message, keyed by use case, through the injected
   ``publish(key, value)`` coroutine, and answers 200 once the broker has it
   (503 when it could not: Slack then shows the click failed, and it can be
   clicked again).

A request seen before (same timestamp and signature, i.e. a replay inside the
5-minute window) is answered 200 and not published again. Copies that arrive
while the first is still being published (Slack's retries, or an attacker's
concurrent copies) wait for it and get its answer: of any number of copies
exactly one control message is published, and a copy never answers 200 for a
publish that failed (the failed request is forgotten, so a retry can succeed).

The control message (``schemas/control-action.json``)::

    {"action": "ack" | "release" | "snooze" | "expected_change" | "false_alarm",
     "alert_id": str, "use_case": str, "kind": str, "scope_key": str | null,
     "until": RFC 3339 | null, "user": str, "at": RFC 3339}

``until`` is set for snooze only: one hour after the click.

>>> control_message("snooze", {"alert_id": "ab12", "use_case": "u", "kind": "cost_spike",
...                            "scope_key": None}, "U123", now=1793610000.0)["until"]
'2026-11-02T10:00:00.000Z'
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

import orjson
from aiohttp import web

from spendsentry.alerts import ALERT_KINDS
from spendsentry.messages.control import ControlAction
from spendsentry.messages.scope import Scope
from spendsentry.slack.blocks import ACTION_IDS

__all__ = [
    "MAX_BODY_BYTES",
    "PATH",
    "InteractionHandler",
    "InvalidInteraction",
    "Publish",
    "control_message",
    "kafka_publisher",
    "parse_interaction",
    "register",
    "register_from_env",
    "sign",
]

log = logging.getLogger(__name__)

PATH = "/slack/interactions"
#: Slack's block_actions payloads carry the clicked message: a few KB for ours.
MAX_BODY_BYTES = 128 * 1024
SNOOZE_S = 3600.0
#: Slack's own bound on the request timestamp (what SignatureVerifier checks).
_MAX_SKEW_S = 300.0
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")

#: ``publish(key, value)``: put one control message on ``ai.control``.
Publish = Callable[[bytes, bytes], Awaitable[None]]


class InvalidInteraction(ValueError):
    """A verified request whose payload is not a usable button click."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Slack's v0 signature of ``body`` (what a test, or Slack, sends).

    >>> from slack_sdk.signature import SignatureVerifier
    >>> body = b"payload=%7B%7D"
    >>> sig = SignatureVerifier("s3cret").generate_signature(timestamp="1793610000", body=body)
    >>> sign("s3cret", "1793610000", body) == sig
    True
    """
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def parse_interaction(body: bytes) -> tuple[str, dict[str, Any], str] | None:
    """``(action, button value, user)`` of a click on one of our buttons.

    Returns None for interactions that are not ours (other payload types, other
    buttons of the same app): they are answered 200 and ignored.

    Raises
    ------
    InvalidInteraction
        With the reason, when the payload is malformed.

    >>> import json, urllib.parse
    >>> value = json.dumps({"alert_id": "ab", "use_case": "u", "kind": "cost_spike",
    ...                     "scope_key": None})
    >>> payload = {"type": "block_actions", "user": {"id": "U1", "name": "amy"},
    ...            "actions": [{"action_id": "spendsentry_ack", "value": value}]}
    >>> parse_interaction(urllib.parse.urlencode({"payload": json.dumps(payload)}).encode())[0]
    'ack'
    """
    payload = _payload(body)
    if payload.get("type") != "block_actions":
        return None
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        raise InvalidInteraction("block_actions without actions")
    action = ACTION_IDS.get(str(actions[0].get("action_id")))
    if action is None:
        return None
    value = _button_value(actions[0].get("value", ""))
    return action, value, _user(payload)


def _payload(body: bytes) -> dict[str, Any]:
    """The JSON object in the form field ``payload`` (how Slack posts interactions)."""
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise InvalidInteraction("body is not form-encoded UTF-8") from None
    raw = form.get("payload")
    if not raw or len(raw) != 1:
        raise InvalidInteraction("no single 'payload' field")
    try:
        payload = orjson.loads(raw[0])
    except orjson.JSONDecodeError:
        raise InvalidInteraction("payload is not JSON") from None
    if not isinstance(payload, dict):
        raise InvalidInteraction("payload is not a JSON object")
    return payload


def _button_value(raw: object) -> dict[str, Any]:
    """The checked value of one of our buttons: which alert, and the scope to act on."""
    try:
        value = orjson.loads(str(raw))
    except orjson.JSONDecodeError:
        raise InvalidInteraction("button value is not JSON") from None
    if not isinstance(value, dict):
        raise InvalidInteraction("button value is not a JSON object")
    for name, limit in (("alert_id", 64), ("use_case", 200)):
        field = value.get(name)
        if not isinstance(field, str) or not 0 < len(field) <= limit:
            raise InvalidInteraction(f"button value: {name} missing or not a string")
    if value.get("kind") not in ALERT_KINDS:
        raise InvalidInteraction(
            f"button value: kind {value.get('kind')!r:.40} is not an alert kind"
        )
    scope_key = value.get("scope_key")
    if scope_key is not None:
        if not isinstance(scope_key, str) or not 0 < len(scope_key) <= 2000:
            raise InvalidInteraction("button value: scope_key is not a string or null")
        try:
            Scope.parse(scope_key)  # the engine would dead-letter it: say so now
        except ValueError:
            raise InvalidInteraction("button value: scope_key is not a scope key") from None
    return value


def _user(payload: dict[str, Any]) -> str:
    """Who clicked (Slack id, else user name), at most 200 characters."""
    user = payload.get("user")
    who = None
    if isinstance(user, dict):
        who = next(
            (user[k] for k in ("id", "username", "name") if isinstance(user.get(k), str)), None
        )
    if not who:
        raise InvalidInteraction("payload has no user")
    return str(who[:200])


def control_message(
    action: str, value: Mapping[str, Any], user: str, *, now: float
) -> dict[str, Any]:
    """The ``ai.control`` message for one click (see the module docstring)."""
    return ControlAction(
        action=action,
        alert_id=value["alert_id"],
        use_case=value["use_case"],
        kind=value["kind"],
        scope_key=value.get("scope_key"),
        until=now + SNOOZE_S if action == "snooze" else None,
        user=user,
        at=now,
    ).to_dict()


class InteractionHandler:
    """The aiohttp handler of ``POST /slack/interactions``.

    Parameters
    ----------
    signing_secret : str
        The Slack app's signing secret (``SLACK_SIGNING_SECRET``). Never logged.
    publish : Publish
        Puts one control message on ``ai.control``.
    clock : callable, optional
        Epoch seconds (tests move it to make a signature stale).
    publish_timeout_s : float
        Slack wants an answer within 3 s.
    """

    def __init__(
        self,
        signing_secret: str,
        publish: Publish,
        *,
        clock: Callable[[], float] = time.time,
        max_body_bytes: int = MAX_BODY_BYTES,
        publish_timeout_s: float = 2.5,
    ) -> None:
        if not signing_secret or not signing_secret.strip():
            raise ValueError("the Slack signing secret is empty")
        self._secret = signing_secret
        self.publish = publish
        self.clock = clock
        self.max_body_bytes = max_body_bytes
        self.publish_timeout_s = publish_timeout_s
        #: (timestamp, signature) of requests published, for replay detection.
        self._seen: dict[tuple[str, str], float] = {}
        #: The same key of requests being published now -> their answer, once known.
        self._in_flight: dict[tuple[str, str], asyncio.Future[tuple[int, str]]] = {}
        self.published = 0
        self.rejected = 0

    def verify(self, body: bytes, headers: Mapping[str, str]) -> bool:
        """Whether ``body`` carries a valid, fresh Slack signature.

        The HMAC is taken over the raw bytes, never a decoded text: slack-sdk's
        ``SignatureVerifier`` decodes the body as UTF-8 first, so bytes that
        are not UTF-8 raised out of it (a 500 with a traceback) instead of
        being answered 401.
        """
        lowered = {k.lower(): v for k, v in headers.items()}
        timestamp = lowered.get("x-slack-request-timestamp", "")
        signature = lowered.get("x-slack-signature", "")
        if not _TIMESTAMP.fullmatch(timestamp) or not _SIGNATURE.fullmatch(signature):
            return False
        if abs(self.clock() - int(timestamp)) > _MAX_SKEW_S:
            return False
        return hmac.compare_digest(sign(self._secret, timestamp, body), signature)

    async def __call__(self, request: web.Request) -> web.Response:
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            return self._reject(413, f"body of {length} bytes is over {self.max_body_bytes}")
        body = bytearray()
        async for chunk in request.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > self.max_body_bytes:
                return self._reject(413, f"body is over {self.max_body_bytes} bytes")
        return await self.handle(bytes(body), request.headers)

    async def handle(self, body: bytes, headers: Mapping[str, str]) -> web.Response:
        """Verify, parse, publish; the HTTP answer."""
        if not self.verify(body, headers):
            return self._reject(401, "missing, wrong or stale Slack signature")
        now = self.clock()
        lowered = {k.lower(): v for k, v in headers.items()}
        replay = (lowered["x-slack-request-timestamp"], lowered["x-slack-signature"])
        self._forget_before(now - 2 * _MAX_SKEW_S)
        if replay in self._seen:
            log.info("ignoring a repeated Slack interaction request")
            return web.Response(status=200)
        in_flight = self._in_flight.get(replay)
        if in_flight is not None:
            # A copy of a request still being published: answer what the first
            # gets, so a copy never says 200 for a click whose publish failed.
            log.info("a repeated Slack interaction request waits for the first")
            status, text = await asyncio.shield(in_flight)
            return web.Response(status=status, text=text)
        # Claimed before the first await below: the event loop runs no other
        # request between the checks above and this line, so of concurrent
        # copies exactly one gets here.
        outcome: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self._in_flight[replay] = outcome
        # What waiting copies get if this request is cancelled mid-publish (its
        # client went away): the click may not be recorded, so they may retry.
        response = web.Response(status=503, text="could not record the action; try again")
        try:
            response, published = await self._publish_click(body, now)
            if published:
                self._seen[replay] = now
        finally:
            del self._in_flight[replay]
            outcome.set_result((response.status, response.text or ""))
        return response

    async def _publish_click(self, body: bytes, now: float) -> tuple[web.Response, bool]:
        """Parse and publish a verified request: the answer, and whether it was published."""
        try:
            parsed = parse_interaction(body)
        except InvalidInteraction as exc:
            return self._reject(400, str(exc)), False
        if parsed is None:
            return web.Response(status=200), False  # someone else's button or a non-click
        action, value, user = parsed
        message = control_message(action, value, user, now=now)
        try:
            await asyncio.wait_for(
                self.publish(str(value["use_case"]).encode(), orjson.dumps(message)),
                self.publish_timeout_s,
            )
        except Exception as exc:
            log.error("could not publish the Slack %s of %s: %s", action, value["alert_id"], exc)
            return web.Response(status=503, text="could not record the action; try again"), False
        self.published += 1
        log.info("Slack %s of %s (%s) by %s", action, value["alert_id"], value["use_case"], user)
        return web.Response(status=200), True

    def _reject(self, status: int, reason: str) -> web.Response:
        self.rejected += 1
        log.warning("rejected a Slack interaction request: %d %s", status, reason)
        return web.Response(status=status, text=reason)

    def _forget_before(self, horizon: float) -> None:
        if self._seen and (len(self._seen) > 10_000 or min(self._seen.values()) < horizon):
            self._seen = {k: t for k, t in self._seen.items() if t >= horizon}


def register(
    web_app: web.Application,
    publish: Publish,
    signing_secret: str,
    *,
    path: str = PATH,
    **kwargs: Any,
) -> InteractionHandler:
    """Add ``POST path`` to ``web_app`` (before it starts); return the handler."""
    handler = InteractionHandler(signing_secret, publish, **kwargs)
    web_app.router.add_post(path, handler.__call__)  # a coroutine function, as aiohttp wants
    return handler


def kafka_publisher(producer: Callable[[], Any], topic: str) -> Publish:
    """A :data:`Publish` that sends to ``topic`` with the producer ``producer()`` returns.

    ``producer`` is called per message, so the route can be registered before the
    worker has started its producer.
    """

    async def publish(key: bytes, value: bytes) -> None:
        current = producer()
        if current is None:
            raise RuntimeError("the Kafka producer is not running")
        await current.send_and_wait(topic, value=value, key=key)

    return publish


def register_from_env(
    web_app: Any,
    producer: Callable[[], Any],
    topic: str,
    env: Mapping[str, str] | None = None,
) -> InteractionHandler | None:
    """Add the route when ``SLACK_SIGNING_SECRET`` is set; None (no route) otherwise.

    Without the secret no request could be verified, so the endpoint does not exist.
    ``web_app`` is an aiohttp ``Application``, or Faust's aiohttp web driver
    (``app.web``, whose ``web_app`` it is).
    """
    web_app = getattr(web_app, "web_app", web_app)
    env = os.environ if env is None else env
    secret = env.get("SLACK_SIGNING_SECRET", "").strip()
    if not secret:
        return None
    log.info("Slack interactions on POST %s -> %s", PATH, topic)
    return register(web_app, kafka_publisher(producer, topic), secret)
