"""Dead letters in the worker's log: rate-limited per reason, never the payload.

A dead letter's ``original`` (and the decoder's ``message``, which may quote a
field's value) can hold prompts, keys or personal data, so a log line names only
what locates the record: the reason, the field, the use case (cut short), and
the topic, partition and offset where the whole record is. The first letter of
each reason is logged at once; after that at most one line per reason every
``interval_s``, with how many letters of that reason came since the last line
(a flood of bad records must not flood the log too).

>>> from spendsentry.ingest import DeadLetter, SourcePosition
>>> from spendsentry.ingest.deadletter import RejectReason
>>> clock = iter([0.0, 1.0, 2.0, 70.0])
>>> lines = []
>>> book = DeadLetterLog(interval_s=60.0, clock=lambda: next(clock), emit=lines.append)
>>> src = SourcePosition("ai.usage", partition=3, offset=41)
>>> for _ in range(4):
...     book.note([DeadLetter(RejectReason.NOT_JSON, "secret=abc", src, b"sk-live")])
>>> print("\\n".join(lines))
dead letter not_json (use case ?, field -) at ai.usage[3]@41
3 dead letters not_json in the last 70 s (use case ?, field -) at ai.usage[3]@41
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from spendsentry.ingest import DeadLetter

__all__ = ["DeadLetterLog"]

log = logging.getLogger("spendsentry.worker.deadletters")

_USE_CASE_CHARS = 80


@dataclass(slots=True)
class _Reason:
    logged_at: float
    since: int = 0
    last: DeadLetter | None = None


class DeadLetterLog:
    """Logs dead letters, at most one line per reason per ``interval_s`` (see the module doc)."""

    def __init__(
        self,
        interval_s: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        emit: Callable[[str], None] | None = None,
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._emit = emit or (lambda line: log.warning("%s", line))
        self._reasons: dict[str, _Reason] = {}

    def note(self, letters: Iterable[DeadLetter]) -> None:
        """Log what is due for ``letters`` (a batch's dead letters)."""
        for letter in letters:
            for reason, n in letter.counts().items():
                self._note(reason, n, letter)

    def _note(self, reason: str, n: int, letter: DeadLetter) -> None:
        now = self._clock()
        state = self._reasons.get(reason)
        if state is None:
            self._reasons[reason] = _Reason(now)
            self._emit(f"dead letter {reason} {_where(letter)}")
            if n > 1:
                self._reasons[reason].since, self._reasons[reason].last = n - 1, letter
            return
        state.since += n
        state.last = letter
        elapsed = now - state.logged_at
        if elapsed >= self.interval_s:
            self._emit(
                f"{state.since} dead letters {reason} in the last {elapsed:.0f} s {_where(letter)}"
            )
            state.logged_at, state.since, state.last = now, 0, None


def _where(letter: DeadLetter) -> str:
    # Producer-controlled: no line breaks or control characters into the log.
    use_case = "".join(c if c.isprintable() else "?" for c in (letter.use_case or "?"))
    use_case = use_case[:_USE_CASE_CHARS]
    src = letter.source
    at = src.name
    if src.partition is not None:
        at += f"[{src.partition}]@{src.offset}"
    elif src.line is not None:
        at += f":{src.line}"
    return f"(use case {use_case}, field {letter.field or '-'}) at {at}"
