"""The worker's human status page: a snapshot dict in, one self-contained HTML page out.

Three pure parts, no I/O:

* :class:`StatusBoard` remembers what the engine does not keep in a readable
  form: the latest record of every open incident (with its evidence), the last
  alert changes, and throttle commands seen. Bounded.
* :func:`build_snapshot` reads the engine's state (per use case: the 1 h window
  of closed minutes the detectors use, so the chart costs no extra memory and
  survives restarts with the snapshot) and the board into a plain dict: what
  ``/status/page.json``-style consumers, the terminal view of ``spendsentry demo``
  and :func:`render` read.
* :func:`render` turns that dict into HTML with inline CSS and inline SVG
  sparklines. Every string from the data (use-case names, summaries, evidence)
  is escaped: names come from producers, so they are untrusted.

Times on the page are *event time* (the engine's clock): in a replay or a sped-up
demo, "minute" means a minute of event time.

>>> html = render({"use_cases": [{"name": "support<chat>", "cost_per_min": 0.25,
...                               "history": [0.1, 0.3, 0.2]}]})
>>> "support&lt;chat&gt;" in html and "<svg" in html and "support<chat>" not in html
True
"""

from __future__ import annotations

import heapq
import html as _html
import math
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from spendsentry.evidence_text import readable
from spendsentry.messages.severity import SEVERITY_RANK
from spendsentry.timeutil import parse_ts
from spendsentry.worker.incident_cards import incident_card, incidents

if TYPE_CHECKING:
    from spendsentry.engine import Engine
    from spendsentry.worker.partitions import EngineView

__all__ = ["MAX_USE_CASES_SHOWN", "StatusBoard", "build_snapshot", "render", "sparkline"]

#: Rows on the page: the costliest use cases of the last hour (a page, not a dump).
MAX_USE_CASES_SHOWN = 40
#: Seconds between automatic reloads of the page.
REFRESH_S = 5
#: Shown for a figure that does not exist (no outcomes yet, no data).
NONE = "\N{EN DASH}"


class StatusBoard:
    """Open incidents with their evidence, recent alert changes, throttle commands.

    Parameters
    ----------
    max_open : int
        Open incidents remembered (the oldest are forgotten beyond it).
    max_recent : int
        Alert changes kept for the "recent" list.

    Examples
    --------
    >>> board = StatusBoard()
    >>> board.observe_alert({"alert_id": "a1", "status": "firing", "kind": "cost_spike"})
    >>> board.observe_alert({"alert_id": "a1", "status": "resolved", "kind": "cost_spike"})
    >>> list(board.open), len(board.recent)
    ([], 2)
    """

    def __init__(self, max_open: int = 1_000, max_recent: int = 30) -> None:
        self.max_open = max_open
        self.open: dict[str, dict[str, Any]] = {}
        self.recent: deque[dict[str, Any]] = deque(maxlen=max_recent)
        #: Latest throttle command per scope_key (releases remove the scope).
        self.throttles: dict[str, dict[str, Any]] = {}
        #: Whether any throttle command was ever seen (the page hides the section until).
        self.throttles_seen = False

    def observe_alert(self, doc: Mapping[str, Any]) -> None:
        """Record one published alert record (``Alert.to_dict()`` shape)."""
        alert_id = str(doc.get("alert_id", ""))
        self.recent.append(dict(doc))
        if doc.get("status") == "resolved":
            self.open.pop(alert_id, None)
            return
        self.open.pop(alert_id, None)  # re-insert: newest last
        self.open[alert_id] = dict(doc)
        while len(self.open) > self.max_open:
            del self.open[next(iter(self.open))]

    def observe_throttle(self, command: Mapping[str, Any]) -> None:
        """Record one throttle command (``schemas/throttle-command.json`` shape)."""
        key = str(command.get("scope_key") or "")
        if not key:
            return
        self.throttles_seen = True
        if command.get("action") == "release":
            self.throttles.pop(key, None)
        else:
            self.throttles[key] = dict(command)
        while len(self.throttles) > self.max_open:
            del self.throttles[next(iter(self.throttles))]


