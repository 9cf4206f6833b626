"""Detection quality over many seeds: the engine against a static-threshold baseline.

For each seed: simulate labelled traffic (``spendsentry simulate``), replay it
through the engine, score the alerts against the labels, and score the
static-threshold baseline (cost over K x the hourly budget, the way gateways
alert today) on the same events. Prints per kind: incidents diagnosed,
median and max detection delay (event time), false alerts per 100 use-case
hours, engine and baseline side by side; plus runs with no incidents at all.

    python benchmarks/bench_detection.py --seeds 1-8 --hours 24 --quiet-seeds 101-102

Not part of the test run (it takes minutes); the README's table comes from it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def run_seed(seed: int, hours: float, no_incidents: bool) -> dict[str, Any]:
    from spendsentry.simulate.scenario import Scenario

    return run_scenario(Scenario(seed=seed, hours=hours, no_incidents=no_incidents), no_incidents)


def run_scenario(scenario: Any, no_incidents: bool) -> dict[str, Any]:
    """Replay one :class:`Scenario` through the engine; score engine and baseline."""
    from spendsentry.engine import Engine
    from spendsentry.evaluate import evaluate
    from spendsentry.policy import PolicySet
    from spendsentry.replay import Sinks, replay

    policies_dir = ROOT / "streams" / "policies"
    seed = scenario.seed
    with tempfile.TemporaryDirectory() as tmp:
        events_path, labels_path = scenario.write(tmp)
        alerts_path = Path(tmp) / "alerts.jsonl"
        engine = Engine(PolicySet.load(policies_dir))
        sinks = Sinks(alerts=str(alerts_path))
        try:
            replay([str(events_path)], engine, sinks)
        finally:
            sinks.close()
        report = evaluate(labels_path, alerts_path, events_path, policies_dir)
    out: dict[str, Any] = {"seed": seed, "no_incidents": no_incidents}
    # Budget threshold warnings are not scored (a level reached, not an anomaly).
    out["budget_warnings"] = report.budget_warnings
    for name in ("engine", "baseline"):
        s = getattr(report, name)
        out[name] = {
            "incidents": [
                {
                    "kind": i.kind,
                    "use_case": i.use_case,
                    "diagnosed": i.diagnosed,
                    "delay": i.delay_min,
                    "id": i.incident_id,
                    "shape": i.shape,
                    "ramp_min": i.ramp_min,
                    "pages": i.pages,
                    "root_cause": i.root_cause,
                }
                for i in s.incidents
            ],
            "false": [
                {"kind": a.kind, "use_case": a.use_case, "at": a.detected_at}
                for a in s.alerts
                if a.verdict == "false"
            ],
            "use_case_hours": s.use_case_hours,
        }
    return out


def _row() -> dict[str, Any]:
    return {"incidents": 0, "diagnosed": 0, "delays": [], "steps": [], "ramps": [0, 0]}


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _ramps(r: list[int]) -> str:
    return f"{r[0]}/{r[1]}" if r[1] else "-"


def aggregate(results: list[dict[str, Any]], name: str) -> dict[str, Any]:
    kinds: dict[str, dict[str, Any]] = {}
    hours = 0.0
    false_total = 0
    delays_all: list[float] = []
    steps_all: list[float] = []
    ramps = [0, 0]  # caught within the ramp, ramps
    pages: list[int] = []  # per diagnosed incident: distinct incidents paged
    root_right = 0  # diagnosed incidents whose first page names their kind as the cause
    for r in results:
        part = r[name]
        hours += part["use_case_hours"]
        false_total += len(part["false"])
        for inc in part["incidents"]:
            row = kinds.setdefault(inc["kind"], _row())
            row["incidents"] += 1
            ramp = inc.get("ramp_min")
            if ramp is not None:
                within = inc["diagnosed"] and inc["delay"] <= ramp
                row["ramps"][0] += within
                row["ramps"][1] += 1
                ramps[0] += within
                ramps[1] += 1
            if inc["diagnosed"]:
                pages.append(inc.get("pages", 0))
                root_right += inc.get("root_cause") == inc["kind"]
                row["diagnosed"] += 1
                row["delays"].append(inc["delay"])
                delays_all.append(inc["delay"])
                if ramp is None:
                    row["steps"].append(inc["delay"])
                    steps_all.append(inc["delay"])
        for f in part["false"]:
            row = kinds.setdefault(f["kind"], _row())
            row["false"] = row.get("false", 0) + 1
    return {
        "kinds": kinds,
        "use_case_hours": hours,
        "false_alerts": false_total,
        "false_per_100h": 100.0 * false_total / hours if hours else 0.0,
        "median_delay": statistics.median(delays_all) if delays_all else None,
        "step_median_delay": statistics.median(steps_all) if steps_all else None,
        "ramps": ramps,
        "pages_per_incident": statistics.mean(pages) if pages else None,
        "root_cause_right": root_right,
        "diagnosed": sum(k["diagnosed"] for k in kinds.values()),
        "incidents": sum(k["incidents"] for k in kinds.values()),
    }


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def print_table(engine: dict[str, Any], baseline: dict[str, Any], quiet: dict[str, Any]) -> None:
    # median: over all diagnosed incidents; steps: over steps alone; in ramp:
    # ramps diagnosed before they reached full strength.
    print(
        f"{'kind':<24} {'diagnosed':>10} {'median':>7} {'max':>6} {'steps':>6} {'in ramp':>8}"
        f" {'false':>6} | {'baseline':>9} {'median':>7} {'false':>6}"
    )
    for kind in sorted(engine["kinds"]):
        e = engine["kinds"][kind]
        b = baseline["kinds"].get(kind, _row())
        print(
            f"{kind:<24} {e['diagnosed']:>4}/{e['incidents']:<5} "
            f"{_fmt(_median(e['delays'])):>7} "
            f"{_fmt(max(e['delays']) if e['delays'] else None):>6} "
            f"{_fmt(_median(e['steps'])):>6} {_ramps(e['ramps']):>8} {e.get('false', 0):>6} |"
            f" {b['diagnosed']:>4}/{b['incidents']:<4} "
            f"{_fmt(_median(b['delays'])):>7}"
            f" {b.get('false', 0):>6}"
        )
    print(
        f"{'total':<24} {engine['diagnosed']:>4}/{engine['incidents']:<5} "
        f"{_fmt(engine['median_delay']):>7} {'':>6} {_fmt(engine['step_median_delay']):>6} "
        f"{_ramps(engine['ramps']):>8} {engine['false_alerts']:>6} |"
        f" {baseline['diagnosed']:>4}/{baseline['incidents']:<4} "
        f"{_fmt(baseline['median_delay']):>7} {baseline['false_alerts']:>6}"
    )
    print(
        f"false alerts per 100 use-case-hours: engine {engine['false_per_100h']:.2f}, "
        f"baseline {baseline['false_per_100h']:.2f} "
        f"({engine['use_case_hours']:.0f} use-case-hours with incidents)"
    )
    if engine["pages_per_incident"] is not None:
        print(
            f"pages per incident: engine {engine['pages_per_incident']:.2f}; root cause named "
            f"right: {engine['root_cause_right']}/{engine['diagnosed']} diagnosed incidents"
        )
    if quiet["use_case_hours"]:
        print(
            f"runs with no incidents: engine {quiet['false_alerts']} false alerts "
            f"({quiet['false_per_100h']:.2f} per 100 use-case-hours over "
            f"{quiet['use_case_hours']:.0f})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="1-8")
    parser.add_argument("--quiet-seeds", default="101-102", help="runs with --no-incidents")
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", help="write the per-seed results here")
    parser.add_argument("--verbose", action="store_true", help="list misses and false alerts")
    args = parser.parse_args(argv)
    jobs = [(s, args.hours, False) for s in _seeds(args.seeds)]
    jobs += [(s, args.hours, True) for s in _seeds(args.quiet_seeds)]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        results = list(pool.map(run_seed, *zip(*jobs, strict=True)))
    noisy = [r for r in results if not r["no_incidents"]]
    quiet = [r for r in results if r["no_incidents"]]
    engine = aggregate(noisy, "engine")
    baseline = aggregate(noisy, "baseline")
    print(f"seeds {args.seeds} ({args.hours:g} h each), quiet seeds {args.quiet_seeds}")
    print_table(engine, baseline, aggregate(quiet, "engine"))
    print(
        "budget periods warned (budget_threshold, not scored): "
        f"{sum(r.get('budget_warnings', 0) for r in noisy)} in the seeds, "
        f"{sum(r.get('budget_warnings', 0) for r in quiet)} in the quiet seeds"
    )
    if args.verbose:
        for r in results:
            for inc in r["engine"]["incidents"]:
                if not inc["diagnosed"]:
                    print(f"  missed seed {r['seed']}: {inc['id']} {inc['use_case']}")
                elif inc["delay"] > 5:
                    ramp = inc.get("ramp_min")
                    shape = "step" if ramp is None else f"ramp of {ramp:.0f} min"
                    print(
                        f"  slow   seed {r['seed']}: {inc['id']} {inc['use_case']} "
                        f"{inc['delay']:.0f} min ({shape})"
                    )
            for f in r["engine"]["false"]:
                print(f"  false  seed {r['seed']}: {f['kind']} {f['use_case']} {f['at']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
