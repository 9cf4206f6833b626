"""``spendsentry throttle``: see and lift throttle commands on ``ai.throttle``.

``list`` reads the topic from the beginning and shows the latest verified
command per scope and its time left; records that do not verify with the
configured keys are counted and ignored (a forged record cannot hide or
replace a real command). ``release SCOPE`` publishes a signed ``release``
(version = latest verified + 1) and tells the worker on ``ai.control``, so its
next command is newer still. Both need a key (``SPENDSENTRY_THROTTLE_KEY``,
``SPENDSENTRY_THROTTLE_KEYS`` or ``SPENDSENTRY_THROTTLE_KEY_FILE``); ``release``
needs the signing one. ``test SCOPE --action ...`` publishes a signed,
short-lived command marked as a test (:mod:`spendsentry.commands.throttle_trial`).

SCOPE is a scope key (``support_chat/model=gpt-4o``, reserved characters in
names escaped) or a use case's name as it is (``team/a=b``); when it could be
both and both hold a command, ``--use-case`` or the escaped key says which.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import sys
import time
from typing import Any

import orjson

from spendsentry.commands import throttle_trial


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``throttle`` sub-commands to ``parser``."""
    sub = parser.add_subparsers(dest="throttle_command", metavar="ACTION")
    # A missing action is a usage error (exit 2), as for ``policy``.
    sub.required = True
    for name, help_text in (
        ("list", "show the latest command per scope"),
        ("release", "lift the throttle on a scope (signed)"),
        ("test", "publish a short-lived test command on a scope (signed)"),
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
        cmd.add_argument(
            "--timeout",
            type=float,
            default=20.0,
            metavar="SECONDS",
            help="give up on an unreachable broker after this long",
        )
        if name == "test":
            throttle_trial.add_arguments(cmd)
        elif name == "list":
            cmd.add_argument(
                "scope", metavar="SCOPE", nargs="?", help="only this scope key or use case"
            )
            cmd.add_argument("--json", action="store_true", help="one JSON object per scope")
            cmd.add_argument("--all", action="store_true", help="also expired and released")
        else:
            cmd.add_argument(
                "scope", metavar="SCOPE", help="scope key or use case name, e.g. support_chat"
            )
            cmd.add_argument(
                "--use-case", action="store_true", help="SCOPE is a use case name, not a key"
            )
            cmd.add_argument("--reason", default="", help="why (goes into the command)")
            cmd.add_argument("--user", default=None, help="who (default: the login name)")


def run(args: argparse.Namespace) -> int:
    from spendsentry.errors import SpendSentryError

    if not args.broker:
        print("spendsentry throttle: no broker (--broker or SPENDSENTRY_BROKER)", file=sys.stderr)
        return 2
    try:
        if args.throttle_command == "list":
            return asyncio.run(_list(args))
        if args.throttle_command == "test":
            return asyncio.run(throttle_trial.publish_test(args, *_names(args)))
        return asyncio.run(_release(args))
    except (SpendSentryError, ValueError) as exc:  # a bad key, scope or topics file
        print(f"spendsentry throttle: {exc}", file=sys.stderr)
        return 2
    except (TimeoutError, OSError) as exc:
        # Exit codes: 1 is a runtime failure (the broker), 2 a usage or configuration error.
        print(f"spendsentry throttle: {exc or 'timed out'} (is --broker right?)", file=sys.stderr)
        return 1
    except Exception as exc:  # aiokafka's errors (unreachable broker, ...)
        print(f"spendsentry throttle: {exc} (is --broker right?)", file=sys.stderr)
        return 1


def _names(args: argparse.Namespace) -> tuple[str, str]:
    from spendsentry.worker.topics import TopicsConfig

    topics = TopicsConfig.load(args.topics)
    return topics.throttle.name, topics.control.name


def _keys_or_none(command: str) -> Any:
    from spendsentry.actions import ThrottleKeys

    keys = ThrottleKeys.from_env()
    if not keys.accepted:
        print(
            f"spendsentry throttle {command}: no key to verify commands with; set "
            "SPENDSENTRY_THROTTLE_KEYS (or SPENDSENTRY_THROTTLE_KEY or "
            "SPENDSENTRY_THROTTLE_KEY_FILE)",
            file=sys.stderr,
        )
        return None
    return keys


def _candidates(text: str, *, use_case_only: bool = False) -> list[Any]:
    """The scopes ``text`` may name: the scope key it parses as, and the use case so named."""
    from spendsentry.actions import Scope

    found = [Scope(text)]
    if not use_case_only:
        with contextlib.suppress(ValueError):  # not a key: only a use case name
            found.insert(0, Scope.parse(text))
    return list({scope.key: scope for scope in found}.values())


def _report_rejected(found: Any, topic: str, command: str) -> None:
    if found.rejected:
        print(
            f"spendsentry throttle {command}: {topic}: not verified commands, "
            f"{found.describe_rejected()}",
            file=sys.stderr,
        )


async def _list(args: argparse.Namespace) -> int:
    from spendsentry.client import read_commands
    from spendsentry.timeutil import parse_ts

    keys = _keys_or_none("list")
    if keys is None:
        return 2
    throttle, _ = _names(args)
    found = await read_commands(args.broker, throttle, keys=keys, timeout_s=args.timeout)
    _report_rejected(found, throttle, "list")
    wanted = None if args.scope is None else {s.key for s in _candidates(args.scope)}
    now = time.time()
    shown = 0
    for scope_key, doc in found.latest.items():
        if wanted is not None and scope_key not in wanted:
            continue
        left = parse_ts(doc["expires_at"]) - now
        active = left > 0 and doc["action"] != "release"
        if not active and not args.all:
            continue
        shown += 1
        if args.json:
            row = {**doc, "seconds_left": max(0, round(left)), "verified": True}
            print(orjson.dumps(row).decode())
            continue
        params = ",".join(f"{k}={v}" for k, v in sorted(doc["params"].items()))
        print(
            f"{scope_key}\tv{doc['version']}\t{doc['action']}"
            f"{' (' + params + ')' if params else ''}"
            f"{' DRY RUN' if doc['dry_run'] else ''}"
            f"{' TEST' if doc.get('test') else ''}\t"
            f"{_left(left)}\tverified\t{doc['reason']['summary']}"
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
    from spendsentry.actions import ThrottleCommand, ThrottleKeys
    from spendsentry.actions.commands import MAX_VERSION, CommandReason
    from spendsentry.client import read_commands
    from spendsentry.commands.throttle_publish import publish_command
    from spendsentry.messages.control import ControlAction
    from spendsentry.timeutil import parse_ts

    keys = ThrottleKeys.from_env()
    if not keys.can_sign:
        print(
            "spendsentry throttle release: no signing key; set SPENDSENTRY_THROTTLE_KEY "
            "(or SPENDSENTRY_THROTTLE_KEYS / SPENDSENTRY_THROTTLE_KEY_FILE)",
            file=sys.stderr,
        )
        return 2
    candidates = _candidates(args.scope, use_case_only=args.use_case)
    throttle, control = _names(args)
    found = await read_commands(args.broker, throttle, keys=keys, timeout_s=args.timeout)
    _report_rejected(found, throttle, "release")
    now = time.time()
    held = [(s, found.latest[s.key]) for s in candidates if s.key in found.latest]
    live = [
        (s, doc)
        for s, doc in held
        if doc["action"] != "release" and parse_ts(doc["expires_at"]) > now
    ]
    if len(live) > 1:
        keys_held = " and ".join(s.key for s, _ in live)
        print(
            f"spendsentry throttle release: {args.scope!r} names two throttled scopes "
            f"({keys_held}); give the escaped scope key, or --use-case for the use case",
            file=sys.stderr,
        )
        return 2
    if not held:
        print(f"spendsentry throttle release: no command for {candidates[0].key}", file=sys.stderr)
        return 1
    if not live:
        scope, doc = held[0]
        print(f"{scope.key}: nothing to release (latest is {doc['action']}, or expired)")
        return 0
    scope, doc = live[0]
    if doc["version"] >= MAX_VERSION:
        print(
            f"spendsentry throttle release: {scope.key} is at version {doc['version']}, the "
            "largest allowed: no newer command can be written",
            file=sys.stderr,
        )
        return 2
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
    message = ControlAction(
        action="release",
        alert_id=reason.get("alert_id"),
        use_case=scope.use_case,
        kind=reason.get("kind"),
        scope_key=scope.key,
        until=None,
        user=user[:200],
        at=now,
        version=command.version,
    ).to_dict()
    await publish_command(
        args.broker,
        args.timeout,
        throttle_topic=throttle,
        control_topic=control,
        scope_key=scope.key,
        use_case=scope.use_case,
        command=command.to_dict(keys),
        control=message,
    )
    print(f"{scope.key}: released (version {command.version}, {command.command_id})")
    return 0


def _login() -> str:
    try:
        return getpass.getuser() or "cli"
    except (KeyError, OSError):
        return "cli"
