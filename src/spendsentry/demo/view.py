"""The demo's terminal view: a table per use case, redrawn in place with plain ANSI.

On a terminal (stdout is a TTY) the screen is redrawn every second: cursor home,
the table, clear to the end of the screen. No curses: it must run wherever
Python does. When stdout is not a terminal (a pipe, a log file, CI) the view
prints plain lines instead: each alert as it arrives and a short table now and
then, never escape codes.

>>> snap = {"event_time": 1793610000.0, "use_cases": [{"name": "support_chat",
...         "cost_per_min": 0.042, "tokens_per_min": 51234, "cost_per_outcome": 0.0031,
...         "firing": 1}], "alerts": [{"use_case": "support_chat", "kind": "cost_spike",
...         "severity": "critical"}]}
>>> print("\\n".join(table_lines(snap, [], width=100)))  # doctest: +NORMALIZE_WHITESPACE
use case            cost/min  tokens/min  cost/outcome  alerts / throttles
support_chat          $0.042       51.2k       $0.0031  cost_spike!
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from spendsentry.worker.status_page import NONE, count, usd

__all__ = ["TerminalView", "alert_line", "screen", "table_lines"]

_RED, _YELLOW, _BOLD, _DIM, _RESET = "\x1b[31m", "\x1b[33m", "\x1b[1m", "\x1b[2m", "\x1b[0m"


def _when(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "--:--"
    return datetime.fromtimestamp(float(ts), tz=UTC).strftime("%H:%M")


def alert_line(doc: Mapping[str, Any]) -> str:
    """One line for one alert record: status, severity, kind, use case, summary.

    >>> alert_line({"status": "firing", "severity": "critical", "kind": "cost_spike",
    ...             "use_case": "claims_triage", "summary": "6.4x its usual cost",
    ...             "detected_at": "2026-11-02T09:07:00.000Z"})
    'ALERT 09:07 firing    critical cost_spike on claims_triage: 6.4x its usual cost'
    """
    when = str(doc.get("detected_at") or "")[11:16] or "--:--"
    summary = " ".join(str(doc.get("summary") or "").split())
    return (
        f"ALERT {when} {doc.get('status', '?')!s:9s} {doc.get('severity', '?')!s:8s} "
        f"{doc.get('kind', '?')} on {doc.get('use_case', '?')}: {summary}"
    )


def _cpo(value: Any) -> str:
    # Costs per outcome are fractions of a cent: four decimals read better than $0.00.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"${value:.4f}" if value < 1 else usd(value)
    return NONE


def table_lines(
    snapshot: Mapping[str, Any] | None,
    throttles: Sequence[Mapping[str, Any]],
    *,
    width: int = 100,
    color: bool = False,
) -> list[str]:
    """The per-use-case table: cost/min, tokens/min, cost per outcome, alerts, throttles."""
    snap = snapshot or {}
    firing: dict[str, list[Mapping[str, Any]]] = {}
    for a in snap.get("alerts") or []:
        firing.setdefault(str(a.get("use_case")), []).append(a)
    throttled: dict[str, list[str]] = {}
    for t in throttles:
        scope = t.get("scope") if isinstance(t.get("scope"), Mapping) else {}
        assert isinstance(scope, Mapping)
        name = str(scope.get("use_case") or str(t.get("scope_key", "")).split("/")[0])
        mode = " (dry run)" if t.get("dry_run") else ""
        throttled.setdefault(name, []).append(f"{t.get('action', '?')}{mode}")
    header = (
        f"{'use case':18s} {'cost/min':>9s} {'tokens/min':>11s} {'cost/outcome':>13s}  "
        "alerts / throttles"
    )
    lines = [header[:width]]
    for row in snap.get("use_cases") or []:
        name = str(row.get("name", "?"))
        marks = []
        for a in firing.get(name, []):
            critical = a.get("severity") == "critical"
            mark = f"{a.get('kind', '?')}{'!' if critical else ''}"
            if color:
                mark = f"{_RED if critical else _YELLOW}{mark}{_RESET}"
            marks.append(mark)
        marks += [f"throttle:{t}" for t in throttled.get(name, [])]
        line = (
            f"{name[:18]:18s} {usd(row.get('cost_per_min')):>9s} "
            f"{count(row.get('tokens_per_min')):>11s} {_cpo(row.get('cost_per_outcome')):>13s}  "
            + " ".join(marks)
        )
        lines.append(line if color else line[:width])
    return lines


def screen(
    snapshot: Mapping[str, Any] | None,
    feed: Mapping[str, Any],
    alerts: Sequence[str],
    throttles: Sequence[Mapping[str, Any]],
    *,
    url: str,
    width: int = 100,
    height: int = 40,
    color: bool = True,
) -> list[str]:
    """The whole screen: header, table, the latest alert lines (fitted to ``height``)."""
    snap = snapshot or {}
    n_firing = len(snap.get("alerts") or [])
    head = (
        f"spendsentry demo  event time {_when(feed.get('event_time'))} UTC  "
        f"{feed.get('phase', '?')} x{feed.get('speed', '?')}  "
        f"{count(feed.get('events'))} events published  {n_firing} firing"
    )
    lines = [f"{_BOLD}{head}{_RESET}" if color else head]
    lines.append(f"status page {url}   Ctrl-C stops everything"[:width])
    lines.append("")
    lines += table_lines(snap, throttles, width=width, color=color)
    lines.append("")
    room = max(3, height - len(lines) - 1)
    lines.append("latest alerts:" if alerts else "latest alerts: none yet (detectors warm up)")
    for text in list(alerts)[-room:]:
        shown = text[:width]
        if color and " critical " in shown:
            shown = f"{_RED}{shown}{_RESET}"
        lines.append(shown)
    return lines


class TerminalView:
    """Draws :func:`screen` in place on a TTY, or prints plain lines otherwise.

    Parameters
    ----------
    out : TextIO
        Where to write (stdout).
    tty : bool, optional
        Force the mode (default: ``out.isatty()``).
    plain_every : int
        In plain mode, print the table every this many :meth:`draw` calls.
    """

    def __init__(self, out: TextIO = sys.stdout, *, tty: bool | None = None, plain_every: int = 15):
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.plain_every = plain_every
        self._draws = 0

    def alert(self, line: str) -> None:
        """An alert arrived: plain mode prints it now (the TTY screen shows it on redraw)."""
        if not self.tty:
            self.out.write(line + "\n")
            self.out.flush()

    def note(self, text: str) -> None:
        """A one-off message (start-up, shutdown): printed in both modes."""
        self.out.write(text + "\n")
        self.out.flush()

    def draw(
        self,
        snapshot: Mapping[str, Any] | None,
        feed: Mapping[str, Any],
        alerts: Sequence[str],
        throttles: Sequence[Mapping[str, Any]],
        *,
        url: str,
    ) -> None:
        """Redraw (TTY) or, now and then, print the table (plain)."""
        self._draws += 1
        if self.tty:
            import shutil

            size = shutil.get_terminal_size((100, 40))
            lines = screen(
                snapshot, feed, alerts, throttles, url=url, width=size.columns, height=size.lines
            )
            # Home, each line cleared to its end, then clear below: no flicker.
            body = "\x1b[H" + "".join(f"{line}\x1b[K\n" for line in lines) + "\x1b[J"
            self.out.write(body)
            self.out.flush()
        elif snapshot and self._draws % self.plain_every == 0:
            event_time = _when(feed.get("event_time"))
            self.out.write(f"-- event time {event_time} UTC, {feed.get('phase')} --\n")
            self.out.write("\n".join(table_lines(snapshot, throttles, width=120)) + "\n")
            self.out.flush()

    def start(self) -> None:
        """Enter the view: on a TTY, clear the screen and hide the cursor."""
        if self.tty:
            self.out.write("\x1b[2J\x1b[H\x1b[?25l")
            self.out.flush()

    def stop(self) -> None:
        """Leave the view: show the cursor again."""
        if self.tty:
            self.out.write("\x1b[?25h\n")
            self.out.flush()
