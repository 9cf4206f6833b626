"""What drives a use case's extra spend: cost per dimension value, recent against learned.

Each closed minute's spend is split by dimension value (model, agent, tool,
session, team, environment, agent and model together, and the customer /
tenant / project / feature / tag fields events carry in their extra fields).
Per dimension a :class:`HeavyHitters` keeps at most ``capacity`` values (a
space-saving counter: a new value takes the slot of the value with the least
recent spend and inherits its numbers, so memory is bounded whatever the
cardinality, and heavy values are never evicted by light ones), each with two
exponentially weighted rates of spend per minute: recent (half-life 5
minutes) and learned (half-life an hour, learned only while the use case has
no open incident, so an incident never becomes its own baseline).

A value's *excess* is its recent rate over its learned one; its *share* is
that over the use case's whole excess. :meth:`SpendDrivers.drivers` ranks
them, and :func:`headline` says the biggest in words ("82% of the excess is
agent planner on gpt-4o").

>>> d = SpendDrivers(capacity=4)
>>> for minute in range(120):
...     d.close_minute({("gpt-4o", "planner", None, None, None, None): 100_000_000,
...                     ("gpt-4o", "writer", None, None, None, None): 100_000_000}, {}, True)
>>> for minute in range(10):
...     d.close_minute({("gpt-4o", "planner", None, None, None, None): 900_000_000,
...                     ("gpt-4o", "writer", None, None, None, None): 100_000_000}, {}, False)
>>> top = d.drivers()
>>> [(t["dimension"], t["value"], t["share"]) for t in top[:2]]
[('agent+model', 'planner on gpt-4o', 1.0), ('agent', 'planner', 1.0)]
>>> headline(top)
'100% of the excess is agent planner on gpt-4o'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "DIMENSIONS",
    "TAG_FIELDS",
    "HeavyHitters",
    "SpendDrivers",
    "SpendKey",
    "headline",
]

NANO = 1_000_000_000
#: The dimensions of a :data:`SpendKey`, in its order.
DIMENSIONS: tuple[str, ...] = ("model", "agent", "tool", "session", "team", "environment")
#: (model, agent_id, tool_name, session_id, team, environment) of one event.
SpendKey = tuple[str | None, str | None, str | None, str | None, str | None, str | None]
#: Fields of an event's extra fields that name who or what the spend is for.
TAG_FIELDS: tuple[str, ...] = ("customer", "customer_id", "tenant", "project", "feature")
PAIR = "agent+model"
#: Half-lives (minutes) of the recent and the learned rate.
FAST_HALF_LIFE = 5.0
SLOW_HALF_LIFE = 60.0
_FAST = 0.5 ** (1.0 / FAST_HALF_LIFE)
_SLOW = 0.5 ** (1.0 / SLOW_HALF_LIFE)
#: Extra-field dimensions tracked per use case (the first seen).
MAX_TAG_DIMENSIONS = 8
#: A value that was already this share of the learned spend says nothing about
#: what changed (a use case with one model: "100% of the excess is gpt-4o").
_ALWAYS_ALL = 0.95
#: The share of the excess below which a value is named as the largest, not as
#: what drives it (a whole-traffic rise spreads over every session).
DRIVES = 0.25


class HeavyHitters:
    """A space-saving counter of one dimension: value -> [recent, learned] USD per minute.

    >>> h = HeavyHitters(capacity=2)
    >>> h.update({"a": 1.0, "b": 0.5, "c": 0.1}, learn=True)
    >>> sorted(h.rates)  # "c" took the slot of the lightest, "b"
    ['a', 'c']
    """

    __slots__ = ("capacity", "rates")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.rates: dict[str, list[float]] = {}

    def update(self, costs: Mapping[str, float], *, learn: bool) -> None:
        """Decay every tracked value by a minute and add the minute's ``costs`` (USD)."""
        rates = self.rates
        for rate in rates.values():
            rate[0] *= _FAST
            if learn:
                rate[1] *= _SLOW
        # Heaviest first (ties by name): the same minute fills the slots the same way.
        for value, cost in sorted(costs.items(), key=lambda kv: (-kv[1], kv[0])):
            found = rates.get(value)
            if found is not None:
                rate = found
            elif len(rates) < self.capacity:
                rate = rates[value] = [0.0, 0.0]
            else:
                victim = min(rates, key=lambda v: (rates[v][0], v))
                rate = rates[value] = rates.pop(victim)  # inherits its numbers
            rate[0] += (1.0 - _FAST) * cost
            if learn:
                rate[1] += (1.0 - _SLOW) * cost


