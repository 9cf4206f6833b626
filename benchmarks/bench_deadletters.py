"""Dead-letter amplification: bytes of dead letters written per byte of input.

    python benchmarks/bench_deadletters.py

Each input is one Kafka message (or replay line); the dead letters are what the
worker publishes to ai.deadletter and replay writes with --deadletter-out (one
JSON line each). docs/reliability.md quotes the output. Run it against an
older checkout (``PYTHONPATH=<checkout>/src``) for the figures before a change.
"""

from __future__ import annotations

import orjson

from spendsentry.engine import Engine
from spendsentry.ingest import Decoder, SourcePosition, deadletter
from spendsentry.ingest.deadletter import DeadLetter
from spendsentry.policy import PolicySet

#: What the worker and replay do to a batch's letters before writing them (a
#: checkout from before one_per_source wrote them as they came).
_written = getattr(deadletter, "one_per_source", lambda letters: letters)

NOW = 1_793_610_000.0
SOURCE = SourcePosition("ai.usage", partition=0, offset=1)


def _letters_bytes(letters: list[DeadLetter]) -> int:
    return sum(len(orjson.dumps(d.to_dict())) + 1 for d in letters)


def decoded(name: str, raw: bytes) -> None:
    result = Decoder().decode(raw, SOURCE, now=NOW)
    report(name, raw, result.rejected, len(result.events))


def late(name: str, events: int) -> None:
    """An array of valid events behind the watermark: the engine's ``late`` letters."""
    engine = Engine(PolicySet.empty())
    decoder = Decoder()
    current = decoder.decode(
        orjson.dumps({"event_id": "now", "ts": NOW, "use_case": "u"}), SOURCE, now=NOW
    )
    engine.process(current.events)
    engine.advance(NOW + engine.config.allowed_lateness_s)
    docs = [{"event_id": f"e{i}", "ts": NOW - 3600, "use_case": "u"} for i in range(events)]
    raw = orjson.dumps(docs)
    result = decoder.decode(raw, SOURCE, now=NOW)
    out = engine.process(result.events, [SOURCE] * len(result.events))
    report(name, raw, result.rejected + out.rejected, 0)


def report(name: str, raw: bytes, letters: list[DeadLetter], events: int) -> None:
    letters = _written(letters)
    written = _letters_bytes(letters)
    print(
        f"{name}: input {len(raw):,} B, {len(letters):,} dead letters, {written:,} B written, "
        f"amplification {written / len(raw):.2f}x, largest letter "
        f"{max((len(orjson.dumps(d.to_dict())) for d in letters), default=0):,} B, "
        f"events kept {events}"
    )


def main() -> None:
    decoded("100k junk array elements", orjson.dumps([1] * 100_000))
    decoded("800 KB invalid record", b'{"note":"' + b"x" * 799_989 + b'"}')
    bad_kind = [
        {"event_id": f"e{i}", "ts": NOW - 60, "use_case": "u", "kind": "chat"} for i in range(2000)
    ]
    decoded("2,000 events with a bad kind", orjson.dumps(bad_kind))
    late("2,000 late events", 2000)


if __name__ == "__main__":
    main()
