"""Calendar weeks through the engine: false alerts by kind, day and local hour; incidents diagnosed.

Each seed simulates a calendar run (``spendsentry simulate --calendar``: starting
on a Saturday, weekends at a tenth of weekday load, office hours with sharp and
gradual starts in six time zones, a nightly and a month-start batch) twice, once
with no incidents and once with the default incident plan, replays both through
the engine and scores them with the same code as ``bench_detection.py``. Prints
false alerts per 100 use-case-hours on the quiet weeks, by kind, by local day
and by local hour, and those at the daily steps (local 05:00-10:00 and
17:00-22:00) after the first two days of history; then per kind, incidents
diagnosed and the median delay on the weeks with incidents.

    python benchmarks/bench_calendar.py --seeds 1-3 --days 7 --json /tmp/calendar.json

Not part of the test run (a 7-day seed takes minutes); the README's figure comes from it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_detection as detection

#: Local hours around the daily level changes (06:00, 08:00, 18:00, 21:00).
STEP_HOURS = frozenset([*range(5, 10), *range(17, 22)])
#: History a detector may need before it is expected to know the schedule.
HISTORY = timedelta(days=2)
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
HOUR_BUCKETS = (
    ("00-05", range(0, 5)),
    ("05-10 step", range(5, 10)),
    ("10-17", range(10, 17)),
    ("17-22 step", range(17, 22)),
    ("22-24", range(22, 24)),
)


def run_week(seed: int, days: float, no_incidents: bool, start: str | None) -> dict[str, Any]:
    """One calendar run through the engine, scored; plus its calendar and how long it took."""
    from spendsentry.simulate.scenario import Scenario

    began = time.perf_counter()
    scenario = Scenario(
        seed=seed, start=start, hours=days * 24, no_incidents=no_incidents, calendar=True
    )
    out = detection.run_scenario(scenario, no_incidents)
    out["start"] = scenario.labels()["start"]
    out["utc_offsets"] = {uc: p.utc_offset for uc, p in (scenario.calendar or {}).items()}
    out["seconds"] = round(time.perf_counter() - began, 1)
    return out


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def place(alert: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """Where a false alert fell: local day and hour of its use case, and whether at a step."""
    at = _parse(alert["at"])
    local = at + timedelta(hours=run["utc_offsets"].get(alert["use_case"], 0.0))
    after_history = at - _parse(run["start"]) >= HISTORY
    return {
        "day": DAY_NAMES[local.weekday()],
        "hour": local.hour,
        "step": local.hour in STEP_HOURS,
        "after_history": after_history,
    }


def false_alert_profile(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """False alerts of the quiet runs, by kind, local day, local hour bucket and at the steps."""
    by_kind: Counter[str] = Counter()
    by_day: Counter[str] = Counter()
    by_hour: Counter[int] = Counter()
    by_use_case: Counter[str] = Counter()
    steps_after_history: list[dict[str, Any]] = []
    hours = 0.0
    for run in runs:
        hours += run["engine"]["use_case_hours"]
        for alert in run["engine"]["false"]:
            where = place(alert, run)
            by_kind[alert["kind"]] += 1
            by_day[where["day"]] += 1
            by_hour[where["hour"]] += 1
            by_use_case[alert["use_case"]] += 1
            if where["step"] and where["after_history"]:
                steps_after_history.append({**alert, "seed": run["seed"], **where})
    total = sum(by_kind.values())
    return {
        "use_case_hours": hours,
        "false_alerts": total,
        "false_per_100h": 100.0 * total / hours if hours else 0.0,
        "by_kind": dict(by_kind),
        "by_day": dict(by_day),
        "by_hour": {h: by_hour[h] for h in range(24)},
        "by_use_case": dict(by_use_case),
        "at_steps_after_history": steps_after_history,
    }


def _day_order(start: str) -> list[str]:
    first = _parse(start).weekday()
    return [DAY_NAMES[(first + i) % 7] for i in range(7)]


def print_quiet(profile: dict[str, Any], start: str) -> None:
    print(
        f"quiet weeks: {profile['false_alerts']} false alerts, "
        f"{profile['false_per_100h']:.2f} per 100 use-case-hours "
        f"(over {profile['use_case_hours']:.0f})"
    )
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(profile["by_kind"].items())) or "-"
    print(f"  by kind: {kinds}")
    days = "  ".join(f"{d} {profile['by_day'].get(d, 0)}" for d in _day_order(start))
    print(f"  by local day: {days}")
    buckets = "  ".join(
        f"{name} {sum(profile['by_hour'][h] for h in hours)}" for name, hours in HOUR_BUCKETS
    )
    print(f"  by local hour: {buckets}")
    print("  per local hour: " + " ".join(str(profile["by_hour"][h]) for h in range(24)))
    ranked = sorted(profile["by_use_case"].items(), key=lambda un: -un[1])
    use_cases = ", ".join(f"{u} {n}" for u, n in ranked) or "-"
    print(f"  by use case: {use_cases}")
    steps = profile["at_steps_after_history"]
    print(
        f"  at the daily steps (local 05-10, 17-22) after the first {HISTORY.days} days: "
        f"{len(steps)}"
    )


def print_incidents(engine: dict[str, Any]) -> None:
    print(f"weeks with incidents: {engine['diagnosed']}/{engine['incidents']} diagnosed")
    print(f"  {'kind':<24} {'diagnosed':>10} {'median':>7} {'max':>6} {'false':>6}")
    for kind in sorted(engine["kinds"]):
        row = engine["kinds"][kind]
        delays = row["delays"]
        median = statistics.median(delays) if delays else None
        worst = max(delays) if delays else None
        print(
            f"  {kind:<24} {row['diagnosed']:>4}/{row['incidents']:<5} "
            f"{detection._fmt(median):>7} {detection._fmt(worst):>6} {row.get('false', 0):>6}"
        )
    print(
        f"  false alerts on those weeks: {engine['false_alerts']} "
        f"({engine['false_per_100h']:.2f} per 100 use-case-hours)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="1-3")
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--start", help="run start (default: the calendar's Saturday)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quiet-only", action="store_true", help="skip the incident weeks")
    parser.add_argument("--json", help="write the per-seed results and the summary here")
    parser.add_argument("--verbose", action="store_true", help="list false alerts and misses")
    args = parser.parse_args(argv)
    seeds = detection._seeds(args.seeds)
    jobs = [(s, args.days, True, args.start) for s in seeds]
    if not args.quiet_only:
        jobs += [(s, args.days, False, args.start) for s in seeds]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        results = list(pool.map(run_week, *zip(*jobs, strict=True)))
    if args.json:  # the raw runs first: minutes of work are not lost to a report bug
        Path(args.json).write_text(json.dumps({"runs": results}, indent=1))
    quiet = [r for r in results if r["no_incidents"]]
    noisy = [r for r in results if not r["no_incidents"]]
    start = results[0]["start"]
    seconds = [r["seconds"] for r in results]
    print(f"calendar seeds {args.seeds}, {args.days:g} days from {start}")
    print(f"seconds per run: {', '.join(f'{s:.0f}' for s in seconds)}")
    profile = false_alert_profile(quiet)
    print_quiet(profile, start)
    summary: dict[str, Any] = {"quiet": profile}
    if noisy:
        engine = detection.aggregate(noisy, "engine")
        print_incidents(engine)
        summary["incidents"] = engine
    if args.verbose:
        for step in profile["at_steps_after_history"]:
            print(
                f"  step   seed {step['seed']}: {step['kind']} {step['use_case']} {step['at']} "
                f"(local {step['day']} {step['hour']:02d}h)"
            )
        for r in noisy:
            for inc in r["engine"]["incidents"]:
                if not inc["diagnosed"]:
                    print(f"  missed seed {r['seed']}: {inc['id']} {inc['use_case']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": results, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
