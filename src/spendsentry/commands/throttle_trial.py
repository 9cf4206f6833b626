"""``spendsentry throttle test``: publish a signed, short-lived test command on a scope.

A gateway developer sees a throttle end to end without waiting for an
incident: the command is signed, versioned (latest verified on the scope + 1)
and checked against ``schemas/throttle-command.json`` like any other, carries
``"test": true``, and expires after ``--duration`` seconds (60 by default, at
most :data:`MAX_TEST_S`). The worker is told the version on ``ai.control``
(a ``release`` marked ``test``, which moves only the version on) so its next
command on the scope is newer still and no gateway drops it as a replay.

A scope that a real command (not a test) holds in force is refused: the test
would replace it at the gateways, and the throttle would end when the test
expires.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

#: The longest a test command may last: it is a test, not a way around the worker.
MAX_TEST_S = 3600.0
#: The actions a test may carry (a release is ``spendsentry throttle release``).
TEST_ACTIONS = ("block", "limit_rate", "route_model", "cap_input_tokens")


def add_arguments(cmd: argparse.ArgumentParser) -> None:
    """The options of ``throttle test`` (beside --broker, --topics, --timeout)."""
    cmd.add_argument("scope", metavar="SCOPE", help="scope key or use case name, e.g. support_chat")
    cmd.add_argument("--use-case", action="store_true", help="SCOPE is a use case name, not a key")
    cmd.add_argument("--action", choices=TEST_ACTIONS, default="block", help="default: block")
    cmd.add_argument(
        "--duration",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help=f"how long the command lasts (default 60, at most {MAX_TEST_S:.0f})",
    )
    cmd.add_argument("--requests-per-minute", type=int, help="limit_rate: calls per minute")
    cmd.add_argument("--tokens-per-minute", type=int, help="limit_rate: tokens per minute")
    cmd.add_argument("--target-model", help="route_model: the model to serve calls with")
    cmd.add_argument("--max-input-tokens", type=int, help="cap_input_tokens: largest prompt")
    cmd.add_argument("--dry-run", action="store_true", help="a dry-run command (log only)")
    cmd.add_argument("--reason", default="", help="why (goes into the command)")
    cmd.add_argument("--user", default=None, help="who (default: the login name)")


def trial_params(args: argparse.Namespace) -> dict[str, Any]:
    """The command's ``params`` from the options given (the schema says which are needed).

    >>> ns = argparse.Namespace(requests_per_minute=5, tokens_per_minute=None,
    ...     target_model=None, max_input_tokens=None)
    >>> trial_params(ns)
    {'requests_per_minute': 5}
    """
    names = ("requests_per_minute", "tokens_per_minute", "target_model", "max_input_tokens")
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def trial_scope(text: str, *, use_case: bool) -> Any:
    """The scope SCOPE names: the key it parses as, else (or with ``--use-case``) the use case.

    >>> trial_scope("support_chat/model=gpt-4o", use_case=False).model
    'gpt-4o'
    >>> trial_scope("support_chat/model=gpt-4o", use_case=True).use_case
    'support_chat/model=gpt-4o'
    """
    from spendsentry.actions import Scope

    if not use_case:
        try:
            return Scope.parse(text)
        except ValueError:
            pass  # not a key: a use case name
    return Scope(text)


async def publish_test(args: argparse.Namespace, throttle: str, control: str) -> int:
    """Build, check, sign and publish the test command; tell the worker its version."""
    from spendsentry.actions import ThrottleCommand, ThrottleKeys
    from spendsentry.actions.commands import MAX_VERSION, CommandReason
    from spendsentry.client import read_commands
    from spendsentry.commands.throttle import _login, _report_rejected
    from spendsentry.commands.throttle_publish import publish_command
    from spendsentry.contracts import validate
    from spendsentry.messages.control import ControlAction
    from spendsentry.timeutil import parse_ts

    keys = ThrottleKeys.from_env()
    if not keys.can_sign:
        print(
            "spendsentry throttle test: no signing key; set SPENDSENTRY_THROTTLE_KEY "
            "(or SPENDSENTRY_THROTTLE_KEYS / SPENDSENTRY_THROTTLE_KEY_FILE)",
            file=sys.stderr,
        )
        return 2
    if not 0 < args.duration <= MAX_TEST_S:
        print(
            f"spendsentry throttle test: --duration must be in (0, {MAX_TEST_S:.0f}] seconds",
            file=sys.stderr,
        )
        return 2
    scope = trial_scope(args.scope, use_case=args.use_case)
    found = await read_commands(args.broker, throttle, keys=keys, timeout_s=args.timeout)
    _report_rejected(found, throttle, "test")
    now = time.time()
    held = found.latest.get(scope.key)
    if (
        held is not None
        and not held.get("test")
        and held["action"] != "release"
        and parse_ts(held["expires_at"]) > now
    ):
        print(
            f"spendsentry throttle test: {scope.key} holds a real {held['action']} command "
            f"(v{held['version']}); a test would replace it. Release it first or test "
            "another scope",
            file=sys.stderr,
        )
        return 2
    version = (int(held["version"]) if held is not None else 0) + 1
    if version > MAX_VERSION:
        print(f"spendsentry throttle test: {scope.key} has no version left", file=sys.stderr)
        return 2
    user = args.user or _login()
    summary = f"test by {user}" + (f": {args.reason}" if args.reason else "")
    command = ThrottleCommand.build(
        scope,
        args.action,
        trial_params(args),
        version=version,
        issued_at=now,
        expires_at=now + args.duration,
        reason=CommandReason(None, None, summary[:300]),
        dry_run=args.dry_run,
        test=True,
    )
    doc = command.to_dict(keys)
    problems = validate("throttle-command", doc)
    if problems:
        print(f"spendsentry throttle test: {problems[0]}", file=sys.stderr)
        return 2
    # The worker records the version (and nothing else): its next command on
    # the scope is newer than the test, so gateways do not drop it as a replay.
    message = ControlAction(
        action="release",
        alert_id=None,
        use_case=scope.use_case,
        kind=None,
        scope_key=scope.key,
        until=None,
        user=user[:200],
        at=now,
        version=version,
        test=True,
    ).to_dict()
    await publish_command(
        args.broker,
        args.timeout,
        throttle_topic=throttle,
        control_topic=control,
        scope_key=scope.key,
        use_case=scope.use_case,
        command=doc,
        control=message,
    )
    print(
        f"{scope.key}: test {args.action} for {args.duration:g}s "
        f"(version {version}, {command.command_id})"
    )
    return 0
