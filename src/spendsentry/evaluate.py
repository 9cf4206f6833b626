"""Score alerts against incident labels, and against a static-threshold baseline.

Rules (``spendsentry evaluate``):

* Only the first ``firing`` record of each ``alert_id`` counts as an alert;
  later updates (``escalated``, ``resolved``, repeats) are ignored.
* An incident is *diagnosed* when an alert of its kind on its use case is
  detected between the incident's start and its end + 15 min (the grace);
  the detection delay is ``detected_at - start`` in event time. Delays are also
  given over steps alone, and a ramp counts as caught *within the ramp* when it
  is diagnosed before it reaches full strength (``ramp_end``): a gradual
  regression is judged by whether it is seen while it is still growing.
* An alert that diagnoses nothing is *collateral* when its span
  ``[started_at, detected_at]`` overlaps an incident (with grace) on the same
  use case (another kind, or too late), and *false* otherwise. A ``budget_burn``
  alert is also collateral of an incident on its use case earlier the same UTC
  day: the day's budget counts that incident's spend (an hourly or monthly
  budget is judged the same way, by the day, for simplicity). False alerts are
  also given per 100 use-case-hours (use cases x hours of the labels).
* The baseline is how gateways alert today: per use case, the cost of the last
  60 minutes (evaluated at the end of every minute) over K x the policy's
  ``cost_per_hour_usd``, or, without one, over K x twice the mean hourly cost
  of the first 2 h, fires a ``cost_spike`` alert (once per excursion). It cannot
  tell kinds apart, so its alert diagnoses any incident on its use case.
* **Pages per incident**: the distinct ``incident_id`` values (an alert without one,
  written before alerts were grouped, is its own incident: one page per
  ``alert_id``) among the alerts whose span overlaps a labelled incident (its
  diagnoses and overlapping collateral; a ``budget_burn`` hours later the same
  day is a page of its own), averaged over the diagnosed incidents.
* **Budget warnings** (``budget_threshold``) are not scored: they say a level
  of spend was reached, which ordinary traffic does, not that something is
  wrong; they are counted apart (``budget_warnings``: budget periods warned).
* **Root cause**: the cause the first page for a labelled incident names, as
  its last ``firing`` record states it (``root_cause``; without one, the kind
  of that first page: what on-call was told first); it is right when it is
  the labelled kind.

Everything is read the way the rest of spendsentry reads it: alerts as
:class:`~spendsentry.messages.AlertView` (the message vocabulary's view of an
alert message), hourly budgets from a :class:`~spendsentry.policy.PolicySet`
(validated like the engine's), events through the replay reader and decoder
(:func:`spendsentry.replay.read_events`), priced by a
:class:`~spendsentry.pricing.PriceBook`.

>>> from datetime import UTC, datetime
>>> t0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
>>> labels = Labels(t0, 24.0, ["support_chat"], [Incident(
...     "i1", "cost_spike", "support_chat", "step", t0, t0 + timedelta(minutes=30))])
>>> at = t0.timestamp()
>>> alert = Alert("a1", "cost_spike", "support_chat", "warning", "firing", at + 240, at + 60)
>>> s = score(labels, [alert])
>>> s.total.diagnosed, s.total.median_delay_min, s.total.false_alerts
(1, 4.0, 0)
"""

from __future__ import annotations

import hashlib
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from spendsentry.budget_periods import PERIOD_KINDS
from spendsentry.events import UsageEvent
from spendsentry.feedback import sensitivity as feedback_sensitivity
from spendsentry.messages.alert import AlertView
from spendsentry.messages.control import ControlAction
from spendsentry.policy import PolicySet
from spendsentry.pricing import PriceBook
from spendsentry.simulate.incidents import KINDS, Incident, parse_rfc3339, rfc3339

__all__ = [
    "GRACE",
    "Alert",
    "EvaluationReport",
    "KindRow",
    "Labels",
    "Score",
    "evaluate",
    "format_report",
    "read_alerts",
    "read_hourly_budgets",
    "read_labels",
    "score",
    "static_threshold_alerts",
]

