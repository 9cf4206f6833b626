"""FOCUS 1.3 cost rows: accepted usage per hour, use case, model and token direction.

A :class:`FocusLedger` is handed every run of usage events the engine accepted
(``Engine.on_usage``: after dedupe, late check and pricing, so it counts what
the engine counts) and keeps integer sums per (hour, use case, provider,
model). :meth:`FocusLedger.rows` turns them into rows of the FinOps Open Cost
and Usage Specification, one per token direction (``input``, ``cached_input``,
``output``): ``BilledCost`` of a group is its cost in the engine's nano-dollars,
split across directions in proportion to their list cost (tokens x the price
book's rate) by largest remainder, so the rows of a run add up to the engine's
total to the nano-dollar. The ledger does no I/O; :func:`write_csv` writes.

>>> from spendsentry.events import UsageEvent
>>> from spendsentry.pricing import ModelRates, PriceBook
>>> book = PriceBook(overrides={"m": ModelRates(2e-6, 1e-6, 8e-6)})
>>> ledger = FocusLedger()
>>> ledger.add_run("chat", [UsageEvent("e1", 7200.0, "chat", model="m", input_tokens=1000,
...     cached_input_tokens=400, output_tokens=100, cost_usd=0.0024, team="web")])
>>> [(r["SkuId"], r["ConsumedQuantity"], r["BilledCost"]) for r in ledger.rows(book)]
[('m/input', '600', '0.0012'), ('m/cached_input', '400', '0.0004'), ('m/output', '100', '0.0008')]
>>> ledger.rows(book)[0]["ChargePeriodStart"], ledger.total_nano
('1970-01-01T02:00:00Z', 2400000)
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spendsentry.events import UsageEvent
from spendsentry.pricing import ModelRates, PriceBook
from spendsentry.windows import NANO

if TYPE_CHECKING:
    from spendsentry.engine import Engine

__all__ = [
    "COLUMNS",
    "DIRECTIONS",
    "FocusLedger",
    "closed_hours",
    "decimal",
    "hour_file",
    "split_nano",
    "write_csv",
    "write_hours",
]

HOUR = 3600
#: Token directions, in row order; each is one SKU of a model.
DIRECTIONS = ("input", "cached_input", "output")
#: The columns written, in order (FOCUS 1.3 names).
COLUMNS = (
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
    "ChargeDescription",
    "BilledCost",
    "EffectiveCost",
    "ListCost",
    "ContractedCost",
    "BillingCurrency",
    "ConsumedQuantity",
    "ConsumedUnit",
    "PricingQuantity",
    "PricingUnit",
    "ServiceCategory",
    "ServiceName",
    "ServiceProviderName",
    "SkuId",
    "SkuPriceDetails",
    "Tags",
)
#: Tags spendsentry defines carry its prefix (FOCUS: provider-defined tags are prefixed).
TAG_PREFIX = "spendsentry/"


def decimal(nano: int) -> str:
    """Nano-dollars as a FOCUS decimal: no exponent, no sign for positives, no padding.

    >>> decimal(2_400_000), decimal(5 * NANO), decimal(-1), decimal(0)
    ('0.0024', '5', '-0.000000001', '0')
    """
    sign = "-" if nano < 0 else ""
    whole, frac = divmod(abs(nano), NANO)
    text = f"{whole}.{frac:09d}".rstrip("0").rstrip(".")
    return sign + text


def split_nano(total: int, weights: list[int]) -> list[int]:
    """Split ``total`` in proportion to ``weights`` (largest remainder): parts sum to ``total``.

    All-zero weights put everything on the first part.

    >>> split_nano(10, [1, 1, 1]), split_nano(7, [0, 0, 0]), split_nano(100, [3, 0, 1])
    ([4, 3, 3], [7, 0, 0], [75, 0, 25])
    """
    whole = sum(weights)
    if whole <= 0:
        return [total] + [0] * (len(weights) - 1)
    parts = [total * w // whole for w in weights]
    remainders = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % whole), i))
    for i in remainders[: total - sum(parts)]:
        parts[i] += 1
    return parts


@dataclass(slots=True)
class _Group:
    """One (hour, use case, provider, model): integer sums only."""

    cost_nano: int = 0
    tokens: list[int] = field(default_factory=lambda: [0, 0, 0])  # in DIRECTIONS order
    team: str | None = None


#: (hour start in epoch seconds, use case, provider, model)
GroupKey = tuple[int, str, str, str]


class FocusLedger:
    """Hourly sums of accepted, priced usage; rows of FOCUS 1.3 on demand."""

    def __init__(self) -> None:
        self.groups: dict[GroupKey, _Group] = {}
        #: Every nano-dollar added (the sum of all rows' BilledCost).
        self.total_nano = 0

    def add_run(self, use_case: str, events: Iterable[UsageEvent]) -> None:
        """Count a run of events the engine accepted (``Engine.on_usage``'s signature).

        Unpriced events (``cost_usd`` None) count nothing, as in the engine;
        events without tokens and cost (tool calls, retrievals) make no row.
        """
        groups = self.groups
        for e in events:
            usd = e.cost_usd
            if usd is None:
                continue
            cost = round(usd * NANO)  # the engine's rounding: the totals agree exactly
            cached = min(e.cached_input_tokens, e.input_tokens)
            if not cost and not e.input_tokens and not e.output_tokens:
                continue
            key = (int(e.ts // HOUR) * HOUR, use_case, e.provider or "", e.model or "")
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group()
            group.cost_nano += cost
            tokens = group.tokens
            tokens[0] += e.input_tokens - cached
            tokens[1] += cached
            tokens[2] += e.output_tokens
            if group.team is None and e.team:
                group.team = e.team
            self.total_nano += cost

    def to_data(self) -> list[list[Any]]:
        """Plain data for a worker snapshot: one row per group.

        >>> ledger = FocusLedger()
        >>> event = UsageEvent("e", 60.0, "u", model="m", input_tokens=5, cost_usd=1e-6)
        >>> ledger.add_run("u", [event])
        >>> ledger.to_data()
        [[0, 'u', '', 'm', 1000, 5, 0, 0, None]]
        >>> FocusLedger.from_data(ledger.to_data()).total_nano
        1000
        """
        return [[*key, g.cost_nano, *g.tokens, g.team] for key, g in sorted(self.groups.items())]

    @classmethod
    def from_data(cls, rows: Iterable[Any]) -> FocusLedger:
        """A ledger from :meth:`to_data` output (``ValueError`` for a row of the wrong shape)."""
        ledger = cls()
        for row in rows:
            if not isinstance(row, list) or len(row) != 9:
                raise ValueError(f"a FOCUS ledger row is 9 values, not {row!r:.80}")
            hour, use_case, provider, model, cost, t0, t1, t2, team = row
            ints = (hour, cost, t0, t1, t2)
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints):
                raise ValueError(f"a FOCUS ledger row has a non-integer sum: {row!r:.80}")
            if not all(isinstance(v, str) for v in (use_case, provider, model)):
                raise ValueError(f"a FOCUS ledger row has a non-string name: {row!r:.80}")
            team = team if isinstance(team, str) else None
            ledger.groups[(hour, use_case, provider, model)] = _Group(cost, [t0, t1, t2], team)
            ledger.total_nano += cost
        return ledger

    def hours(self) -> list[int]:
        """The hours (epoch seconds of their start) that hold data, oldest first."""
        return sorted({key[0] for key in self.groups})

    def pop_until(self, hour: int) -> FocusLedger:
        """Take the groups of hours before ``hour`` out into a ledger of their own."""
        taken = FocusLedger()
        for key in [k for k in self.groups if k[0] < hour]:
            group = self.groups.pop(key)
            taken.groups[key] = group
            taken.total_nano += group.cost_nano
            self.total_nano -= group.cost_nano
        return taken

    def rows(
        self,
        prices: PriceBook,
        policy_of: Callable[[str], Any] | None = None,
    ) -> list[dict[str, str]]:
        """The FOCUS rows, sorted by hour, use case, provider, model, direction.

        ``policy_of(use_case)`` (e.g. ``PolicySet.for_use_case``) gives the
        owner and team for the tags; the team of the events is used when the
        policy names none.
        """
        out: list[dict[str, str]] = []
        for key in sorted(self.groups):
            out.extend(_group_rows(key, self.groups[key], prices, policy_of))
        return out


def closed_hours(ledger: FocusLedger, engine: Engine) -> dict[int, list[dict[str, str]]]:
    """Take the hours whose every minute ``engine`` has closed out of ``ledger``, as rows per hour.

    No event can add to such an hour any more (it would be late), so its rows are final.

    >>> from spendsentry.engine import Engine
    >>> engine, ledger = Engine(), FocusLedger()
    >>> engine.on_usage = ledger.add_run
    >>> out = engine.process([UsageEvent("e", 3599.0, "u", model="m", input_tokens=5,
    ...                                  cost_usd=1e-6)])
    >>> closed_hours(ledger, engine), engine.advance(3600.0 + 120 + 60).alerts
    ({}, [])
    >>> [(hour, len(rows)) for hour, rows in closed_hours(ledger, engine).items()]
    [(0, 1)]
    """
    if engine.closed_until is None or not ledger.groups:
        return {}
    done = ledger.pop_until(int(engine.closed_until * 60 // HOUR) * HOUR)
    rows: dict[int, list[dict[str, str]]] = {}
    for hour in done.hours():
        part = FocusLedger()
        part.groups = {k: g for k, g in done.groups.items() if k[0] == hour}
        rows[hour] = part.rows(engine.prices, engine.policies.for_use_case)
    return rows


def _group_rows(
    key: GroupKey,
    group: _Group,
    prices: PriceBook,
    policy_of: Callable[[str], Any] | None,
) -> Iterator[dict[str, str]]:
    hour, use_case, provider, model = key
    rates = prices.rates(model, provider or None) if model else None
    # List cost of each direction in nano-dollars: the weights of the split.
    list_nano = _list_nano(group.tokens, rates)
    billed = split_nano(group.cost_nano, list_nano if rates is not None else group.tokens)
    policy = policy_of(use_case) if policy_of is not None else None
    tags = {
        f"{TAG_PREFIX}use_case": use_case,
        f"{TAG_PREFIX}team": getattr(policy, "team", None) or group.team,
        f"{TAG_PREFIX}owner": getattr(policy, "owner", None),
    }
    tags_json = json.dumps({k: v for k, v in tags.items() if v}, sort_keys=True)
    start, end = _iso(hour), _iso(hour + HOUR)
    period_start, period_end = _month(hour)
    name = model or "unknown"
    for i, direction in enumerate(DIRECTIONS):
        tokens, cost = group.tokens[i], billed[i]
        if not tokens and not cost:
            continue
        # Without a rate the reported cost is the only price known: it is the list cost.
        listed = list_nano[i] if rates is not None else cost
        yield {
            "BillingPeriodStart": period_start,
            "BillingPeriodEnd": period_end,
            "ChargePeriodStart": start,
            "ChargePeriodEnd": end,
            "ChargeCategory": "Usage",
            "ChargeDescription": f"{name} {direction.replace('_', ' ')} tokens for {use_case}",
            "BilledCost": decimal(cost),
            "EffectiveCost": decimal(cost),
            "ListCost": decimal(listed),
            "ContractedCost": decimal(cost),
            "BillingCurrency": "USD",
            "ConsumedQuantity": str(tokens),
            "ConsumedUnit": "Tokens",
            "PricingQuantity": str(tokens),
            "PricingUnit": "Tokens",
            "ServiceCategory": "AI and Machine Learning",
            "ServiceName": name,
            "ServiceProviderName": provider or "unknown",
            "SkuId": f"{name}/{direction}",
            "SkuPriceDetails": json.dumps({"TokenDirection": direction}),
            "Tags": tags_json,
        }


def _list_nano(tokens: list[int], rates: ModelRates | None) -> list[int]:
    if rates is None:
        return [0, 0, 0]
    per_token = (rates.input, rates.cached_input, rates.output)
    return [round(n * rate * NANO) for n, rate in zip(tokens, per_token, strict=True)]


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _month(epoch: int) -> tuple[str, str]:
    """The calendar month (UTC) holding ``epoch``: the billing period."""
    day = datetime.fromtimestamp(epoch, UTC)
    start = day.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start.strftime("%Y-%m-%dT%H:%M:%SZ"), end.strftime("%Y-%m-%dT%H:%M:%SZ")


def write_csv(path: str | Path, rows: Iterable[dict[str, str]]) -> int:
    """Write ``rows`` as CSV with a header of :data:`COLUMNS`; returns the row count.

    The file is written whole to ``<path>.tmp`` and renamed, so a reader never
    sees half an hour.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    n = 0
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            n += 1
    tmp.replace(target)
    return n


def hour_file(directory: str | Path, hour: int, partition: int | None) -> Path:
    """Where the worker writes one hour of one input partition.

    >>> hour_file("out", 1793610000, 2).name
    'focus-2026-11-02T09Z-p2.csv'
    """
    stamp = datetime.fromtimestamp(hour, UTC).strftime("%Y-%m-%dT%HZ")
    suffix = "" if partition is None else f"-p{partition}"
    return Path(directory) / f"focus-{stamp}{suffix}.csv"


def write_hours(
    directory: str | Path, hours: Iterable[tuple[int | None, int, list[dict[str, str]]]]
) -> list[Path]:
    """Write each (partition, hour, rows) to its :func:`hour_file`, whole (temp file, rename).

    Rewriting an hour gives the same bytes (sums are integers), so a worker
    that re-reads records after a restart rewrites the file it wrote before.
    """
    written = []
    for partition, hour, rows in hours:
        path = hour_file(directory, hour, partition)
        write_csv(path, rows)
        written.append(path)
    return written
