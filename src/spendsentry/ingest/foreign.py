"""Foreign shapes to events: OTLP traces (JSON, or protobuf bytes) and LiteLLM payloads.

:class:`ForeignShapes` is the :class:`~spendsentry.ingest.decoder.Decoder`'s
collaborator for every record that is not a native event. The adapters
(:mod:`~spendsentry.ingest.otlp`, :mod:`~spendsentry.ingest.otlp_proto`,
:mod:`~spendsentry.ingest.litellm`) build contract-shaped dicts and the
decoder's own validator checks them, so every limit applies alike; a dead
letter keeps the foreign original (the span or the payload).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from spendsentry.events import Event
from spendsentry.ingest.deadletter import DeadLetter, RejectReason, SourcePosition
from spendsentry.ingest.litellm import LiteLLMMapping, is_litellm_payload, map_payload
from spendsentry.ingest.otlp import MappingError, OtlpMapping, is_otlp_traces, map_traces
from spendsentry.ingest.otlp_proto import ProtoError, decode_traces, looks_like_protobuf
from spendsentry.ingest.otlp_proto import describe as describe_protobuf
from spendsentry.ingest.validate import Reject

if TYPE_CHECKING:
    from spendsentry.ingest.decoder import DecodeResult

__all__ = ["ForeignShapes"]


class ForeignShapes:
    """Decodes OTLP trace requests and LiteLLM payloads into a :class:`DecodeResult`.

    Parameters
    ----------
    otlp, litellm
        The mappings (which attribute names the use case, and so on).
    event_from_dict
        The validator that checks each mapped event (raises ``Reject``).
    """

    def __init__(
        self,
        otlp: OtlpMapping,
        litellm: LiteLLMMapping,
        event_from_dict: Callable[[dict[str, Any], float], Event],
    ) -> None:
        self.otlp = otlp
        self.litellm = litellm
        self.event_from_dict = event_from_dict

    def decode_binary(
        self,
        raw: bytes,
        source: SourcePosition,
        error: orjson.JSONDecodeError,
        now: float,
        result: DecodeResult,
    ) -> None:
        """A record that is not JSON: an OTLP protobuf trace request, or a dead letter.

        Tried only after JSON failed, so JSON records never pay for it. A
        protobuf message of another kind gets a reason that says what it is.
        """
        try:
            doc = decode_traces(raw)
        except ProtoError as exc:
            if looks_like_protobuf(raw):
                result.rejected.append(
                    DeadLetter(
                        RejectReason.UNSUPPORTED_PROTOBUF,
                        f"{describe_protobuf(raw)} ({exc})",
                        source,
                        raw,
                    )
                )
            else:
                result.rejected.append(
                    DeadLetter(RejectReason.NOT_JSON, f"not JSON: {error}", source, raw)
                )
            return
        self.decode(doc, source, None, raw, now, result)

    def decode(
        self,
        doc: dict[str, Any],
        source: SourcePosition,
        index: int | None,
        raw: bytes | None,
        now: float,
        result: DecodeResult,
    ) -> bool:
        """Decode an OTLP batch or LiteLLM payload; False when ``doc`` is neither.

        The adapters build contract-shaped dicts and the native validator
        checks them, so every limit applies alike. A dead letter keeps the
        foreign original: the span (``index`` counts spans across the batch)
        or the payload.
        """
        if is_otlp_traces(doc):
            try:
                traces = map_traces(doc, self.otlp)
            except MappingError as exc:
                self._reject(exc, doc, source, index, raw, result)
                return True
            result.skipped += traces.skipped
            for item in traces.items:
                self._append(
                    item.event, item.error, "otlp", item.span, source, item.index, None, now, result
                )
            return True
        if is_litellm_payload(doc):
            try:
                event = map_payload(doc, self.litellm)
            except MappingError as exc:
                self._reject(exc, doc, source, index, raw, result)
                return True
            if event is None:
                result.skipped += 1
            else:
                self._append(event, None, "litellm", doc, source, index, raw, now, result)
            return True
        return False

    def _append(
        self,
        event: dict[str, Any] | None,
        error: MappingError | None,
        source_format: str,
        original: Any,
        source: SourcePosition,
        index: int | None,
        raw: bytes | None,
        now: float,
        result: DecodeResult,
    ) -> None:
        if error is not None or event is None:
            problem = error or MappingError(RejectReason.INVALID_VALUE, "not an event")
            self._reject(problem, original, source, index, raw, result)
            return
        try:
            built = self.event_from_dict(event, now)
        except Reject as rej:
            self._reject(rej, original, source, index, raw, result, event)
            return
        built.source_format = source_format
        result.events.append(built)

    @staticmethod
    def _reject(
        exc: MappingError | Reject,
        original: Any,
        source: SourcePosition,
        index: int | None,
        raw: bytes | None,
        result: DecodeResult,
        event: dict[str, Any] | None = None,
    ) -> None:
        event = event or {}
        result.rejected.append(
            DeadLetter(
                exc.reason,
                exc.message,
                source,
                raw if raw is not None else orjson.dumps(original),
                index=index,
                event_id=event.get("event_id"),
                use_case=event.get("use_case"),
                field=exc.field_name,
            )
        )