#: How long after an incident's end a detection still counts.
GRACE = timedelta(minutes=15)
BASELINE_NAME = "static-threshold baseline"
#: An alert as scored: the first ``firing`` message of its ``alert_id`` (the
#: vocabulary's view, under the name this module always gave it).
Alert = AlertView


@dataclass(frozen=True, slots=True)
class Labels:
    """What ``labels.json`` says: the run window, its use cases and incidents."""

    start: datetime
    hours: float
    use_cases: list[str]
    incidents: list[Incident]

    @property
    def end(self) -> datetime:
        return self.start + timedelta(hours=self.hours)


@dataclass(slots=True)
class KindRow:
    """Per-kind (or total) tally of one detector's results."""

    kind: str
    incidents: int = 0
    diagnosed: int = 0
    median_delay_min: float | None = None
    max_delay_min: float | None = None
    false_alerts: int = 0
    collateral_alerts: int = 0
    #: Median delay over step incidents alone (ramps are judged by ``ramps_within``).
    step_median_delay_min: float | None = None
    ramps: int = 0
    #: Ramps diagnosed before they reached full strength.
    ramps_within: int = 0


@dataclass(slots=True)
class IncidentResult:
    incident_id: str
    kind: str
    use_case: str
    diagnosed: bool
    alert_id: str | None = None
    delay_min: float | None = None
    shape: str = "step"
    #: Minutes from start to full strength (ramps only).
    ramp_min: float | None = None
    #: Distinct incidents (pages) among the alerts overlapping it.
    pages: int = 0
    #: The cause its first page names (see the module rules).
    root_cause: str | None = None

    @property
    def within_ramp(self) -> bool:
        """A ramp diagnosed before it reached full strength."""
        return (
            self.ramp_min is not None
            and self.delay_min is not None
            and self.delay_min <= self.ramp_min
        )


@dataclass(slots=True)
class AlertVerdict:
    alert_id: str
    kind: str
    use_case: str
    detected_at: str
    verdict: str  # diagnosis | collateral | false
    incident_id: str | None = None


@dataclass(slots=True)
class Score:
    """How one detector (the engine or the baseline) did against the labels."""

    detector: str
    names_kind: bool
    rows: list[KindRow]
    total: KindRow
    incidents: list[IncidentResult]
    alerts: list[AlertVerdict]
    use_case_hours: float
    false_alerts_per_100_use_case_hours: float
    #: Mean pages per diagnosed incident (None: nothing diagnosed).
    pages_per_incident: float | None = None
    #: Diagnosed incidents whose first page names their own kind as the cause.
    root_cause_right: int = 0


@dataclass(slots=True)
class FeedbackRow:
    """Operator feedback on one use case's kind (``--control``), and what it did."""

    use_case: str
    kind: str
    expected_change: int = 0
    false_alarm: int = 0
    #: The kind's sensitivity after the false alarms (the policy's, floor included).
    sensitivity: float = 1.0
    #: Feedback that names an alert, by that alert's verdict against the labels
    #: ("false_alarm on a false alert" is an operator agreeing with the labels;
    #: on a diagnosis, the feedback silenced a real incident).
    on_verdict: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(slots=True)
class EvaluationReport:
    engine: Score
    baseline: Score | None = None
    #: Per use case: the baseline threshold (USD per rolling hour) and its source.
    baseline_thresholds: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped_alert_records: int = 0
    #: Operator feedback per (use case, kind), when control records were given.
    feedback: list[FeedbackRow] = field(default_factory=list)
    #: Budget periods that crossed a threshold (``budget_threshold``; not scored).
    budget_warnings: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- reading -------------------------------------------------------------------


