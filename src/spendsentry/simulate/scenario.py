"""A labelled run of synthetic AI traffic: events in event-time order plus incident labels.

:class:`Scenario` combines the twelve use-case shapes (:mod:`.traffic`), a plan of
incidents (:mod:`.incidents`) and benign bursts, and generates events minute by
minute, so memory holds only the sessions still in flight however long the run.
The same seed always gives the same bytes. ``calendar=True`` swaps the
compressed diurnal curve for a calendar (:mod:`.calendar`): weekdays and
weekends, office hours in each use case's time zone, nightly and month-start
batches, for runs of a week or more. Token sizes and burstiness come from
the Azure Public Dataset (Microsoft), AzureLLMInferenceTrace, CC-BY 4.0.

>>> sc = Scenario(seed=3, hours=0.25, no_incidents=True)
>>> events = list(sc.iter_events())
>>> len(events) > 1000, events[0]["ts"] <= events[-1]["ts"]
(True, True)
>>> sorted(sc.labels())
['benign_bursts', 'hours', 'incidents', 'seed', 'start', 'use_cases']
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson

from spendsentry.simulate.calendar import (
    CALENDAR_START,
    DEFAULT_CALENDAR,
    LoadProfile,
    load_table,
)
from spendsentry.simulate.incidents import (
    NEWCOMER_KINDS,
    NORMAL,
    Effects,
    Incident,
    default_params,
    incident_effects_by_use_case,
    intensity,
    parse_rfc3339,
    plan_incidents,
    rfc3339,
)
from spendsentry.simulate.newcomers import Newcomer, NewcomerTraffic, plan_newcomers
from spendsentry.simulate.profile import TraceProfile
from spendsentry.simulate.traffic import (
    DEFAULT_USE_CASES,
    MINUTE_MS,
    BenignBurst,
    Calendar,
    UseCaseTraffic,
    diurnal_factor,
    plan_bursts,
)

__all__ = ["CALENDAR_START", "DEFAULT_START", "Scenario"]

DEFAULT_START = "2026-11-02T00:00:00Z"
_WRITE_CHUNK = 4096  # events per write call


class Scenario:
    """Synthetic usage and outcome events for the dozen use cases, with labels.

    Parameters
    ----------
    seed
        Everything random derives from it (each use case has its own stream, so
        an incident on one use case does not reshuffle the others).
    start
        Run start (RFC 3339 or an aware datetime); must fall on a whole second.
        Defaults to :data:`DEFAULT_START` (a Monday), or in calendar mode to
        :data:`CALENDAR_START` (a Saturday).
    hours
        Run length (fractions allowed; rounded to whole minutes).
    incidents
        ``None`` for the default plan (one incident of every kind that fits),
        a sequence of kind names to plan just those, or :class:`Incident` values
        to use as given. Effects apply with minute resolution.
    no_incidents
        Plain traffic with no incidents at all.
    calendar
        ``True`` for the default calendar (:data:`DEFAULT_CALENDAR`), or a
        use case -> :class:`LoadProfile` mapping covering every use case: the
        load then follows weekdays, weekends, local office hours and scheduled
        batches, and incidents are placed in their use case's active hours.
        ``False`` (the default) keeps the compressed diurnal day.
    """

    def __init__(
        self,
        seed: int = 1,
        start: str | datetime | None = None,
        hours: float = 24.0,
        incidents: Sequence[str | Incident] | None = None,
        no_incidents: bool = False,
        calendar: bool | Mapping[str, LoadProfile] = False,
    ) -> None:
        if hours <= 0:
            raise ValueError("hours must be positive")
        if no_incidents and incidents:
            raise ValueError("give incidents or no_incidents, not both")
        self.seed = seed
        if start is None:
            start = CALENDAR_START if calendar else DEFAULT_START
        self.start = parse_rfc3339(start) if isinstance(start, str) else start
        if self.start.tzinfo is None:
            raise ValueError("start must carry a UTC offset")
        if self.start.microsecond:
            raise ValueError("start must fall on a whole second")
        self.hours = hours
        self.total_minutes = max(1, round(hours * 60))
        self.shapes = DEFAULT_USE_CASES
        self.profile = TraceProfile.load()
        self.calendar: Mapping[str, LoadProfile] | None = None
        self._loads: dict[str, list[float]] = {}
        if calendar:
            self.calendar = DEFAULT_CALENDAR if calendar is True else calendar
            missing = [s.name for s in self.shapes if s.name not in self.calendar]
            if missing:
                raise ValueError(f"calendar lacks use cases {missing}")
            self._loads = {
                s.name: load_table(self.calendar[s.name], self.start, self.total_minutes)
                for s in self.shapes
            }
        #: How many events the last :meth:`write` wrote.
        self.events_written = 0
        self.incidents = self._plan(incidents, no_incidents)
        windows = [
            (i.use_case, self._minute_of(i.start), self._minute_of(i.end)) for i in self.incidents
        ]
        self.bursts: list[BenignBurst] = plan_bursts(
            self._rng("bursts"), self.total_minutes, windows, shapes=self.shapes
        )
        #: Use cases that appear mid-run with no policy (:mod:`.newcomers`); the
        #: labelled ones are incidents too, numbered after the others.
        self.newcomers: list[Newcomer] = []
        if not no_incidents and (incidents is None or any(k in NEWCOMER_KINDS for k in incidents)):
            self.newcomers = plan_newcomers(
                self._rng("newcomers"),
                self.start,
                self.total_minutes,
                free=self._has_traffic,
                busy={i.use_case for i in self.incidents},
            )
        labelled = [n for n in self.newcomers if n.labelled]
        self.incidents = sorted(
            [*self.incidents, *(n.incident(i) for i, n in enumerate(labelled, 1))],
            key=lambda i: (i.start, i.use_case),
        )

    def _rng(self, stream: str) -> random.Random:
        # A string seed is hashed with SHA-512: stable across processes and versions.
        return random.Random(f"spendsentry-sim:{self.seed}:{stream}")

    def _minute_of(self, when: datetime) -> int:
        return int((when - self.start).total_seconds() // 60)

    def _plan(
        self, incidents: Sequence[str | Incident] | None, no_incidents: bool
    ) -> list[Incident]:
        if no_incidents:
            return []
        use_cases = [s.name for s in self.shapes]
        if incidents is None or all(isinstance(i, str) for i in incidents):
            kinds = None if incidents is None else [str(i) for i in incidents]
            return plan_incidents(
                self._rng("incidents"),
                self.start,
                self.hours,
                kinds,
                use_cases=use_cases,
                active=self._has_traffic,
            )
        given = [i for i in incidents if isinstance(i, Incident)]
        if len(given) != len(incidents):
            raise ValueError("incidents must be all kind names or all Incident values")
        for a in given:
            if a.use_case not in use_cases:
                raise ValueError(f"incident {a.incident_id}: unknown use case {a.use_case!r}")
            for b in given:
                if a is not b and a.use_case == b.use_case and a.start < b.end and b.start < a.end:
                    raise ValueError(f"incidents {a.incident_id} and {b.incident_id} overlap")
        # Record the effect sizes actually used, defaults included, in the labels.
        given = [replace(i, params={**default_params(i), **i.params}) for i in given]
        return sorted(given, key=lambda i: (i.start, i.use_case))

    def _has_traffic(self, use_case: str, first: int, end: int) -> bool:
        """Whether the use case's diurnal curve is non-zero in every minute of [first, end).

        In calendar mode: whether it is in its active hours, at half its peak
        load or more (an incident at night on an office use case would change a
        trickle, which tells a detector nothing).
        """
        if self._loads:
            table = self._loads[use_case]
            floor = 0.5 * max(table)
            return all(table[m] >= floor for m in range(first, min(end, len(table))))
        shape = next(s for s in self.shapes if s.name == use_case)
        if not shape.office_hours:
            return True
        calendar = self._calendar()
        return all(diurnal_factor(shape, *calendar.at(m)) > 0 for m in range(first, end))

    def _calendar(self) -> Calendar:
        return Calendar(self.start.hour * 60 + self.start.minute, self.start.weekday())

    def _effects_tables(self) -> dict[str, dict[int, Effects]]:
        """Per use case: run minute -> effects, only for minutes inside an incident."""
        tables: dict[str, dict[int, Effects]] = {s.name: {} for s in self.shapes}
        for inc in self.incidents:
            if inc.kind in NEWCOMER_KINDS:
                continue  # traffic of its own (NewcomerTraffic), not an effect
            first = max(0, self._minute_of(inc.start))
            last = min(self.total_minutes, self._minute_of(inc.end - timedelta(microseconds=1)))
            for minute in range(first, last + 1):
                # A ramp is evaluated at the middle of the minute.
                mid = self.start + timedelta(minutes=minute, seconds=30)
                level = intensity(inc, max(inc.start, min(mid, inc.end - timedelta(seconds=1))))
                if level > 0:
                    # Most kinds touch their own use case; a shared-embedding
                    # incident also its source pipeline.
                    for use_case, effects in incident_effects_by_use_case(inc, level).items():
                        tables[use_case][minute] = effects
        return tables

    def iter_events(self) -> Iterator[dict[str, Any]]:
        """Yield every event of the run as a dict, in event-time order."""
        end_ms = self.total_minutes * MINUTE_MS
        buckets: defaultdict[int, list[tuple[int, dict[str, Any]]]] = defaultdict(list)

        def emit(ms: int, event: dict[str, Any]) -> None:
            if ms < end_ms:
                buckets[ms // MINUTE_MS].append((ms, event))

        calendar = self._calendar()
        tables = self._effects_tables()
        generators = [
            UseCaseTraffic(
                shape,
                self.profile,
                self._rng(shape.name),
                calendar,
                _lookup(tables[shape.name]),
                emit,
                bursts=self.bursts,
                load=self._loads.get(shape.name),
            )
            for shape in self.shapes
        ]
        newcomers = [
            NewcomerTraffic(n, self._rng(f"newcomer:{n.use_case}"), emit) for n in self.newcomers
        ]
        start_ms = round(self.start.timestamp() * 1000)
        prefixes: dict[int, str] = {}
        seq = 0
        id_prefix = f"ev{self.seed}-"
        by_time = itemgetter(0)
        for minute in range(self.total_minutes):
            for generator in generators:
                generator.generate_minute(minute)
            for newcomer in newcomers:
                newcomer.generate_minute(minute)
            batch = buckets.pop(minute, [])
            batch.sort(key=by_time)  # stable: same-ms events keep generation order
            for ms, event in batch:
                absolute = start_ms + ms
                abs_minute, in_minute = divmod(absolute, MINUTE_MS)
                prefix = prefixes.get(abs_minute)
                if prefix is None:
                    prefixes.clear()
                    when = datetime.fromtimestamp(abs_minute * 60, tz=UTC)
                    prefix = prefixes[abs_minute] = when.strftime("%Y-%m-%dT%H:%M:")
                seq += 1
                event["event_id"] = f"{id_prefix}{seq:08d}"
                event["ts"] = f"{prefix}{in_minute // 1000:02d}.{in_minute % 1000:03d}Z"
                yield event

    def labels(self) -> dict[str, Any]:
        """The run's labels (see the module docs of :mod:`spendsentry.simulate`)."""
        labels: dict[str, Any] = {
            "seed": self.seed,
            "start": rfc3339(self.start),
            "hours": self.hours,
            "use_cases": [s.name for s in self.shapes],
            "incidents": [i.to_label() for i in self.incidents],
            "benign_bursts": [
                {
                    "use_case": b.use_case,
                    "start": rfc3339(self.start + timedelta(minutes=b.start_minute)),
                    "end": rfc3339(self.start + timedelta(minutes=b.start_minute + b.minutes)),
                    "factor": b.factor,
                }
                for b in self.bursts
            ],
        }
        if self.newcomers:
            labels["newcomers"] = [n.to_label() for n in self.newcomers]
        if self.calendar is not None:
            labels["calendar"] = {s.name: self.calendar[s.name].to_label() for s in self.shapes}
        return labels

    def write(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write ``events.jsonl`` and ``labels.json`` into ``out_dir``; return their paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        events_path, labels_path = out / "events.jsonl", out / "labels.json"
        dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
        count = 0
        chunk: list[bytes] = []
        with events_path.open("wb") as fh:
            for event in self.iter_events():
                chunk.append(dumps(event, option=newline))
                if len(chunk) >= _WRITE_CHUNK:
                    fh.write(b"".join(chunk))
                    count += len(chunk)
                    chunk.clear()
            fh.write(b"".join(chunk))
            count += len(chunk)
        labels_path.write_bytes(orjson.dumps(self.labels(), option=orjson.OPT_INDENT_2) + b"\n")
        self.events_written = count
        return events_path, labels_path


def _lookup(table: dict[int, Effects]) -> Callable[[int], Effects]:
    """``minute -> Effects``, NORMAL outside incidents (a dict hit per call)."""
    get = table.get

    def effects(minute: int) -> Effects:
        return get(minute, NORMAL)

    return effects