class SpendDrivers:
    """One use case's spend by dimension value, bounded (see the module doc)."""

    def __init__(self, capacity: int = 16) -> None:
        self.capacity = capacity
        self.dimensions: dict[str, HeavyHitters] = {}
        #: The use case's whole recent and learned spend per minute (USD).
        self.total = [0.0, 0.0]
        #: Minutes folded in, and minutes learned: the weighted means start at
        #: zero, so they are divided by the weight their minutes hold so far.
        self.minutes = [0, 0]

    def close_minute(
        self,
        spend: Mapping[SpendKey, int],
        tags: Mapping[tuple[str, str], int],
        learn: bool,
    ) -> None:
        """Fold one closed minute's spend (nano-USD by key and by tag) into the rates."""
        by_dim: dict[str, dict[str, float]] = {name: {} for name in (*DIMENSIONS, PAIR)}
        minute_total = 0
        for key, nano in spend.items():
            minute_total += nano
            usd = nano / NANO
            for name, value in zip(DIMENSIONS, key, strict=True):
                if value:
                    costs = by_dim[name]
                    costs[value] = costs.get(value, 0.0) + usd
            if key[0] and key[1]:
                pair = f"{key[1]} on {key[0]}"
                by_dim[PAIR][pair] = by_dim[PAIR].get(pair, 0.0) + usd
        for (field, value), nano in tags.items():
            costs = by_dim.setdefault(field, {})
            costs[value] = costs.get(value, 0.0) + nano / NANO
        for name, costs in by_dim.items():
            hitters = self.dimensions.get(name)
            if hitters is None:
                if not costs or self._tag_dimensions_full(name):
                    continue
                hitters = self.dimensions[name] = HeavyHitters(self.capacity)
            hitters.update(costs, learn=learn)
        usd = minute_total / NANO
        self.total[0] = self.total[0] * _FAST + (1.0 - _FAST) * usd
        self.minutes[0] += 1
        if learn:
            self.total[1] = self.total[1] * _SLOW + (1.0 - _SLOW) * usd
            self.minutes[1] += 1

    def _tag_dimensions_full(self, name: str) -> bool:
        if name in DIMENSIONS or name == PAIR:
            return False
        tags = sum(1 for d in self.dimensions if d not in DIMENSIONS and d != PAIR)
        return tags >= MAX_TAG_DIMENSIONS

    def drivers(self, limit: int = 6) -> list[dict[str, Any]]:
        """The values that drive the excess, biggest share first (at most ``limit``).

        Per dimension its top value (and a second one holding at least a fifth
        of the excess); none when spend is not above its learned level.
        """
        fast_weight = 1.0 - _FAST ** self.minutes[0]
        slow_weight = 1.0 - _SLOW ** self.minutes[1]
        if fast_weight <= 0.0 or slow_weight <= 0.0:
            return []  # nothing learned yet: no level to be above
        recent, learned = self.total[0] / fast_weight, self.total[1] / slow_weight
        excess = recent - learned
        if excess <= 0.0:
            return []
        found: list[dict[str, Any]] = []
        for name, hitters in sorted(self.dimensions.items()):
            ranked = sorted(
                (
                    (r[0] / fast_weight - r[1] / slow_weight, value, r[1] / slow_weight)
                    for value, r in hitters.rates.items()
                ),
                key=lambda t: (-t[0], t[1]),
            )
            for i, (value_excess, value, value_learned) in enumerate(ranked[:2]):
                share = value_excess / excess
                if value_excess <= 0.0 or (i == 1 and share < 0.2):
                    break
                if learned > 0.0 and value_learned / learned >= _ALWAYS_ALL:
                    break
                found.append(
                    {
                        "dimension": name,
                        "value": value,
                        "excess_cost_per_hour_usd": round(value_excess * 60.0, 4),
                        "share": round(min(1.0, share), 3),
                        # Its part of the spend at the learned level: what a
                        # throttle of this value alone may keep (actions.cause).
                        "usual_share": round(min(1.0, value_learned / learned), 3)
                        if learned > 0.0
                        else 0.0,
                    }
                )
        found.sort(key=lambda d: (-d["share"], d["dimension"] != PAIR, d["dimension"]))
        return found[:limit]


def headline(drivers: list[dict[str, Any]]) -> str | None:
    """The biggest driver in words; a pair (agent on model) when it says as much.

    >>> headline([{"dimension": "model", "value": "gpt-4o", "share": 0.9},
    ...           {"dimension": "agent+model", "value": "planner on gpt-4o", "share": 0.82}])
    '82% of the excess is agent planner on gpt-4o'
    >>> headline([{"dimension": "session", "value": "s1", "share": 0.06}])
    'No single model, agent, tool or session drives the excess (largest: session s1, 6%)'
    >>> headline([]) is None
    True
    """
    if not drivers:
        return None
    best = drivers[0]
    if best["share"] < DRIVES:
        return (
            "No single model, agent, tool or session drives the excess (largest: "
            f"{best['dimension']} {best['value']}, {round(best['share'] * 100)}%)"
        )
    pair = next((d for d in drivers if d["dimension"] == PAIR), None)
    if pair is not None and pair["share"] >= 0.8 * best["share"]:
        best = pair
    name = best["dimension"]
    what = {
        PAIR: "agent",
        "environment": "environment",
    }.get(name, name)
    return f"{round(best['share'] * 100)}% of the excess is {what} {best['value']}"
