"""Ingest: bytes in, normalized events and dead-letter records out.

Every adapter (native JSON, and later OTLP JSON and LiteLLM payloads) returns
the same two lists, so nothing that enters spendsentry is ever silently lost:
it is either an event or a :class:`DeadLetter` with a reason.
"""

from spendsentry.ingest.deadletter import DeadLetter, RejectReason, SourcePosition
from spendsentry.ingest.decoder import Decoder, DecodeResult, IngestLimits

__all__ = [
    "DeadLetter",
    "DecodeResult",
    "Decoder",
    "IngestLimits",
    "RejectReason",
    "SourcePosition",
]
