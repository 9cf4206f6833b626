"""``spendsentry simulate``: write labelled synthetic traffic (events.jsonl + labels.json).

Token sizes and burstiness are calibrated on the Azure Public Dataset (Microsoft),
AzureLLMInferenceTrace, CC-BY 4.0.
"""

from __future__ import annotations

import argparse
import sys
import time

from spendsentry.simulate import KINDS, Scenario
from spendsentry.simulate.scenario import CALENDAR_START, DEFAULT_START


def _kinds(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown incident kind(s) {', '.join(unknown)}; known: {', '.join(KINDS)}"
        )
    if len(set(kinds)) != len(kinds):
        raise argparse.ArgumentTypeError("name each incident kind at most once")
    return kinds


def _hours(text: str) -> float:
    try:
        hours = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of hours: {text!r}") from None
    if not hours > 0:
        raise argparse.ArgumentTypeError("hours must be positive")
    return hours


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (required)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--hours", type=_hours, help="length of the run (default 24)")
    length.add_argument("--days", type=_hours, help="length of the run in days (default: --hours)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--start",
        metavar="RFC3339",
        help=f"run start (default {DEFAULT_START}, with --calendar {CALENDAR_START}, a Saturday)",
    )
    parser.add_argument(
        "--calendar",
        action="store_true",
        help="load follows a calendar: weekdays, weekends, office hours in each use case's "
        "time zone, a nightly and a month-start batch (for runs of a week or more)",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--incidents",
        type=_kinds,
        metavar="LIST",
        help=f"comma-separated incident kinds, one of each (default: all that fit): "
        f"{', '.join(KINDS)}",
    )
    group.add_argument("--no-incidents", action="store_true", help="plain traffic, no incidents")


def run(args: argparse.Namespace) -> int:
    try:
        scenario = Scenario(
            seed=args.seed,
            start=args.start,
            hours=args.days * 24 if args.days else args.hours or 24.0,
            incidents=args.incidents,
            no_incidents=args.no_incidents,
            calendar=args.calendar,
        )
    except ValueError as exc:
        print(f"spendsentry simulate: {exc}", file=sys.stderr)
        return 2
    began = time.perf_counter()
    events_path, labels_path = scenario.write(args.out)
    elapsed = time.perf_counter() - began
    count = scenario.events_written
    rate = count / elapsed if elapsed > 0 else float("inf")
    print(f"wrote {count:,} events to {events_path} ({elapsed:.1f} s, {rate:,.0f} events/s)")
    print(f"wrote labels ({len(scenario.incidents)} incidents) to {labels_path}")
    for inc in scenario.incidents:
        print(
            f"  {inc.incident_id:34s} {inc.use_case:18s} {inc.shape:4s} "
            f"{inc.start:%Y-%m-%dT%H:%MZ} .. {inc.end:%H:%MZ}"
        )
    if args.incidents:
        missing = [k for k in args.incidents if k not in {i.kind for i in scenario.incidents}]
        if missing:
            print(
                f"note: no room for {', '.join(missing)} in {scenario.hours:g} h", file=sys.stderr
            )
    return 0
