"""``spendsentry replay``: backtest event files through the engine."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from spendsentry.errors import SpendSentryError

if TYPE_CHECKING:
    from spendsentry.engine import Engine
    from spendsentry.focus import FocusLedger


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
        "--focus-out",
        metavar="PATH",
        help="FOCUS 1.3 cost rows per hour, use case, model and token direction, CSV "
        "(default: not written; see docs/integrations.md)",
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
    parser.add_argument(
        "--control",
        metavar="FILE",
        help="operator actions as JSON Lines of ai.control messages (e.g. expected_change, "
        "false_alarm feedback), applied at their event time (default: none)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress, no summary line")


def run(args: argparse.Namespace) -> int:
    from spendsentry.actions import ThrottleKeys
    from spendsentry.ingest import Decoder, IngestLimits
    from spendsentry.replay import Progress, Sinks, read_controls, replay, summary
    from spendsentry.setup import build_engine

    try:
        engine = build_engine(args.policies, args.prices, allowed_lateness_s=args.allowed_lateness)
        decoder = Decoder(IngestLimits(max_record_bytes=args.max_record_bytes))
        total = _total_size(args.files)
        progress = None if args.quiet else Progress(total)
        ledger = _focus_ledger(args.focus_out, engine)
        sinks = Sinks(args.alerts_out, args.commands_out, args.deadletter_out)
        try:
            result = replay(
                args.files,
                engine,
                sinks,
                decoder=decoder,
                progress=progress,
                keys=ThrottleKeys.from_env(),
                controls=read_controls(args.control) if args.control else (),
            )
        finally:
            sinks.close()
        if ledger is not None:
            _write_focus(args.focus_out, ledger, engine)
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


def _focus_ledger(path: str | None, engine: Engine) -> FocusLedger | None:
    """A ledger listening to ``engine`` when ``--focus-out`` was given."""
    if path is None:
        return None
    if Path(path).suffix.lower() == ".parquet":
        # Parquet needs pyarrow (tens of MB) for a file FinOps tools also read as CSV.
        raise SpendSentryError(
            f"--focus-out {path}: Parquet is not supported (it would need pyarrow); "
            "write .csv and convert if your tool wants Parquet"
        )
    from spendsentry.focus import FocusLedger

    ledger = FocusLedger()
    engine.on_usage = ledger.add_run
    return ledger


def _write_focus(path: str, ledger: FocusLedger, engine: Engine) -> None:
    from spendsentry.focus import write_csv

    try:
        write_csv(path, ledger.rows(engine.prices, engine.policies.for_use_case))
    except OSError as exc:
        raise SpendSentryError(f"cannot write {path}: {exc.strerror or exc}") from None


def _total_size(files: list[str]) -> int | None:
    try:
        return sum(os.path.getsize(f) for f in files if f != "-") or None
    except OSError:
        return None
