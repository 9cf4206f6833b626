"""Derive the simulator's compact traffic profile from the Azure LLM inference trace.

Reads the two CSVs of the Azure Public Dataset (Microsoft), AzureLLMInferenceTrace,
CC-BY 4.0 (``TIMESTAMP, ContextTokens, GeneratedTokens``; one hour of code-completion
and one hour of conversation requests, 2023-11-16) and writes
``src/spendsentry/data/azure_trace_profile.json``: 201 quantiles (every 0.5 %) of
context and generated tokens per trace, plus arrival statistics. The installed
package reads only that JSON, so the raw trace is not needed at run time.

Usage::

    python scripts/build_trace_profile.py \
        [--trace-dir /work/shared/data/azure-llm-inference-2023] [--out PATH]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from datetime import datetime
from pathlib import Path

import numpy as np

CREDIT = "Azure Public Dataset (Microsoft), AzureLLMInferenceTrace, CC-BY 4.0"
LICENSE = "CC-BY-4.0"
SOURCE = "https://github.com/Azure/AzurePublicDataset (data/AzureLLMInferenceTrace_*.csv)"
N_QUANTILES = 201  # probabilities 0, 0.005, ..., 1: inverse-CDF sampling interpolates between

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRACE_DIR = Path("/work/shared/data/azure-llm-inference-2023")
DEFAULT_OUT = ROOT / "src" / "spendsentry" / "data" / "azure_trace_profile.json"


def _read_trace(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (seconds since the first row, context tokens, generated tokens)."""
    stamps: list[float] = []
    context: list[int] = []
    generated: list[int] = []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            # Seven fractional digits: fromisoformat in 3.11 takes at most six.
            stamps.append(datetime.fromisoformat(row["TIMESTAMP"][:26]).timestamp())
            context.append(int(row["ContextTokens"]))
            generated.append(int(row["GeneratedTokens"]))
    ts = np.sort(np.asarray(stamps))
    return ts - ts[0], np.asarray(context), np.asarray(generated)


def _arrivals(ts: np.ndarray) -> dict[str, float]:
    gaps = np.diff(ts)
    per_second = np.bincount(np.floor(ts).astype(int))
    per_minute = np.bincount(np.floor(ts / 60).astype(int))
    # The first and last minutes are partial; they would fake burstiness.
    full = per_minute[1:-1].astype(float)
    m_mean, m_var = float(full.mean()), float(full.var())
    # Remove the slow within-hour drift (a quadratic trend): the simulator's diurnal
    # curve already models it, so only the minute-to-minute residual is kept.
    x = np.arange(len(full), dtype=float)
    residual = full - np.polyval(np.polyfit(x, full, 2), x)
    # Extra-Poisson variance as a mean-one lognormal rate multiplier per minute:
    # Var(N) = mu + mu^2 s^2 for a Poisson count with multiplier variance s^2.
    s2 = max(0.0, (float((residual**2).mean()) - m_mean) / (m_mean * m_mean))
    lag1 = float(np.corrcoef(full[:-1], full[1:])[0, 1])
    residual_lag1 = float(np.corrcoef(residual[:-1], residual[1:])[0, 1])
    return {
        "rows": len(ts),
        "duration_s": round(float(ts[-1]), 3),
        "rate_per_s": round(len(ts) / float(ts[-1]), 4),
        "interarrival_mean_s": round(float(gaps.mean()), 5),
        "interarrival_cv": round(float(gaps.std() / gaps.mean()), 4),
        "per_second_mean": round(float(per_second.mean()), 4),
        "per_second_cv": round(float(per_second.std() / per_second.mean()), 4),
        "per_second_dispersion": round(float(per_second.var() / per_second.mean()), 4),
        "per_minute_mean": round(m_mean, 3),
        "per_minute_cv": round(math.sqrt(m_var) / m_mean, 4),
        "per_minute_lag1_autocorr": round(lag1, 4),
        "detrended_lag1_autocorr": round(residual_lag1, 4),
        "minute_log_sigma": round(math.sqrt(math.log1p(s2)), 4),
    }


def _tokens(values: np.ndarray) -> dict[str, object]:
    probs = np.linspace(0.0, 1.0, N_QUANTILES)
    quantiles = np.quantile(values.astype(float), probs)
    return {
        "mean": round(float(values.mean()), 2),
        "min": int(values.min()),
        "max": int(values.max()),
        "quantiles": [round(float(q), 1) for q in quantiles],
    }


def build(trace_dir: Path) -> dict[str, object]:
    traces: dict[str, object] = {}
    for name in ("code", "conv"):
        ts, context, generated = _read_trace(trace_dir / f"AzureLLMInferenceTrace_{name}.csv")
        traces[name] = {
            "context_tokens": _tokens(context),
            "generated_tokens": _tokens(generated),
            "arrivals": _arrivals(ts),
        }
    return {
        "credit": CREDIT,
        "license": LICENSE,
        "source": SOURCE,
        "description": (
            "Compact profile of the Azure LLM inference trace (2023-11-16, about one hour "
            "each of code and conversation requests): token quantiles at probabilities "
            "i/200 for inverse-CDF sampling, and arrival statistics. Built by "
            "scripts/build_trace_profile.py."
        ),
        "quantile_probabilities": f"linspace(0, 1, {N_QUANTILES})",
        "traces": traces,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace-dir", type=Path, default=DEFAULT_TRACE_DIR)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    profile = build(args.trace_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(profile, indent=1) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
