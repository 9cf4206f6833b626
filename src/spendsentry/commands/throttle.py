"""``spendsentry throttle``: see and lift throttle commands on ``ai.throttle``.

``list`` reads the topic from the beginning and shows the latest command per
scope, its time left and whether its signature verifies with the configured
keys. ``release SCOPE`` publishes a signed ``release`` (version = latest + 1)
and tells the worker on ``ai.control``, so its next command is newer still; it
needs the signing key (``SPENDSENTRY_THROTTLE_KEY``, ``SPENDSENTRY_THROTTLE_KEYS``
or ``SPENDSENTRY_THROTTLE_KEY_FILE``).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
import time
from typing import Any

import orjson

from spendsentry import kafka_security


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``throttle`` sub-commands to ``parser``."""
    sub = parser.add_subparsers(dest="throttle_command", metavar="ACTION")
    for name, help_text in (
        ("list", "show the latest command per scope"),
        ("release", "lift the throttle on a scope (signed)"),
    ):
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument(
            "--broker",
            metavar="HOST:PORT",
            default=os.environ.get("SPENDSENTRY_BROKER"),
            help="Kafka bootstrap (default: $SPENDSENTRY_BROKER)",
        )
        cmd.add_argument(
            "--topics", metavar="FILE", help="topics TOML (default: streams/topics.toml if present)"
        )
        cmd.add_argument("--timeout", type=float, default=20.0, metavar="SECONDS")
        if name == "list":
            cmd.add_argument("--json", action="store_true", help="one JSON object per scope")
            cmd.add_argument("--all", action="store_true", help="also expired and released")
        else:
            cmd.add_argument("scope", metavar="SCOPE", help="scope key, e.g. support_chat")
            cmd.add_argument("--reason", default="", help="why (goes into the command)")
            cmd.add_argument("--user", default=None, help="who (default: the login name)")


def run(args: argparse.Namespace) -> int:
    from spendsentry.errors import SpendSentryError

    if not getattr(args, "throttle_command", None):
        print("spendsentry throttle: say list or release SCOPE", file=sys.stderr)
        return 2
    if not args.broker:
        print("spendsentry throttle: no broker (--broker or SPENDSENTRY_BROKER)", file=sys.stderr)
        return 2
    try:
        if args.throttle_command == "list":
            return asyncio.run(_list(args))
        return asyncio.run(_release(args))
    except (SpendSentryError, ValueError, TimeoutError, OSError) as exc:
        print(f"spendsentry throttle: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # aiokafka's errors (unreachable broker, ...)
        print(f"spendsentry throttle: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


def _names(args: argparse.Namespace) -> tuple[str, str]:
    from spendsentry.worker.topics import TopicsConfig

    topics = TopicsConfig.load(args.topics)
    return topics.throttle.name, topics.control.name


async def _list(args: argparse.Namespace) -> int:
    from spendsentry.actions import ThrottleKeys
    from spendsentry.client import read_latest
    from spendsentry.timeutil import parse_ts

    keys = ThrottleKeys.from_env()
    throttle, _ = _names(args)
    latest = await read_latest(
        args.broker, throttle, keys=keys if keys.accepted else None, timeout_s=args.timeout
    )
    now = time.time()
    shown = 0
    for scope_key, (doc, verified) in latest.items():
        try:
            left = parse_ts(doc["expires_at"]) - now
        except (KeyError, TypeError, ValueError):
            left = 0.0
        active = left > 0 and doc.get("action") != "release"
        if not active and not args.all:
            continue
        shown += 1
        status = {True: "verified", False: "BAD SIGNATURE", None: "not checked (no key)"}
        if args.json:
            row = {**doc, "seconds_left": max(0, round(left)), "verified": verified}
            print(orjson.dumps(row).decode())
            continue
        params = ",".join(f"{k}={v}" for k, v in sorted((doc.get("params") or {}).items()))
        print(
            f"{scope_key}\tv{doc.get('version')}\t{doc.get('action')}"
            f"{' (' + params + ')' if params else ''}"
            f"{' DRY RUN' if doc.get('dry_run') else ''}\t"
            f"{_left(left)}\t{status[verified]}\t{(doc.get('reason') or {}).get('summary', '')}"
        )
    if not shown and not args.json:
        print("no active throttle commands", file=sys.stderr)
    return 0


def _left(seconds: float) -> str:
    if seconds <= 0:
        return "expired"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s left"


async def _release(args: argparse.Namespace) -> int:
    from aiokafka import AIOKafkaProducer

    from spendsentry.actions import Scope, ThrottleCommand, ThrottleKeys
    from spendsentry.actions.commands import CommandReason
    from spendsentry.client import read_latest
    from spendsentry.timeutil import format_ts, parse_ts

    keys = ThrottleKeys.from_env()
    if not keys.can_sign:
        print(
            "spendsentry throttle release: no signing key; set SPENDSENTRY_THROTTLE_KEY "
            "(or SPENDSENTRY_THROTTLE_KEYS / SPENDSENTRY_THROTTLE_KEY_FILE)",
            file=sys.stderr,
        )
        return 2
    scope = Scope.parse(args.scope)
    throttle, control = _names(args)
    latest = await read_latest(args.broker, throttle, keys=keys, timeout_s=args.timeout)
    held = latest.get(scope.key)
    now = time.time()
    if held is None:
        print(f"spendsentry throttle release: no command for {scope.key}", file=sys.stderr)
        return 1
    doc, _ = held
    if doc.get("action") == "release" or parse_ts(doc["expires_at"]) <= now:
        print(f"{scope.key}: nothing to release (latest is {doc.get('action')}, or expired)")
        return 0
    user = args.user or _login()
    summary = f"released by {user}" + (f": {args.reason}" if args.reason else "")
    reason = doc.get("reason") or {}
    command = ThrottleCommand.build(
        scope,
        "release",
        {},
        version=int(doc["version"]) + 1,
        issued_at=now,
        expires_at=now + 3600.0,
        reason=CommandReason(reason.get("alert_id"), reason.get("kind"), summary[:300]),
        dry_run=bool(doc.get("dry_run")),
    )
    message: dict[str, Any] = {
        "action": "release",
        "alert_id": reason.get("alert_id"),
        "use_case": scope.use_case,
        "kind": reason.get("kind"),
        "scope_key": scope.key,
        "until": None,
        "user": user[:200],
        "at": format_ts(now),
        "version": command.version,
    }
    producer = AIOKafkaProducer(
        bootstrap_servers=args.broker,
        acks="all",
        enable_idempotence=False,
        **kafka_security.client_kwargs(),
    )
    await asyncio.wait_for(producer.start(), args.timeout)
    try:
        await producer.send_and_wait(
            throttle, orjson.dumps(command.to_dict(keys)), key=scope.key.encode()
        )
        await producer.send_and_wait(control, orjson.dumps(message), key=scope.use_case.encode())
    finally:
        await producer.stop()
    print(f"{scope.key}: released (version {command.version}, {command.command_id})")
    return 0


def _login() -> str:
    try:
        return getpass.getuser() or "cli"
    except (KeyError, OSError):
        return "cli"
