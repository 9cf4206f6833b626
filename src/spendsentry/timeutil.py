"""Event-time helpers: parse the timestamps producers send, format RFC 3339.

Producers send RFC 3339 strings, epoch seconds or epoch milliseconds; the
engine works on float epoch seconds throughout.
"""

from __future__ import annotations

from datetime import UTC, datetime

#: Numbers above this are epoch *milliseconds* (1e11 s is the year 5138).
MILLIS_THRESHOLD = 1e11


def parse_ts(value: object) -> float:
    """Return epoch seconds for an RFC 3339 string, epoch seconds or epoch milliseconds.

    Raises ``ValueError`` (with a reason) or ``TypeError`` for anything else.

    >>> parse_ts("2026-11-02T09:00:00Z")
    1793610000.0
    >>> parse_ts(1793610000)
    1793610000.0
    >>> parse_ts(1793610000500)
    1793610000.5
    >>> parse_ts("2026-11-02 09:00:00+01:00")
    1793606400.0
    """
    if isinstance(value, bool):
        raise TypeError("timestamp must be an RFC 3339 string or epoch number, got a boolean")
    if isinstance(value, int | float):
        ts = float(value)
        if ts != ts or ts in (float("inf"), float("-inf")):
            raise ValueError("timestamp is not a finite number")
        if ts > MILLIS_THRESHOLD:
            ts /= 1000.0
        if ts < 0:
            raise ValueError("timestamp is before 1970")
        return ts
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("timestamp is an empty string")
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"timestamp {value[:64]!r} is not RFC 3339") from None
        if dt.tzinfo is None:
            # RFC 3339 requires an offset; treating a naive time as UTC is what
            # every gateway we know of means by it.
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    raise TypeError(
        f"timestamp must be an RFC 3339 string or epoch number, got {type(value).__name__}"
    )


def format_ts(ts: float) -> str:
    """Format epoch seconds as RFC 3339 UTC with millisecond precision.

    >>> format_ts(1793610000.5)
    '2026-11-02T09:00:00.500Z'
    """
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
