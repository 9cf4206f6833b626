"""Offline replay: JSON Lines files through the same engine the worker runs.

Also the backtesting tool: point it at last month's gateway logs and see
which alerts spendsentry would have raised, and when.
"""

from __future__ import annotations

import gzip
import heapq
import io
import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from spendsentry.actions import ControlAction, ControlError, ThrottleKeys
from spendsentry.engine import Engine, EngineOutput
from spendsentry.errors import InputFileError
from spendsentry.events import Event
from spendsentry.ingest import DeadLetter, Decoder, SourcePosition
from spendsentry.ingest.deadletter import one_per_source

_BLANK_STARTS = (b"\n", b"\r", b" ", b"\t", b"")

#: Decode and close minutes in batches: the engine is batch-shaped.
BATCH_SIZE = 5_000


@dataclass(slots=True)
class ReplayResult:
    """Counts of one replay run (the summary JSON is built from it)."""

    events_read: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    alerts_written: int = 0
    commands_written: int = 0
    elapsed_s: float = 0.0
    #: Decoded events per source format (native, otlp, litellm).
    formats: dict[str, int] = field(default_factory=dict)
    #: Foreign records that hold nothing to count (non-GenAI spans, ...).
    skipped: int = 0

    def count_rejected(self, letters: list[DeadLetter]) -> None:
        # A summary letter stands for several rejected elements: count those.
        for letter in letters:
            for key, n in letter.counts().items():
                self.rejected[key] = self.rejected.get(key, 0) + n


def open_input(path: str) -> IO[bytes]:
    """Open a JSON Lines file (gzip detected by its magic bytes) or ``-`` for stdin."""
    if path == "-":
        return sys.stdin.buffer
    try:
        raw = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    except OSError as exc:
        raise InputFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    magic = raw.peek(2)[:2] if isinstance(raw, io.BufferedReader) else b""
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


class Sinks:
    """Where replay writes: JSON Lines files, any of them optional."""

    def __init__(
        self,
        alerts: str | None = None,
        commands: str | None = None,
        deadletter: str | None = None,
    ) -> None:
        self._files: dict[str, IO[bytes] | None] = {}
        for name, path in (("alerts", alerts), ("commands", commands), ("deadletter", deadletter)):
            if path is None:
                self._files[name] = None
                continue
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                self._files[name] = open(path, "wb")  # noqa: SIM115 - closed in close()
            except OSError as exc:
                self.close()
                raise InputFileError(f"cannot write {path}: {exc.strerror or exc}") from None

    def write(self, name: str, records: list[dict[str, Any]]) -> None:
        f = self._files.get(name)
        if f is None or not records:
            return
        f.write(b"".join(orjson.dumps(r) + b"\n" for r in records))

    def close(self) -> None:
        for f in self._files.values():
            if f is not None:
                f.close()


