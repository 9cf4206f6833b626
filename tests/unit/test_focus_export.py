"""``replay --focus-out``: FOCUS 1.3 rows checked against the spec's own column definitions.

The definitions (column set, data types, value formats, allowed values) are in
``tests/unit/data/focus-1.3-columns.json``, copied from the FOCUS_Spec
repository with the file and commit of each.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from spendsentry.cli import main
from spendsentry.engine import Engine
from spendsentry.events import UsageEvent
from spendsentry.focus import FocusLedger, decimal, split_nano
from spendsentry.replay import Sinks, replay
from spendsentry.setup import build_engine
from spendsentry.windows import NANO

SPEC = json.loads((Path(__file__).parent / "data" / "focus-1.3-columns.json").read_text())
H = 1_793_610_000 - 1_793_610_000 % 3600  # an hour boundary (2026-11-02)
SAMPLE = Path(__file__).parents[2] / "examples" / "sample-6h.jsonl.gz"


def _events() -> list[dict[str, Any]]:
    """Three hours of calls with every case the export must count right."""
    out: list[dict[str, Any]] = []
    for i in range(180):
        ts = H + i * 60 + 5
        out.append(  # priced from the catalogue, with prompt-cache hits
            {
                "event_id": f"a{i}",
                "ts": ts,
                "use_case": "code_assistant",
                "model": "gpt-4o",
                "provider": "openai",
                "input_tokens": 1200 + i,
                "cached_input_tokens": 300,
                "output_tokens": 150,
            }
        )
        out.append(  # a provider-reported cost of a model the price book does not know
            {
                "event_id": f"b{i}",
                "ts": ts + 1,
                "use_case": "house_bot",
                "model": "house-llm",
                "input_tokens": 800,
                "output_tokens": 90,
                "cost_usd": 0.000123457,
                "team": "cx",
            }
        )
        out.append(  # embeddings: input tokens only
            {
                "event_id": f"c{i}",
                "ts": ts + 2,
                "use_case": "support_chat",
                "kind": "embedding",
                "model": "text-embedding-3-small",
                "provider": "openai",
                "input_tokens": 512,
                "content_hash": f"h{i % 7}",
            }
        )
        out.append(  # unpriced: counted by nobody
            {
                "event_id": f"d{i}",
                "ts": ts + 3,
                "use_case": "support_chat",
                "model": "mystery-x",
                "input_tokens": 10,
                "output_tokens": 10,
            }
        )
        out.append(  # a tool call: no tokens, no cost, no row
            {
                "event_id": f"t{i}",
                "ts": ts + 4,
                "use_case": "code_assistant",
                "kind": "tool_call",
                "tool_name": "search",
            }
        )
    out.append(dict(out[7]))  # a duplicate event id: the engine drops it, so must the export
    return out


@pytest.fixture
def events_file(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in _events()))
    return path


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _nano(text: str) -> int:
    whole, _, frac = text.lstrip("-").partition(".")
    value = int(whole) * NANO + int((frac + "0" * 9)[:9])
    assert len(frac) <= 9, text  # finer than a nano-dollar would be lost
    return -value if text.startswith("-") else value


def _check_value(column: str, value: str, rule: dict[str, Any]) -> None:
    if value == "":
        assert rule["nulls"], f"{column} must not be null"
        return
    fmt = SPEC["formats"][rule["type"]]
    if "pattern" in fmt:
        assert re.fullmatch(fmt["pattern"], value), f"{column}={value!r} breaks {fmt['rule']}"
    if rule["type"] == "KeyValue":
        doc = json.loads(value)
        assert isinstance(doc, dict) and all(isinstance(k, str) for k in doc), column
        if rule.get("pascal_case_keys"):
            assert all(re.fullmatch(r"(F_)?[A-Z][A-Za-z0-9]*", k) for k in doc), value
    if "allowed" in rule:
        assert value in rule["allowed"], f"{column}={value!r} is not an allowed value"
    if rule.get("positive"):
        assert _nano(value) > 0, f"{column}={value!r} must be positive"


def test_replay_focus_out_has_every_column_in_the_specs_types_and_adds_up(
    events_file: Path, tmp_path: Path
) -> None:
    out, summary = tmp_path / "focus.csv", tmp_path / "summary.json"
    code = main(["replay", str(events_file), "--quiet", "--focus-out", str(out),
                 "--summary-json", str(summary)])  # fmt: skip
    assert code == 0
    header, rows = _read(out)
    assert set(SPEC["columns"]) <= set(header), set(SPEC["columns"]) - set(header)
    assert rows
    for row in rows:
        for column, rule in SPEC["columns"].items():
            _check_value(column, row[column], rule)
        assert row["ChargeCategory"] == "Usage"
        assert row["ServiceCategory"] == "AI and Machine Learning"
        assert row["BillingCurrency"] == "USD"
        assert row["ConsumedUnit"] == row["PricingUnit"] == "Tokens"
        assert row["ChargePeriodStart"] < row["ChargePeriodEnd"]
        assert row["ChargePeriodStart"].endswith(":00:00Z")
        tags = json.loads(row["Tags"])
        # Provider-defined tags carry the provider's prefix (tags.md).
        assert all(k.startswith("spendsentry/") for k in tags)
    # One row per use case, model, token direction and hour.
    keys = Counter((r["Tags"], r["ServiceName"], r["SkuId"], r["ChargePeriodStart"]) for r in rows)
    assert max(keys.values()) == 1
    directions = {r["SkuId"].rsplit("/", 1)[1] for r in rows}
    assert directions == {"input", "cached_input", "output"}
    hours = {time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(H + 3600 * k)) for k in range(3)}
    assert {r["ChargePeriodStart"] for r in rows} == hours
    # BilledCost adds up to what the engine counted, to the nano-dollar.
    report = json.loads(summary.read_text())
    assert report["duplicates"] == 1
    billed = sum(_nano(r["BilledCost"]) for r in rows)
    expected = sum(
        round(t["cost_usd"] * NANO) for t in report["use_cases"].values()
    )  # rounded to 6 places in the summary: compare with the engine below too
    assert abs(billed - expected) <= NANO // 1_000_000 * len(report["use_cases"])
    # Owner and team of the policy, the team of the events where the policy has none.
    code_rows = [r for r in rows if "code_assistant" in r["Tags"]]
    assert json.loads(code_rows[0]["Tags"]) == {
        "spendsentry/use_case": "code_assistant",
        "spendsentry/team": "platform-eng",
        "spendsentry/owner": "#devex-ai",
    }
    house = [r for r in rows if r["ServiceName"] == "house-llm"]
    assert json.loads(house[0]["Tags"])["spendsentry/team"] == "cx"
    assert "mystery-x" not in {r["ServiceName"] for r in rows}


def test_billed_cost_is_the_engines_cost_exactly_and_list_cost_follows_the_rates(
    events_file: Path,
) -> None:
    engine = build_engine(None, None)
    ledger = FocusLedger()
    engine.on_usage = ledger.add_run
    replay([str(events_file)], engine, Sinks())
    # A late event (its minute is closed) is dead-lettered: counted by neither.
    late = UsageEvent("late-1", H + 10, "code_assistant", model="gpt-4o", input_tokens=9)
    assert [d.reason for d in engine.process([late]).rejected] == ["late"]
    rows = ledger.rows(engine.prices, engine.policies.for_use_case)
    engine_nano = sum(t.cost_nano for t in engine.stats.use_cases.values())
    assert sum(_nano(r["BilledCost"]) for r in rows) == engine_nano == ledger.total_nano
    # A priced model: BilledCost is the list price, direction by direction.
    gpt = [r for r in rows if r["ServiceName"] == "gpt-4o"]
    for r in gpt:
        assert abs(_nano(r["BilledCost"]) - _nano(r["ListCost"])) <= 3
    # Cached input is cheaper per token than input (the split follows the rates).
    per_token = {
        r["SkuId"]: _nano(r["BilledCost"]) / int(r["ConsumedQuantity"])
        for r in gpt
        if r["ChargePeriodStart"] == time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(H))
    }
    assert per_token["gpt-4o/cached_input"] < per_token["gpt-4o/input"] < per_token["gpt-4o/output"]
    # No rate known: the reported cost is split by tokens and is its own list cost.
    house = [r for r in rows if r["ServiceName"] == "house-llm"]
    assert {r["SkuId"] for r in house} == {"house-llm/input", "house-llm/output"}
    assert all(r["ListCost"] == r["BilledCost"] for r in house)


@pytest.mark.skipif(not SAMPLE.exists(), reason="the bundled sample is not in this checkout")
def test_the_bundled_sample_exports_its_whole_cost(tmp_path: Path) -> None:
    engine = build_engine(None, None)
    ledger = FocusLedger()
    engine.on_usage = ledger.add_run
    # The first hour is enough to cross several use cases, models and an hour boundary.
    with gzip.open(SAMPLE, "rb") as f:
        lines = [line for _, line in zip(range(40_000), f, strict=False)]
    part = tmp_path / "part.jsonl"
    part.write_bytes(b"".join(lines))
    replay([str(part)], engine, Sinks())
    rows = ledger.rows(engine.prices, engine.policies.for_use_case)
    assert sum(_nano(r["BilledCost"]) for r in rows) == sum(
        t.cost_nano for t in engine.stats.use_cases.values()
    )
    assert len({r["Tags"] for r in rows}) >= 5


def test_parquet_is_refused_with_the_reason(events_file: Path, tmp_path: Path, capsys) -> None:
    code = main(["replay", str(events_file), "--quiet", "--focus-out", str(tmp_path / "f.parquet")])
    assert code == 2
    assert "pyarrow" in capsys.readouterr().err


def test_decimal_and_split_keep_every_nano_dollar() -> None:
    for total, weights in ((1, [1, 1, 1]), (10**12 + 7, [3, 5, 0]), (999, [0, 0, 0])):
        parts = split_nano(total, weights)
        assert sum(parts) == total
        assert all(p >= 0 for p in parts)
    assert _nano(decimal(123_456_789_012)) == 123_456_789_012
    assert Engine.on_usage is None  # nobody listens unless asked
