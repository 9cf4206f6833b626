"""``spendsentry replay``: backtest event files through the engine."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import orjson

from spendsentry.errors import SpendSentryError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="JSON Lines (.gz ok) or -")
    parser.add_argument(
        "--alerts-out", metavar="PATH", help="alerts, JSON Lines (default: not written)"
    )
    parser.add_argument(
        "--commands-out",
        metavar="PATH",
        help="throttle commands, JSON Lines (default: not written)",
    )
    parser.add_argument(
        "--deadletter-out",
        metavar="PATH",
        help="rejected records, JSON Lines (default: not written)",
    )
    parser.add_argument(
        "--summary-json", metavar="PATH", help="run summary, JSON (default: not written)"
    )
    parser.add_argument(
        "--policies", metavar="DIR", help="policy directory (default: streams/policies if present)"
    )
    parser.add_argument(
        "--prices",
        metavar="FILE",
        help="price overrides TOML (default: streams/prices.toml if present)",
    )
    parser.add_argument(
        "--allowed-lateness",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="events up to this much older than the newest still count (default 120)",
    )
    parser.add_argument(
        "--max-record-bytes",
        type=int,
        default=1 << 20,
        metavar="N",
        help="records larger than this are dead-lettered (default 1 MiB)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress, no summary line")


def run(args: argparse.Namespace) -> int:
    from spendsentry.actions import ThrottleKeys
    from spendsentry.ingest import Decoder, IngestLimits
    from spendsentry.replay import Progress, Sinks, replay, summary
    from spendsentry.setup import build_engine

    try:
        engine = build_engine(args.policies, args.prices, allowed_lateness_s=args.allowed_lateness)
        decoder = Decoder(IngestLimits(max_record_bytes=args.max_record_bytes))
        total = _total_size(args.files)
        progress = None if args.quiet else Progress(total)
        sinks = Sinks(args.alerts_out, args.commands_out, args.deadletter_out)
        try:
            result = replay(
                args.files,
                engine,
                sinks,
                decoder=decoder,
                progress=progress,
                keys=ThrottleKeys.from_env(),
            )
        finally:
            sinks.close()
    except (SpendSentryError, ValueError) as exc:
        print(f"spendsentry replay: {exc}", file=sys.stderr)
        return 2
    report = summary(result, engine)
    if args.summary_json:
        Path(args.summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary_json).write_bytes(
            orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        )
    if not args.quiet:
        rejected = sum(report["rejected"].values())
        print(
            f"replayed {report['events_read']:,} events: {report['accepted']:,} accepted, "
            f"{rejected:,} rejected, {report['duplicates']:,} duplicates, "
            # An incident is one firing record plus its escalations and resolution:
            # both counts, or "22 alerts" next to a 51-line alerts file reads as a bug.
            f"{sum(report['alerts'].values())} incidents "
            f"({report['alert_records']} alert records); "
            f"{report['events_per_second']:,.0f} events/s",
            file=sys.stderr,
        )
    return 0


def _total_size(files: list[str]) -> int | None:
    try:
        return sum(os.path.getsize(f) for f in files if f != "-") or None
    except OSError:
        return None
