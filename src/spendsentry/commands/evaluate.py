"""``spendsentry evaluate``: score alerts against incident labels (and a static baseline)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from spendsentry.errors import SpendSentryError
from spendsentry.evaluate import evaluate, format_report
from spendsentry.setup import DEFAULT_POLICIES_DIR as DEFAULT_POLICIES
from spendsentry.setup import default_policies_dir, load_prices


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("labels", metavar="LABELS", help="labels.json from spendsentry simulate")
    parser.add_argument("alerts", metavar="ALERTS", help="alerts as JSON Lines")
    parser.add_argument(
        "--events",
        metavar="EVENTS",
        help="the events.jsonl the alerts came from: adds the static-threshold baseline "
        "(default: no baseline)",
    )
    parser.add_argument(
        "--policies",
        metavar="DIR",
        help=f"policy directory for the baseline's hourly budgets (default {DEFAULT_POLICIES})",
    )
    parser.add_argument(
        "--baseline-k",
        type=float,
        default=1.0,
        metavar="K",
        help="baseline fires above K x the hourly budget (default 1.0)",
    )
    parser.add_argument(
        "--prices",
        metavar="FILE",
        help="price overrides TOML, as given to replay (default: streams/prices.toml if present)",
    )
    parser.add_argument(
        "--control",
        metavar="FILE",
        help="operator actions (ai.control messages, JSON Lines) given to the replay: adds "
        "the feedback per use case and kind, the sensitivity it leaves (with --policies' "
        "floors) and the verdict of the alerts it named (default: no feedback section)",
    )
    parser.add_argument(
        "--json", metavar="PATH", help="also write the full report as JSON (default: not written)"
    )


def run(args: argparse.Namespace) -> int:
    policies = args.policies if args.policies is not None else default_policies_dir()
    try:
        prices = load_prices(args.prices) if args.events else None
        report = evaluate(
            args.labels,
            args.alerts,
            args.events,
            policies,
            k=args.baseline_k,
            prices=prices,
            controls_path=args.control,
        )
    except (OSError, ValueError, SpendSentryError) as exc:
        print(f"spendsentry evaluate: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        Path(args.json).write_bytes(
            orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2) + b"\n"
        )
        print(f"wrote {args.json}")
    return 0
