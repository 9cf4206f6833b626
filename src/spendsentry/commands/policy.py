"""``spendsentry policy check DIR [DIR...]``: validate per-use-case policy files.

Meant for CI and pre-commit: exit status 0 and ``ok: N policies in M files``
when every file is valid, else 1 with one line per problem on stderr, each
naming the file and the key. Valid ladders that would do less than they say
(:mod:`spendsentry.policy_review`) add ``warning:`` lines and keep status 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spendsentry.policy import PolicyError, PolicySet
from spendsentry.policy_review import ladder_warnings, model_counts, routing_warnings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``check`` action and its arguments to the ``policy`` sub-command."""
    actions = parser.add_subparsers(dest="policy_action", metavar="ACTION")
    actions.required = True
    check = actions.add_parser(
        "check",
        help="validate policy files against schemas/policy.json",
        description=(
            "Validate policy files: TOML syntax, schemas/policy.json, every number finite "
            "(TOML's nan and inf are rejected), one ladder step per severity, each use case "
            "and [defaults] defined once across all files, and SPENDSENTRY_AUTO_THROTTLE when "
            "[defaults] does not set auto_throttle."
        ),
    )
    check.add_argument(
        "paths",
        nargs="+",
        metavar="DIR",
        type=Path,
        help="a policy directory (all its *.toml files) or a single policy file",
    )
    check.add_argument(
        "--events",
        action="append",
        default=[],
        metavar="FILE",
        help=(
            "usage events (JSONL, as replay reads them; repeatable): also warn about a "
            "route_model step whose target already serves most of its use case's calls "
            "(default: none)"
        ),
    )


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; return the exit status."""
    if args.policy_action == "check":
        return _check(args.paths, args.events)
    raise AssertionError(f"unknown policy action {args.policy_action!r}")  # argparse prevents it


def _check(paths: list[Path], events: list[str]) -> int:
    try:
        policies = PolicySet.load(paths)
    except PolicyError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 1
    if not policies.files:
        # An empty directory is a valid policy set to the engine, but asking
        # to check one is almost always a wrong path.
        names = ", ".join(str(p) for p in paths)
        print(f"{names}: no policy files (*.toml) found", file=sys.stderr)
        return 1
    warnings = ladder_warnings(policies)
    if events:
        try:
            served = model_counts(events)
        except OSError as exc:
            print(f"{exc.filename}: cannot read: {exc.strerror}", file=sys.stderr)
            return 1
        warnings += routing_warnings(policies, served)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    print(f"ok: {len(policies)} policies in {len(policies.files)} files")
    return 0
