"""Where a stream starts: the first minute of the bulk of its records, not of its oldest one."""

from __future__ import annotations

from collections.abc import Mapping


def bulk_start(weights: Mapping[int, int], gap_minutes: int) -> int | None:
    """The first minute of the group of minutes holding the most records.

    ``weights`` counts records per minute. Minutes are split into groups
    wherever more than ``gap_minutes`` pass without a record; the heaviest
    group wins (the later one on a tie). So one absurd record (a clock at
    zero, a year-old log line) cannot make the engine walk every minute since.
    None when there are no records.

    >>> bulk_start({0: 1, 100_000: 3, 100_001: 2}, gap_minutes=10_080)
    100000
    >>> bulk_start({5: 2, 9: 1}, gap_minutes=10)
    5
    >>> bulk_start({}, gap_minutes=10) is None
    True
    """
    best_start, best_weight = None, -1
    group_start, group_weight, previous = 0, 0, None
    for minute in sorted(weights):
        if previous is None or minute - previous > gap_minutes:
            group_start, group_weight = minute, 0
        group_weight += weights[minute]
        previous = minute
        if group_weight >= best_weight:
            best_start, best_weight = group_start, group_weight
    return best_start