def read_labels(path: str | Path) -> Labels:
    """Parse a ``labels.json`` as written by ``spendsentry simulate``."""
    data = orjson.loads(Path(path).read_bytes())
    try:
        return Labels(
            start=parse_rfc3339(data["start"]),
            hours=float(data["hours"]),
            use_cases=[str(u) for u in data["use_cases"]],
            incidents=[Incident.from_label(i) for i in data.get("incidents") or []],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a labels file ({exc!r})") from None


def _time(epoch_s: float) -> datetime:
    # Labels are datetimes; alert times are epoch seconds (exact to the microsecond).
    return datetime.fromtimestamp(epoch_s, tz=UTC)


def parse_alerts(records: Iterable[Any]) -> tuple[list[Alert], int]:
    """The first ``firing`` record of each alert_id, in order; and how many were unusable.

    >>> recs = [{"alert_id": "a", "kind": "cost_spike", "use_case": "u", "severity": "info",
    ...          "status": "firing", "detected_at": "2026-11-02T09:00:00Z",
    ...          "started_at": "2026-11-02T08:58:00Z"}]
    >>> alerts, bad = parse_alerts(recs + [dict(recs[0], status="resolved"), recs[0], {}])
    >>> len(alerts), bad
    (1, 1)
    """
    seen: set[str] = set()
    alerts: list[Alert] = []
    skipped = 0
    for rec in records:
        try:
            alert = AlertView.from_dict(rec)
        except ValueError:
            skipped += 1
            continue
        if alert.status != "firing" or alert.alert_id in seen:
            continue
        seen.add(alert.alert_id)
        alerts.append(alert)
    return alerts, skipped


def read_alerts(path: str | Path) -> tuple[list[Alert], int]:
    """Read a JSON Lines alert file (see :func:`parse_alerts`)."""

    def records() -> Iterable[Any]:
        with Path(path).open("rb") as fh:
            for line in fh:
                if line.strip():
                    try:
                        yield orjson.loads(line)
                    except orjson.JSONDecodeError:
                        yield None

    return parse_alerts(records())


def read_hourly_budgets(
    policies_dir: str | Path | None, use_cases: Sequence[str]
) -> dict[str, float]:
    """``cost_per_hour_usd`` per use case, from the policy files in ``policies_dir``.

    The policies are loaded (and validated) as the engine loads them: a use
    case with a policy of its own has its budget (or none), the others that
    of ``[defaults]``. Without a policy directory there are no budgets.

    Raises
    ------
    spendsentry.policy.PolicyError
        An invalid policy file.
    """
    if policies_dir is None or not Path(policies_dir).is_dir():
        return {}
    policies = PolicySet.load(policies_dir)
    names = [*policies.use_cases, *(u for u in use_cases if u not in policies)]
    budgets: dict[str, float] = {}
    for name in names:
        value = policies.for_use_case(name).budgets.cost_per_hour_usd
        if value is not None:
            budgets[name] = value
    return budgets


# -- scoring -------------------------------------------------------------------


def _same_day_before(inc: Incident, when: datetime) -> bool:
    return inc.start <= when and inc.start.date() == when.astimezone(UTC).date()


def _minutes(delta: timedelta) -> float:
    return round(delta.total_seconds() / 60.0, 2)


def score(
    labels: Labels,
    alerts: Sequence[Alert],
    *,
    names_kind: bool = True,
    detector: str = "engine",
) -> Score:
    """Match alerts to incidents (see the module rules)."""
    verdicts, first = _judge(labels, alerts, names_kind=names_kind)
    results = _incident_results(labels, first)
    _set_pages(labels, alerts, results)
    return _tally(labels, alerts, verdicts, results, names_kind=names_kind, detector=detector)


def _page_of(alert: Alert) -> str:
    return alert.incident_id or alert.alert_id


def _set_pages(labels: Labels, alerts: Sequence[Alert], results: list[IncidentResult]) -> None:
    """Each labelled incident's pages and the root cause its first page names.

    >>> from datetime import UTC, datetime
    >>> t0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
    >>> labels = Labels(t0, 24.0, ["u"], [Incident(
    ...     "i1", "agent_chatter", "u", "step", t0, t0 + timedelta(minutes=30))])
    >>> at = t0.timestamp()
    >>> spike = Alert("a1", "cost_spike", "u", "warning", "firing", at + 120, at, "x", "cost_spike")
    >>> loop = Alert("a2", "agent_chatter", "u", "warning", "firing", at + 240, at, "x",
    ...              "agent_chatter")
    >>> results = _incident_results(labels, {})
    >>> _set_pages(labels, [spike, loop], results)
    >>> results[0].pages, results[0].root_cause
    (1, 'agent_chatter')
    >>> from dataclasses import replace
    >>> _set_pages(labels, [replace(spike, incident_id=None), loop], results)
    >>> results[0].pages, results[0].root_cause
    (2, 'cost_spike')
    """
    # The cause an incident names last (root causes are settled as findings join).
    named: dict[str, str] = {}
    for alert in sorted(alerts, key=lambda a: (a.detected_at, a.alert_id)):
        named[_page_of(alert)] = alert.root_cause or alert.kind
    by_incident: dict[str, list[Alert]] = defaultdict(list)
    for alert in alerts:
        began = _time(min(alert.started_at, alert.detected_at))
        detected_at = _time(alert.detected_at)
        for inc in labels.incidents:
            if (
                inc.use_case == alert.use_case
                and began <= inc.end + GRACE
                and detected_at >= inc.start
            ):
                by_incident[inc.incident_id].append(alert)
    for result in results:
        overlapping = by_incident.get(result.incident_id, [])
        if not overlapping:
            result.pages, result.root_cause = 0, None
            continue
        result.pages = len({_page_of(a) for a in overlapping})
        first = min(overlapping, key=lambda a: (a.detected_at, a.alert_id))
        result.root_cause = named[_page_of(first)]


def _judge(
    labels: Labels, alerts: Sequence[Alert], *, names_kind: bool
) -> tuple[list[AlertVerdict], dict[str, tuple[datetime, str]]]:
    """Each alert's verdict, and the first diagnosis of each incident (detected_at, alert_id)."""
    by_use_case: dict[str, list[Incident]] = defaultdict(list)
    for inc in labels.incidents:
        by_use_case[inc.use_case].append(inc)
    first: dict[str, tuple[datetime, str]] = {}  # incident_id -> (detected_at, alert_id)
    verdicts: list[AlertVerdict] = []
    for alert in sorted(alerts, key=lambda a: (a.detected_at, a.alert_id)):
        verdict, matched = "false", None
        detected_at = _time(alert.detected_at)
        for inc in by_use_case.get(alert.use_case, ()):
            in_window = inc.start <= detected_at <= inc.end + GRACE
            if in_window and (not names_kind or alert.kind == inc.kind):
                verdict, matched = "diagnosis", inc.incident_id
                first.setdefault(inc.incident_id, (detected_at, alert.alert_id))
                if names_kind:
                    break
        if verdict == "false":
            began = _time(min(alert.started_at, alert.detected_at))
            for inc in by_use_case.get(alert.use_case, ()):
                if began <= inc.end + GRACE and detected_at >= inc.start:
                    verdict, matched = "collateral", inc.incident_id
                    break
                if alert.kind == "budget_burn" and _same_day_before(inc, detected_at):
                    # A budget is spent by the whole day: an incident's spend
                    # earlier in it brings the day's budget in reach of a
                    # modest burn later on, and saying so is right.
                    verdict, matched = "collateral", inc.incident_id
                    break
        verdicts.append(
            AlertVerdict(
                alert.alert_id,
                alert.kind,
                alert.use_case,
                rfc3339(detected_at),
                verdict,
                matched,
            )
        )
    return verdicts, first


def _incident_results(
    labels: Labels, first: dict[str, tuple[datetime, str]]
) -> list[IncidentResult]:
    results: list[IncidentResult] = []
    for inc in labels.incidents:
        hit = first.get(inc.incident_id)
        results.append(
            IncidentResult(
                inc.incident_id,
                inc.kind,
                inc.use_case,
                hit is not None,
                hit[1] if hit else None,
                _minutes(hit[0] - inc.start) if hit else None,
                inc.shape,
                _minutes(inc.ramp_end - inc.start) if inc.ramp_end is not None else None,
            )
        )
    return results


def _tally(
    labels: Labels,
    alerts: Sequence[Alert],
    verdicts: list[AlertVerdict],
    results: list[IncidentResult],
    *,
    names_kind: bool,
    detector: str,
) -> Score:
    """Per-kind rows and the total of one detector's verdicts and incident results."""
    extra = sorted({a.kind for a in alerts} - set(KINDS))
    rows = {kind: KindRow(kind) for kind in (*KINDS, *extra)}
    delays: dict[str, list[float]] = defaultdict(list)
    step_delays: dict[str, list[float]] = defaultdict(list)
    for r in results:
        rows[r.kind].incidents += 1
        if r.ramp_min is not None:
            rows[r.kind].ramps += 1
            rows[r.kind].ramps_within += r.within_ramp
        if r.diagnosed and r.delay_min is not None:
            rows[r.kind].diagnosed += 1
            delays[r.kind].append(r.delay_min)
            if r.ramp_min is None:
                step_delays[r.kind].append(r.delay_min)
    for v in verdicts:
        if v.verdict == "false":
            rows[v.kind].false_alerts += 1
        elif v.verdict == "collateral":
            rows[v.kind].collateral_alerts += 1
    for kind, row in rows.items():
        _set_delays(row, delays[kind], step_delays[kind])
    total = KindRow(
        "total",
        incidents=sum(r.incidents for r in rows.values()),
        diagnosed=sum(r.diagnosed for r in rows.values()),
        false_alerts=sum(r.false_alerts for r in rows.values()),
        collateral_alerts=sum(r.collateral_alerts for r in rows.values()),
        ramps=sum(r.ramps for r in rows.values()),
        ramps_within=sum(r.ramps_within for r in rows.values()),
    )
    _set_delays(
        total,
        [d for ds in delays.values() for d in ds],
        [d for ds in step_delays.values() for d in ds],
    )
    use_case_hours = len(labels.use_cases) * labels.hours
    per_100 = total.false_alerts / use_case_hours * 100 if use_case_hours else 0.0
    diagnosed = [r for r in results if r.diagnosed]
    pages = sum(r.pages for r in diagnosed) / len(diagnosed) if diagnosed else None
    return Score(
        detector=detector,
        names_kind=names_kind,
        rows=list(rows.values()),
        total=total,
        incidents=results,
        alerts=verdicts,
        use_case_hours=use_case_hours,
        false_alerts_per_100_use_case_hours=round(per_100, 3),
        pages_per_incident=round(pages, 3) if pages is not None else None,
        root_cause_right=sum(r.root_cause == r.kind for r in diagnosed),
    )


def _set_delays(row: KindRow, delays: list[float], step_delays: list[float]) -> None:
    if delays:
        row.median_delay_min = round(statistics.median(delays), 2)
        row.max_delay_min = round(max(delays), 2)
    if step_delays:
        row.step_median_delay_min = round(statistics.median(step_delays), 2)


# -- the static-threshold baseline ------------------------------------------------


def minute_costs(
    events_path: str | Path, labels: Labels, prices: PriceBook | None = None
) -> dict[str, list[float]]:
    """Cost per use case per run minute (usage events, priced like the engine).

    Reads what replay reads, through its reader and decoder
    (:func:`spendsentry.replay.read_events`): JSON Lines, gzip or not, one
    event or an array per line; records replay dead-letters count for
    nothing. ``prices`` prices events that carry no ``cost_usd`` (default:
    the catalogue alone).
    """
    from spendsentry.replay import read_events

    prices = prices or PriceBook()
    start = labels.start.timestamp()
    total = round(labels.hours * 60)
    costs: dict[str, list[float]] = {}
    for event in read_events(str(events_path)):
        if type(event) is not UsageEvent:
            continue
        minute = int((event.ts - start) // 60)
        if not 0 <= minute < total:
            continue
        cost = event.cost_usd
        if cost is None:
            cost = prices.cost(
                event.model,
                event.provider,
                event.input_tokens,
                event.output_tokens,
                event.cached_input_tokens,
            )
        row = costs.get(event.use_case)
        if row is None:
            row = costs[event.use_case] = [0.0] * total
        row[minute] += float(cost or 0.0)
    return costs


def static_threshold_alerts(
    costs: dict[str, list[float]],
    labels: Labels,
    hourly_budgets: dict[str, float],
    k: float = 1.0,
) -> tuple[list[Alert], dict[str, dict[str, Any]]]:
    """Alerts of the static hourly-cost threshold, and the threshold per use case.

    >>> from datetime import UTC, datetime
    >>> from spendsentry.timeutil import format_ts
    >>> labels = Labels(datetime(2026, 11, 2, tzinfo=UTC), 3.0, ["u"], [])
    >>> costs = {"u": [0.01] * 150 + [0.055] * 30}
    >>> alerts, th = static_threshold_alerts(costs, labels, {})
    >>> th["u"]["usd_per_hour"], [format_ts(a.detected_at)[11:16] for a in alerts]
    (1.2, ['02:44'])
    """
    alerts: list[Alert] = []
    thresholds: dict[str, dict[str, Any]] = {}
    warmup = 120
    for use_case in labels.use_cases:
        row = costs.get(use_case, [])
        if use_case in hourly_budgets:
            threshold = k * hourly_budgets[use_case]
            source, first_minute = f"{k:g} x policy cost_per_hour_usd", 0
        else:
            # Mean hourly cost of the first 2 h, doubled: a 2x-normal rule of thumb.
            threshold = k * 2.0 * sum(row[:warmup]) / (warmup / 60)
            source, first_minute = f"{k:g} x 2 x mean hourly cost of the first 2 h", warmup
        entry: dict[str, Any] = {"usd_per_hour": round(threshold, 6), "source": source}
        thresholds[use_case] = entry
        if threshold <= 0:
            entry["note"] = "no spend to set a threshold from: not evaluated"
            continue
        rolling = 0.0
        firing = False
        for minute, cost in enumerate(row):
            rolling += cost
            if minute >= 60:
                rolling -= row[minute - 60]
            if minute < first_minute:
                continue
            if not firing and rolling > threshold:
                firing = True
                at = (labels.start + timedelta(minutes=minute + 1)).timestamp()
                digest = hashlib.sha256(f"baseline|{use_case}|{minute}".encode()).hexdigest()
                alerts.append(
                    Alert(digest[:16], "cost_spike", use_case, "warning", "firing", at, at)
                )
            elif firing and rolling <= threshold:
                firing = False
    return alerts, thresholds


# -- the whole evaluation ------------------------------------------------------


def feedback_rows(
    actions: Iterable[ControlAction], policies: PolicySet, verdicts: Sequence[AlertVerdict] = ()
) -> list[FeedbackRow]:
    """Feedback counted per (use case, kind), with the sensitivity it leaves.

    >>> from spendsentry.policy import PolicySet
    >>> a = ControlAction("false_alarm", "a1", "chat", "cost_spike", None, None, "U1", 0.0)
    >>> v = AlertVerdict("a1", "cost_spike", "chat", "2026-11-02T09:00:00Z", "false")
    >>> row, = feedback_rows([a, a], PolicySet.empty(), [v])
    >>> row.false_alarm, round(row.sensitivity, 2), row.on_verdict
    (2, 0.64, {'false_alarm': {'false': 2}})
    """
    verdict_of = {v.alert_id: v.verdict for v in verdicts}
    rows: dict[tuple[str, str], FeedbackRow] = {}
    for action in actions:
        if not action.is_feedback or action.kind is None:
            continue
        key = (action.use_case, action.kind)
        row = rows.get(key)
        if row is None:
            row = rows[key] = FeedbackRow(action.use_case, action.kind)
        if action.action == "false_alarm":
            row.false_alarm += 1
        else:
            row.expected_change += 1
        verdict = verdict_of.get(action.alert_id or "")
        if verdict is not None:
            counts = row.on_verdict.setdefault(action.action, {})
            counts[verdict] = counts.get(verdict, 0) + 1
    for row in rows.values():
        setting = policies.for_use_case(row.use_case).detector(row.kind)
        row.sensitivity = feedback_sensitivity(setting, row.false_alarm)
    return [rows[k] for k in sorted(rows)]


def evaluate(
    labels_path: str | Path,
    alerts_path: str | Path,
    events_path: str | Path | None = None,
    policies_dir: str | Path | None = None,
    *,
    k: float = 1.0,
    prices: PriceBook | None = None,
    controls_path: str | None = None,
) -> EvaluationReport:
    """Score the alerts file against the labels; add the baseline when events are given.

    ``prices`` prices the events that carry no cost (give the engine's price
    book; default: the catalogue alone, as an engine without overrides).
    """
    labels = read_labels(labels_path)
    alerts, skipped = read_alerts(alerts_path)
    warnings = [a for a in alerts if a.kind in PERIOD_KINDS]
    alerts = [a for a in alerts if a.kind not in PERIOD_KINDS]
    report = EvaluationReport(
        engine=score(labels, alerts), skipped_alert_records=skipped, budget_warnings=len(warnings)
    )
    if events_path is not None:
        budgets = read_hourly_budgets(policies_dir, labels.use_cases)
        costs = minute_costs(events_path, labels, prices)
        baseline_alerts, thresholds = static_threshold_alerts(costs, labels, budgets, k)
        report.baseline = score(labels, baseline_alerts, names_kind=False, detector=BASELINE_NAME)
        report.baseline_thresholds = thresholds
    if controls_path is not None:
        from spendsentry.replay import read_controls

        policies = PolicySet.load(policies_dir) if policies_dir is not None else PolicySet.empty()
        report.feedback = feedback_rows(
            read_controls(controls_path), policies, report.engine.alerts
        )
    return report


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_score(s: Score) -> str:
    """A per-kind text table of one detector's score."""
    header = (
        f"{'kind':26s} {'incidents':>9s} {'diagnosed':>9s} {'median min':>10s} "
        f"{'max min':>8s} {'steps med':>9s} {'in ramp':>8s} {'false':>6s} {'collateral':>10s}"
    )
    lines = [f"== {s.detector} ==", header, "-" * len(header)]
    for row in [*s.rows, s.total]:
        if row is s.total:
            lines.append("-" * len(header))
        lines.append(
            f"{row.kind:26s} {row.incidents:9d} {row.diagnosed:9d} "
            f"{_fmt(row.median_delay_min):>10s} {_fmt(row.max_delay_min):>8s} "
            f"{_fmt(row.step_median_delay_min):>9s} "
            f"{f'{row.ramps_within}/{row.ramps}' if row.ramps else '-':>8s} "
            f"{row.false_alerts:6d} {row.collateral_alerts:10d}"
        )
    lines.append(
        f"false alerts per 100 use-case-hours: {s.false_alerts_per_100_use_case_hours:.2f} "
        f"({s.total.false_alerts} over {s.use_case_hours:g} use-case-hours)"
    )
    if s.names_kind and s.pages_per_incident is not None:
        lines.append(
            f"pages per incident: {s.pages_per_incident:.2f}; root cause named right: "
            f"{s.root_cause_right}/{s.total.diagnosed} diagnosed incidents"
        )
    missed = [r for r in s.incidents if not r.diagnosed]
    if missed:
        lines.append("missed: " + ", ".join(f"{r.incident_id} ({r.use_case})" for r in missed))
    if not s.names_kind:
        lines.append(
            "note: the baseline cannot name the kind; its cost_spike alerts count as "
            "diagnosing any incident on their use case"
        )
    return "\n".join(lines)


def format_report(report: EvaluationReport) -> str:
    parts = [format_score(report.engine)]
    if report.skipped_alert_records:
        parts.append(f"skipped {report.skipped_alert_records} unusable alert records")
    if report.budget_warnings:
        parts.append(
            f"budget periods warned (budget_threshold, not scored): {report.budget_warnings}"
        )
    if report.baseline is not None:
        parts.append("")
        parts.append(format_score(report.baseline))
        parts.append("baseline thresholds (USD per rolling hour):")
        for use_case, t in report.baseline_thresholds.items():
            note = f"  [{t['note']}]" if "note" in t else ""
            parts.append(f"  {use_case:22s} {t['usd_per_hour']:10.4f}  {t['source']}{note}")
    if report.feedback:
        parts.append("")
        parts.append("operator feedback (from the control records):")
        parts.append(
            f"  {'use case':22s} {'kind':26s} {'expected':>8s} {'false alarm':>11s} "
            f"{'sensitivity':>11s}  on alerts judged"
        )
        for row in report.feedback:
            judged = "; ".join(
                f"{action}: " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
                for action, counts in sorted(row.on_verdict.items())
            )
            parts.append(
                f"  {row.use_case:22s} {row.kind:26s} {row.expected_change:8d} "
                f"{row.false_alarm:11d} {row.sensitivity:11.2f}  {judged or '-'}"
            )
    return "\n".join(parts)