def _minute_costs(window: Any) -> list[float]:
    # CostWindow keeps (cost, input, output, calls, outcomes) per closed minute in
    # a ring; read-only here.
    ring = getattr(window, "_ring", ())
    return [max(0.0, float(item[0])) for item in ring]


def _ts(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return parse_ts(value)
    except (TypeError, ValueError):
        return None


def build_snapshot(
    engine: Engine | EngineView,
    board: StatusBoard,
    *,
    watermark: float | None = None,
    now: float | None = None,
    header: Mapping[str, Any] | None = None,
    limit: int = MAX_USE_CASES_SHOWN,
) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready data.

    Parameters
    ----------
    engine : Engine or EngineView
        The running engine, or the worker's engines merged (read only).
    board : StatusBoard
        Open incidents, recent changes and throttles.
    watermark : float, optional
        Event time now (epoch seconds).
    now : float, optional
        Wall clock, for the page's "generated at" and the throttles' time left
        (published commands are on the wall clock).
    header : mapping, optional
        Extra facts for the header (group id, records consumed, ...).
    limit : int
        Use cases listed, costliest over the last hour first.
    """
    now = time.time() if now is None else now
    closed_until = engine.closed_until
    event_now = watermark if watermark is not None and math.isfinite(watermark) else None
    if event_now is None and closed_until is not None:
        event_now = closed_until * 60.0
    firing_by_uc: dict[str, int] = {}
    for use_case, _kind, _aid in engine.firing():
        firing_by_uc[use_case] = firing_by_uc.get(use_case, 0) + 1

    def rank(item: tuple[str, Any]) -> tuple[int, float, str]:
        cost = item[1].ctx.last_1h.cost
        return (-firing_by_uc.get(item[0], 0), -(cost if cost > 1e-9 else 0.0), item[0])

    # Rows are built for the shown use cases only: building one per name took
    # seconds under a flood of names, on the event loop the consumer shares.
    shown = heapq.nsmallest(limit, engine.use_cases.items(), key=rank)
    totals_of = getattr(engine, "totals", None) or engine.stats.use_cases.get
    rows: list[dict[str, Any]] = []
    for name, state in shown:
        ctx = state.ctx
        hour, five = ctx.last_1h, ctx.last_5m
        minutes5 = max(1, five.minutes_filled)
        minutes60 = max(1, hour.minutes_filled)
        totals = totals_of(name)
        # Window sums are running floats: a quiet use case can sit at -1e-17.
        cost5 = five.cost if five.cost > 1e-9 else 0.0
        rows.append(
            {
                "name": name,
                "owner": state.policy.owner,
                "tier": state.policy.tier,
                "cost_per_min": cost5 / minutes5,
                "cost_last_hour": hour.cost if hour.cost > 1e-9 else 0.0,
                "tokens_per_min": (five.input_tokens + five.output_tokens) / minutes5,
                "calls_per_min": five.calls / minutes5,
                "outcomes_last_hour": hour.outcomes,
                "cost_per_outcome": hour.cost_per_outcome,
                "cost_per_outcome_target": state.policy.cost_per_outcome_target_usd,
                "minutes": minutes60,
                "history": _minute_costs(hour),
                "cost_total": totals.cost_usd if totals else 0.0,
                "tokens_total": (totals.input_tokens + totals.output_tokens) if totals else 0,
                "firing": firing_by_uc.get(name, 0),
                # Owned or not, and the models it started calling (issue 20).
                "named": state.policy.explicit,
                "new_models": new_models(state),
            }
        )
    rows.sort(key=lambda r: (-r["firing"], -r["cost_last_hour"], r["name"]))
    firing_ids = {aid for _u, _k, aid in engine.firing()}
    alerts = [doc for aid, doc in board.open.items() if aid in firing_ids]
    known = {doc.get("alert_id") for doc in alerts}
    for use_case, kind, aid in engine.firing():
        if aid not in known:  # fired before a restart: no record of its evidence here
            alerts.append({"alert_id": aid, "use_case": use_case, "kind": kind, "status": "firing"})
    alerts.sort(key=_alert_order)
    throttles: list[dict[str, Any]] | None = None
    if board.throttles_seen:
        throttles = []
        for key, cmd in sorted(board.throttles.items()):
            expires = _ts(cmd.get("expires_at"))
            # Published commands are on the wall clock (see worker/throttle_edge.py).
            left = None if expires is None else expires - now
            if left is not None and left <= 0:
                continue
            throttles.append({**cmd, "scope_key": key, "seconds_left": left})
    return {
        **dict(header or {}),
        "generated_at": now,
        "event_time": event_now,
        "use_case_count": len(engine.use_cases),
        "use_cases": rows,
        "alerts": alerts,
        "recent": list(reversed(board.recent)),
        "throttles": throttles,
    }


def new_models(state: Any) -> list[dict[str, Any]]:
    """The models a use case started calling after learning its own (its ``new_model``
    monitor's list, newest last): model, first seen, extra USD a month (None while watched).
    """
    for monitor in state.monitors:
        if monitor.kind == "new_model":
            return [
                {"model": model, "since": since, "monthly_usd": monthly}
                for model, since, monthly in monitor.recent
            ]
    return []


def _alert_order(doc: Mapping[str, Any]) -> tuple[int, str, str]:
    # Most severe first; an unknown severity after "info".
    return (
        -SEVERITY_RANK.get(str(doc.get("severity")), -1),
        str(doc.get("use_case", "")),
        str(doc.get("kind", "")),
    )


# -- rendering ----------------------------------------------------------------


def _e(value: Any) -> str:
    return _html.escape(str(value), quote=True)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def usd(value: Any) -> str:
    """Dollars with precision that suits the size.

    >>> usd(1234.5), usd(0.4567), usd(0.000123), usd(None)
    ('$1,234.50', '$0.457', '$0.000123', '\N{EN DASH}')
    """
    x = _num(value)
    if x is None:
        return NONE
    if abs(x) >= 100:
        return f"${x:,.2f}"
    if abs(x) >= 0.01:
        return f"${x:,.3f}"
    if x == 0:
        return "$0"
    return f"${x:.3g}"


def count(value: Any) -> str:
    """A count, shortened: ``12.3k``, ``4.1M``.

    >>> count(950), count(12_345), count(4_100_000), count("x")
    ('950', '12.3k', '4.1M', '\N{EN DASH}')
    """
    x = _num(value)
    if x is None:
        return NONE
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= size:
            return f"{x / size:.1f}{suffix}"
    return f"{x:.0f}"


def _duration(seconds: Any) -> str:
    x = _num(seconds)
    if x is None:
        return NONE
    x = max(0, int(x))
    if x >= 3600:
        return f"{x // 3600}h {x % 3600 // 60:02d}m"
    if x >= 60:
        return f"{x // 60}m {x % 60:02d}s"
    return f"{x}s"


def _when(value: Any) -> str:
    ts = _ts(value) if not isinstance(value, int | float) else float(value)
    if ts is None:
        return NONE
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def sparkline(values: Sequence[Any], *, width: int = 160, height: int = 32) -> str:
    """An inline SVG line chart of ``values`` (oldest first), scaled to its maximum.

    >>> svg = sparkline([0, 1, 2, 1])
    >>> svg.startswith("<svg") and "polyline" in svg
    True
    >>> "no data" in sparkline([])
    True
    """
    points = [v for v in (_num(x) for x in values) if v is not None]
    head = (
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" xmlns="http://www.w3.org/2000/svg">'
    )
    if not points:
        return head + "<title>no data yet</title></svg>"
    top = max(max(points), 1e-12)
    # 60 slots: a use case with 10 minutes of history fills the right sixth,
    # so charts of different use cases share one time axis.
    slots = max(60, len(points))
    step = (width - 2) / (slots - 1)
    x0 = width - 1 - step * (len(points) - 1)

    def y(v: float) -> float:
        return height - 2 - (height - 4) * max(0.0, v) / top

    coords = " ".join(f"{x0 + i * step:.1f},{y(v):.1f}" for i, v in enumerate(points))
    area = f"{x0:.1f},{height - 1} {coords} {x0 + step * (len(points) - 1):.1f},{height - 1}"
    last_x, last_y = x0 + step * (len(points) - 1), y(points[-1])
    title = f"last {len(points)} min: {usd(sum(points))}, peak {usd(max(points))}/min"
    return (
        head
        + f"<title>{_e(title)}</title>"
        + f'<polygon points="{area}" fill="#dbeafe" stroke="none"/>'
        + f'<polyline points="{coords}" fill="none" stroke="#2563eb" stroke-width="1.5"/>'
        + f'<circle cx="{last_x:.1f}" cy="{last_y:.1f}" r="2" fill="#1d4ed8"/>'
        + "</svg>"
    )


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
background:#f8fafc;color:#0f172a}
header{background:#0f172a;color:#f8fafc;padding:12px 24px;display:flex;gap:24px;
align-items:baseline;flex-wrap:wrap}
header h1{font-size:18px;margin:0}header span{color:#cbd5e1}
main{padding:16px 24px;max-width:1400px}
h2{font-size:15px;margin:20px 0 8px;text-transform:uppercase;letter-spacing:.04em;color:#334155}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #e2e8f0}
th,td{padding:5px 10px;border-bottom:1px solid #e2e8f0;text-align:right;white-space:nowrap}
th{background:#f1f5f9;font-weight:600;color:#475569;font-size:12px}
td.name,th.name{text-align:left}td.name small{color:#64748b}
td.reason{white-space:normal;overflow-wrap:anywhere;max-width:480px;text-align:left}
tr.hot td{background:#fef2f2}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:12px}
.card{background:#fff;border:1px solid #e2e8f0;border-left:5px solid #f59e0b;padding:10px 14px;
border-radius:4px}
.card.critical{border-left-color:#dc2626}.card.info{border-left-color:#64748b}
.card h3{margin:0 0 4px;font-size:15px}.card p{margin:4px 0}
.card dl{display:grid;grid-template-columns:auto 1fr;gap:2px 12px;margin:6px 0 0;font-size:13px}
.card dt{color:#64748b}.card dd{margin:0}
.badge{display:inline-block;padding:0 6px;border-radius:3px;font-size:12px;font-weight:600;
background:#fef3c7;color:#92400e}
.badge.critical{background:#fee2e2;color:#991b1b}.badge.info{background:#e2e8f0;color:#334155}
.badge.resolved{background:#dcfce7;color:#166534}
.muted{color:#64748b}.over{color:#b91c1c;font-weight:600}
ul.recent{list-style:none;padding:0;margin:0;background:#fff;border:1px solid #e2e8f0}
ul.recent li{padding:4px 10px;border-bottom:1px solid #e2e8f0}
"""


def _badge(text: Any) -> str:
    t = _e(text)
    return f'<span class="badge {t}">{t}</span>'


def _figure(value: Any) -> str:
    """An evidence number, rounded for reading (the alert record keeps full precision).

    >>> _figure(0.040489), _figure(2.064762), _figure(106.305441), _figure(12345.6), _figure("x")
    ('0.04049', '2.06', '106.31', '12,346', 'x')
    """
    x = _num(value)
    if x is None:
        return str(value)
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.4g}"


def _evidence(ev: Mapping[str, Any]) -> str:
    rows = []
    metric = ev.get("metric")
    # Log-scale metrics in their own unit (0.41 → 2.46 USD/Mtok, not -0.89 → 0.90).
    baseline, observed, real_unit = readable(ev)
    unit = f" {real_unit}" if real_unit else ""
    if metric is not None:
        rows.append(("metric", f"{metric}"))
    if "baseline" in ev or "observed" in ev:
        shift = f"{_figure(baseline)} → {_figure(observed)}{unit}"
        rows.append(("baseline → observed", shift))
    if ev.get("window_s") is not None:
        rows.append(("window", _duration(ev.get("window_s"))))
    if ev.get("score") is not None:
        rows.append(("score", _figure(ev.get("score"))))
    for key in ("example_session", "example_model"):
        if ev.get(key):
            rows.append((key.replace("_", " "), str(ev[key])))
    return "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)


def _alert_card(doc: Mapping[str, Any]) -> str:
    severity = doc.get("severity") or "warning"
    impact = doc.get("impact") if isinstance(doc.get("impact"), Mapping) else {}
    evidence = doc.get("evidence") if isinstance(doc.get("evidence"), Mapping) else {}
    assert isinstance(impact, Mapping) and isinstance(evidence, Mapping)
    summary = doc.get("summary") or "(fired before the worker restarted: details in ai.alerts)"
    parts = [
        f'<div class="card {_e(severity)}">',
        f"<h3>{_e(doc.get('kind', '?'))} · {_e(doc.get('use_case', '?'))} {_badge(severity)}</h3>",
        f'<p class="summary">{_e(summary)}</p><dl>',
        _evidence(evidence),
    ]
    if impact and not impact.get("excess_cost_per_hour_usd"):
        # "$0/h" next to a critical alert reads as "harmless": say what it is.
        parts.append("<dt>excess cost</dt><dd>not priced by this detector</dd>")
    elif impact:
        parts.append(
            f"<dt>excess cost</dt><dd>{usd(impact.get('excess_cost_per_hour_usd'))}/h "
            f"(~{usd(impact.get('projected_monthly_usd'))}/month)</dd>"
        )
    if doc.get("started_at"):
        parts.append(f"<dt>since</dt><dd>{_e(_when(doc.get('started_at')))}</dd>")
    if doc.get("owner"):
        parts.append(f"<dt>owner</dt><dd>{_e(doc.get('owner'))}</dd>")
    parts.append("</dl></div>")
    return "".join(parts)


def _use_case_row(row: Mapping[str, Any]) -> str:
    cpo, target = _num(row.get("cost_per_outcome")), _num(row.get("cost_per_outcome_target"))
    cpo_cls = ' class="over"' if cpo is not None and target is not None and cpo > target else ""
    target_txt = f' <small class="muted">target {usd(target)}</small>' if target else ""
    firing = int(_num(row.get("firing")) or 0)
    tier = row.get("tier")
    note = f" <small>{_e(tier)}</small>" if tier and tier != "production" else ""
    if row.get("named") is False:
        note += ' <small class="over">no policy</small>'
    for new in row.get("new_models") or []:
        monthly = _num(new.get("monthly_usd"))
        extra = f", {usd(monthly)}/month more" if monthly is not None and monthly > 0 else ""
        note += (
            f" <small>new model {_e(new.get('model', '?'))} since "
            f"{_e(_when(new.get('since')))}{extra}</small>"
        )
    hot = ' class="hot"' if firing else ""
    return (
        f"<tr{hot}>"
        f'<td class="name">{_e(row.get("name", "?"))}{note}</td>'
        f"<td>{usd(row.get('cost_per_min'))}</td>"
        f"<td>{sparkline(row.get('history') or [])}</td>"
        f"<td>{usd(row.get('cost_last_hour'))}</td>"
        f"<td>{count(row.get('tokens_per_min'))}</td>"
        f"<td{cpo_cls}>{usd(cpo)}{target_txt}</td>"
        f"<td>{count(row.get('outcomes_last_hour'))}</td>"
        f"<td>{firing or ''}</td></tr>"
    )


def _incidents_text(n: int) -> str:
    return "1 incident" if n == 1 else f"{n} incidents"


def _lag(snapshot: Mapping[str, Any]) -> str:
    """How far event time is behind the wall clock, when that is more than a few minutes.

    >>> _lag({"event_time": 0.0, "generated_at": 86400.0 + 120})
    ' (24h 02m behind the wall clock)'
    >>> _lag({"event_time": 100.0, "generated_at": 160.0})
    ''
    """
    event, wall = _num(snapshot.get("event_time")), _num(snapshot.get("generated_at"))
    if event is None or wall is None or wall - event < 300:
        return ""
    return f" ({_duration(wall - event)} behind the wall clock)"


def _throttle_row(cmd: Mapping[str, Any]) -> str:
    params = cmd.get("params") if isinstance(cmd.get("params"), Mapping) else {}
    assert isinstance(params, Mapping)
    detail = ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
    reason = cmd.get("reason") if isinstance(cmd.get("reason"), Mapping) else {}
    assert isinstance(reason, Mapping)
    mode = "dry run" if cmd.get("dry_run") else "enforced"
    return (
        f'<tr><td class="name">{_e(cmd.get("scope_key", "?"))}</td>'
        f"<td>{_e(cmd.get('action', '?'))}</td><td>{_e(detail)}</td><td>{mode}</td>"
        f"<td>{_duration(cmd.get('seconds_left'))}</td>"
        f'<td class="reason">{_e(reason.get("kind", ""))}: '
        f"{_e(reason.get('summary', ''))}</td></tr>"
    )


def _recent_line(doc: Mapping[str, Any]) -> str:
    return (
        f"<li>{_e(_when(doc.get('detected_at')))} {_badge(doc.get('status', '?'))} "
        f"{_badge(doc.get('severity', '?'))} <b>{_e(doc.get('kind', '?'))}</b> on "
        f"{_e(doc.get('use_case', '?'))}: {_e(doc.get('summary', ''))}</li>"
    )


def render(snapshot: Mapping[str, Any], *, refresh_s: int = REFRESH_S) -> str:
    """The status page for a :func:`build_snapshot` dict (missing keys are tolerated).

    Parameters
    ----------
    snapshot : mapping
        As built by :func:`build_snapshot` (or the ``/status`` JSON of a worker).
    refresh_s : int
        Seconds until the browser reloads the page (0: never).
    """
    use_cases: Sequence[Mapping[str, Any]] = snapshot.get("use_cases") or []
    alerts: Sequence[Mapping[str, Any]] = snapshot.get("alerts") or []
    throttles: Iterable[Mapping[str, Any]] | None = snapshot.get("throttles")
    recent: Sequence[Mapping[str, Any]] = snapshot.get("recent") or []
    total = _num(snapshot.get("use_case_count")) or len(use_cases)
    refresh = f'<meta http-equiv="refresh" content="{int(refresh_s)}">' if refresh_s > 0 else ""
    facts = [f"event time {_e(_when(snapshot.get('event_time')))}{_lag(snapshot)}"]
    if snapshot.get("group_id"):
        facts.append(f"group {_e(snapshot['group_id'])}")
    if snapshot.get("accepted") is not None:
        facts.append(f"{count(snapshot.get('accepted'))} events")
    facts.append(f"{len(alerts)} firing")
    out = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        refresh,
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>spendsentry · {len(alerts)} firing</title><style>{_CSS}</style></head><body>",
        "<header><h1>spendsentry</h1>",
        "".join(f"<span>{f}</span>" for f in facts),
        "</header><main>",
        f"<h2>Firing alerts ({len(alerts)}) in {_incidents_text(len(incidents(alerts)))}</h2>",
    ]
    if alerts:
        # One card per incident: its root cause, with the symptoms inside.
        cards = "".join(incident_card(group, _alert_card) for group in incidents(alerts))
        out.append('<div class="cards">' + cards + "</div>")
    else:
        out.append('<p class="muted">Nothing firing.</p>')
    if throttles is not None:
        rows = list(throttles)
        out.append(f"<h2>Active throttles ({len(rows)})</h2>")
        if rows:
            out.append(
                '<table><tr><th class="name">scope</th><th>action</th><th>limits</th>'
                '<th>mode</th><th>time left</th><th class="name">reason</th></tr>'
                + "".join(_throttle_row(c) for c in rows)
                + "</table>"
            )
        else:
            out.append('<p class="muted">No throttle in force.</p>')
    shown = len(use_cases)
    more = f" · top {shown} of {int(total)}" if total > shown else ""
    out.append(f"<h2>Use cases ({int(total)}{more})</h2>")
    if use_cases:
        out.append(
            '<table><tr><th class="name">use case</th><th>cost / min</th>'
            "<th>last hour, per minute</th><th>cost last hour</th><th>tokens / min</th>"
            "<th>cost per outcome</th><th>outcomes (1 h)</th><th>firing</th></tr>"
            + "".join(_use_case_row(r) for r in use_cases)
            + "</table>"
            + '<p class="muted">Cost and tokens per minute: mean of the last 5 closed '
            "minutes of event time.</p>"
        )
    else:
        out.append('<p class="muted">No events yet.</p>')
    if recent:
        out.append('<h2>Recent alert changes</h2><ul class="recent">')
        out.extend(_recent_line(d) for d in recent)
        out.append("</ul>")
    out.append("</main></body></html>")
    return "".join(out)