class Progress:
    """A one-line progress display on a terminal; silent otherwise."""

    def __init__(self, total_bytes: int | None, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self.total = total_bytes
        self.started = time.monotonic()
        self._last = 0.0

    def update(self, read_bytes: int, events: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.2:
            return
        self._last = now
        rate = events / max(now - self.started, 1e-9)
        if self.total:
            frac = min(read_bytes / self.total, 1.0)
            bar = "#" * int(frac * 30)
            text = f"\r[{bar:<30}] {frac:6.1%} {events:,} events {rate:,.0f}/s"
        else:
            text = f"\r{events:,} events {rate:,.0f}/s"
        self.stream.write(text)
        self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


class _Reader:
    """Decodes one input into (ts, seq, event, source) tuples in file order."""

    def __init__(self, path: str, decoder: Decoder, result: ReplayResult, rejected: list) -> None:
        self.path = path
        self.name = "<stdin>" if path == "-" else path
        self.stream = open_input(path)
        self.decoder = decoder
        self.result = result
        self.rejected = rejected
        self.bytes_read = 0

    def __iter__(self) -> Iterator[tuple[float, int, Event, SourcePosition]]:
        decode = self.decoder.decode
        now = time.time()
        seq = 0
        formats = self.result.formats
        try:
            for line_no, line in enumerate(self.stream, start=1):
                self.bytes_read += len(line)
                if line_no % 10_000 == 0:
                    now = time.time()
                # Records start with "{" or "["; only then skip the strip() cost.
                if line[:1] in _BLANK_STARTS and not line.strip():
                    continue  # blank lines between records are not records
                source = SourcePosition(self.name, line=line_no)
                decoded = decode(line.rstrip(b"\r\n"), source, now=now)
                self.result.events_read += len(decoded.events) + len(decoded.rejected)
                self.result.skipped += decoded.skipped
                if decoded.rejected:
                    self.rejected.extend(decoded.rejected)
                for event in decoded.events:
                    formats[event.source_format] = formats.get(event.source_format, 0) + 1
                    seq += 1
                    yield event.ts, seq, event, source
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise InputFileError(f"cannot read {self.name}: {exc}") from None
        finally:
            if self.stream is not sys.stdin.buffer:
                self.stream.close()


def read_events(path: str, decoder: Decoder | None = None) -> Iterator[Event]:
    """The events of one input, decoded as :func:`replay` decodes them, in file order.

    Rejected records are left out (replay dead-letters them); ``-`` is stdin.
    ``spendsentry evaluate`` reads its baseline's events through here, so it
    sees exactly the events the engine saw from the decoder.
    """
    rejected: list[DeadLetter] = []
    for _ts, _seq, event, _source in _Reader(path, decoder or Decoder(), ReplayResult(), rejected):
        rejected.clear()  # only the events are wanted: do not hold every letter
        yield event


def replay(
    paths: list[str],
    engine: Engine,
    sinks: Sinks,
    *,
    decoder: Decoder | None = None,
    progress: Progress | None = None,
    keys: ThrottleKeys | None = None,
    controls: Sequence[ControlAction] = (),
) -> ReplayResult:
    """Run ``paths`` through ``engine`` in event-time order, writing to ``sinks``.

    ``controls`` are operator actions (``ai.control`` messages, e.g. feedback),
    handed to the engine in order of ``at`` once the events have reached it,
    before the minutes around it close: the engine applies feedback at its
    event time, as a live worker that read the action in time does.

    Several files are merged by event time (each file is expected to be in
    rough event-time order, as logs are); within a file, disorder up to the
    engine's allowed lateness is absorbed, beyond it events are dead-lettered
    as ``late``.

    Throttle commands are signed with ``keys``' signing key; without one they
    are written with ``"signature": ""`` (unsigned: a backtest of what would
    have been sent, which gateways reject).
    """
    decoder = decoder or Decoder()
    result = ReplayResult()
    rejected: list[DeadLetter] = []
    readers = [_Reader(p, decoder, result, rejected) for p in paths]
    stream: Iterator[tuple[float, int, Event, SourcePosition]]
    if len(readers) == 1:
        stream = iter(readers[0])
    else:
        stream = heapq.merge(*readers, key=lambda item: (item[0], item[1]))
    started = time.perf_counter()
    events: list[Event] = []
    sources: list[SourcePosition] = []

    waiting = sorted(controls, key=lambda a: a.at)

    def take_controls(until: float) -> EngineOutput:
        out = EngineOutput()
        while waiting and waiting[0].at <= until:
            out.extend(engine.apply_control(waiting.pop(0)))
        return out

    def run_batch() -> None:
        out = engine.process(events, sources)
        out.extend(take_controls(engine.max_ts))
        out.extend(engine.advance())
        _emit(out, rejected, result, sinks, keys)
        events.clear()
        sources.clear()
        if progress is not None:
            progress.update(sum(r.bytes_read for r in readers), result.events_read)

    for _, _, event, source in stream:
        events.append(event)
        sources.append(source)
        if len(events) >= BATCH_SIZE:
            run_batch()
    run_batch()
    _emit(take_controls(math.inf).extend(engine.flush()), rejected, result, sinks, keys)
    result.elapsed_s = time.perf_counter() - started
    if progress is not None:
        progress.done()
    return result


def read_controls(path: str) -> list[ControlAction]:
    """A JSON Lines file of ``ai.control`` messages (blank lines skipped).

    Raises
    ------
    spendsentry.actions.ControlError
        A line that is not a valid control action (the message names the line).
    """
    actions = []
    with open_input(path) as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                actions.append(ControlAction.parse(line))
            except ControlError as exc:
                raise ControlError(f"{path}:{number}: {exc}") from None
    return actions


def _emit(
    out: EngineOutput,
    rejected: list[DeadLetter],
    result: ReplayResult,
    sinks: Sinks,
    keys: ThrottleKeys | None = None,
) -> None:
    letters = rejected + out.rejected
    rejected.clear()
    result.count_rejected(letters)
    # Counted per element above; written as one letter per source line.
    sinks.write("deadletter", [d.to_dict() for d in one_per_source(letters)])
    sinks.write("alerts", [a.to_dict() for a in out.alerts])
    result.alerts_written += len(out.alerts)
    sinks.write("commands", [c.to_dict(keys) for c in out.commands])
    result.commands_written += len(out.commands)


def summary(result: ReplayResult, engine: Engine) -> dict[str, Any]:
    """The summary JSON: what was read, kept, rejected, spent and alerted."""
    stats = engine.stats
    eps = stats.accepted / result.elapsed_s if result.elapsed_s > 0 else 0.0
    return {
        "events_read": result.events_read,
        "accepted": stats.accepted,
        "rejected": dict(sorted(result.rejected.items())),
        "duplicates": stats.duplicates,
        "formats": dict(sorted(result.formats.items())),
        "skipped": result.skipped,
        "unpriced": stats.unpriced,
        "unpriced_models": dict(sorted(stats.unpriced_models.items())),
        "use_cases": {name: t.to_dict() for name, t in sorted(stats.use_cases.items())},
        "alerts": dict(sorted(stats.alerts.items())),
        "alert_records": result.alerts_written,
        "commands": result.commands_written,
        "evicted": {
            "use_cases": stats.evicted_use_cases,
            "dedupe_ids": stats.evicted_dedupe_ids,
        },
        "elapsed_s": round(result.elapsed_s, 3),
        "events_per_second": round(eps, 1),
    }
