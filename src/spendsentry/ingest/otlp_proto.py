"""OTLP protobuf trace requests read straight from the wire, into the OTLP JSON shape.

The Collector's Kafka exporter writes ``otlp_proto`` by default, and OTLP/HTTP
exporters post ``application/x-protobuf``: both are one serialized
``ExportTraceServiceRequest``. :func:`decode_traces` reads the few messages of
``opentelemetry/proto/trace/v1/trace.proto`` that matter here and returns the
dict the Collector's ``otlp_json`` encoding would have given (hex ids, int
enums), so :func:`spendsentry.ingest.otlp.map_traces` maps both encodings
with one code path and gives them the same ``event_id``.

Why a wire reader rather than ``opentelemetry-proto``'s generated classes: the
protobuf runtime parses fast in C, but a parsed message must still become the
dict the mapping reads, and ``MessageToDict`` is slower than reading the wire
here (``benchmarks/bench_otlp_proto.py``); it would also pin ``protobuf`` for
every gateway that installs spendsentry. Six message types, four wire types:
the format is small and stable (protobuf forbids changing field numbers).
Span events, links and trace state are skipped unread.

>>> span = (b"\\x0a\\x10" + bytes(range(1, 17)) + b"\\x12\\x08" + bytes(range(1, 9))
...         + b"\\x39" + (1793610000 * 10**9).to_bytes(8, "little"))
>>> raw = b"\\x0a" + bytes([len(span) + 4]) + b"\\x12" + bytes([len(span) + 2]) + b"\\x12" + bytes(
...     [len(span)]) + span
>>> doc = decode_traces(raw)
>>> s = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
>>> s["traceId"], s["spanId"], s["startTimeUnixNano"]
('0102030405060708090a0b0c0d0e0f10', '0102030405060708', 1793610000000000000)
>>> describe(b"\\x08\\x96\\x01\\x12\\x03abc")
'a protobuf message (fields 1:varint, 2:bytes) that is not an OTLP trace request'
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from typing import Any

__all__ = [
    "ProtoError",
    "decode_traces",
    "describe",
    "encode_status",
    "encode_success",
    "looks_like_protobuf",
]

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_WIRE_NAMES = {0: "varint", 1: "fixed64", 2: "bytes", 5: "fixed32"}
_DOUBLE = struct.Struct("<d")


class ProtoError(ValueError):
    """The bytes are not the protobuf message that was expected."""


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos < end and buf[pos] < 0x80:
        return buf[pos], pos + 1  # most tags and lengths: one byte
    result = shift = 0
    while pos < end:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtoError("varint longer than 10 bytes")
    raise ProtoError("truncated varint")


def _fields(buf: bytes, pos: int, end: int) -> Any:
    """Yield ``(field number, wire type, value)``; a length-delimited value is (start, stop)."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtoError("field number 0")
        if wire == _VARINT:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value
        elif wire == _LEN:
            size, pos = _varint(buf, pos, end)
            stop = pos + size
            if stop > end:
                raise ProtoError(f"field {number}: {size} bytes past the end of the message")
            yield number, wire, (pos, stop)
            pos = stop
        elif wire == _FIXED64:
            if pos + 8 > end:
                raise ProtoError(f"field {number}: truncated fixed64")
            yield number, wire, int.from_bytes(buf[pos : pos + 8], "little")
            pos += 8
        elif wire == _FIXED32:
            if pos + 4 > end:
                raise ProtoError(f"field {number}: truncated fixed32")
            yield number, wire, int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
        else:
            raise ProtoError(f"field {number}: wire type {wire} (groups are not used by OTLP)")


def _expect(name: str, number: int, wire: int, want: int) -> None:
    if wire != want:
        raise ProtoError(
            f"{name} field {number} is {_WIRE_NAMES.get(wire, wire)}, expected {_WIRE_NAMES[want]}"
        )


def _text(buf: bytes, span: tuple[int, int], name: str) -> str:
    try:
        return buf[span[0] : span[1]].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtoError(f"{name} is not UTF-8") from None


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _any_value(buf: bytes, start: int, end: int) -> dict[str, Any]:
    """``AnyValue`` (common.proto): one of string 1, bool 2, int 3, double 4, array 5,
    kvlist 6, bytes 7."""
    # The common shapes in one step: a short string, or an int of one field.
    tag = buf[start] if start < end else 0
    if (
        tag == 0x0A
        and start + 1 < end
        and buf[start + 1] < 0x80
        and start + 2 + buf[start + 1] == end
    ):
        return {"stringValue": _text(buf, (start + 2, end), "stringValue")}
    if tag == 0x18:
        number, stop = _varint(buf, start + 1, end)
        if stop == end:
            return {"intValue": _int64(number)}
    out: dict[str, Any] = {}
    for number, wire, value in _fields(buf, start, end):
        if number == 1:
            _expect("AnyValue", number, wire, _LEN)
            out = {"stringValue": _text(buf, value, "stringValue")}
        elif number == 2:
            _expect("AnyValue", number, wire, _VARINT)
            out = {"boolValue": bool(value)}
        elif number == 3:
            _expect("AnyValue", number, wire, _VARINT)
            out = {"intValue": _int64(value)}
        elif number == 4:
            _expect("AnyValue", number, wire, _FIXED64)
            out = {"doubleValue": _DOUBLE.unpack(value.to_bytes(8, "little"))[0]}
        elif number == 5:
            _expect("AnyValue", number, wire, _LEN)
            values = [_any_value(buf, *v) for n, _, v in _fields(buf, *value) if n == 1]
            out = {"arrayValue": {"values": values}}
        elif number == 6:
            _expect("AnyValue", number, wire, _LEN)
            out = {"kvlistValue": {"values": _key_values(buf, value[0], value[1], 1)}}
        elif number == 7:
            _expect("AnyValue", number, wire, _LEN)
            out = {"bytesValue": base64.b64encode(buf[value[0] : value[1]]).decode()}
    return out


def _key_value(buf: bytes, start: int, end: int) -> dict[str, Any]:
    # The layout encoders write (key, then value, short lengths) without the
    # general loop: attributes are most of a span's bytes.
    if end - start >= 4 and buf[start] == 0x0A and buf[start + 1] < 0x80:
        key_stop = start + 2 + buf[start + 1]
        if (
            key_stop + 2 <= end
            and buf[key_stop] == 0x12
            and buf[key_stop + 1] < 0x80
            and key_stop + 2 + buf[key_stop + 1] == end
        ):
            return {
                "key": _text(buf, (start + 2, key_stop), "attribute key"),
                "value": _any_value(buf, key_stop + 2, end),
            }
    key = ""
    value: dict[str, Any] = {}
    for number, wire, v in _fields(buf, start, end):
        if number == 1:
            _expect("KeyValue", number, wire, _LEN)
            key = _text(buf, v, "attribute key")
        elif number == 2:
            _expect("KeyValue", number, wire, _LEN)
            value = _any_value(buf, *v)
    return {"key": key, "value": value}


def _key_values(buf: bytes, start: int, end: int, field_number: int) -> list[dict[str, Any]]:
    out = []
    for number, wire, v in _fields(buf, start, end):
        if number == field_number:
            _expect("attributes", number, wire, _LEN)
            out.append(_key_value(buf, *v))
    return out


def _status(buf: bytes, start: int, end: int) -> dict[str, Any]:
    status: dict[str, Any] = {}
    for number, wire, v in _fields(buf, start, end):
        if number == 2 and wire == _LEN:
            status["message"] = _text(buf, v, "status.message")
        elif number == 3 and wire == _VARINT:
            status["code"] = v
    return status


def _span(buf: bytes, start: int, end: int) -> dict[str, Any]:
    """``Span``: ids 1, 2, 4; name 5; kind 6; times 7, 8 (fixed64); attributes 9;
    status 15. Trace state 3, events 11 and links 13 are not read."""
    span: dict[str, Any] = {}
    attributes: list[dict[str, Any]] = []
    for number, wire, v in _fields(buf, start, end):
        if number in (1, 2, 4):
            _expect("Span", number, wire, _LEN)
            name = ("traceId", "spanId", None, "parentSpanId")[number - 1]
            span[name] = buf[v[0] : v[1]].hex()  # type: ignore[index]
        elif number == 5:
            _expect("Span", number, wire, _LEN)
            span["name"] = _text(buf, v, "span name")
        elif number == 6:
            _expect("Span", number, wire, _VARINT)
            span["kind"] = v
        elif number in (7, 8):
            _expect("Span", number, wire, _FIXED64)
            span["startTimeUnixNano" if number == 7 else "endTimeUnixNano"] = v
        elif number == 9:
            _expect("Span", number, wire, _LEN)
            attributes.append(_key_value(buf, *v))
        elif number == 15:
            _expect("Span", number, wire, _LEN)
            span["status"] = _status(buf, *v)
    span["attributes"] = attributes
    return span


def _repeated(
    buf: bytes,
    start: int,
    end: int,
    name: str,
    readers: dict[int, tuple[str, Callable[[bytes, int, int], Any]]],
    repeated: frozenset[int],
) -> dict[str, Any]:
    """A message whose listed fields are messages (``repeated`` ones gathered in lists)."""
    out: dict[str, Any] = {}
    for number, wire, v in _fields(buf, start, end):
        reader = readers.get(number)
        if reader is None:
            continue  # schema_url and the like
        _expect(name, number, wire, _LEN)
        key, read = reader
        if number in repeated:
            out.setdefault(key, []).append(read(buf, *v))
        else:
            out[key] = read(buf, *v)
    return out


def _resource(buf: bytes, start: int, end: int) -> dict[str, Any]:
    return {"attributes": _key_values(buf, start, end, 1)}


def _scope(buf: bytes, start: int, end: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for number, wire, v in _fields(buf, start, end):
        if number in (1, 2) and wire == _LEN:
            out["name" if number == 1 else "version"] = _text(buf, v, "scope name")
    return out


def _scope_spans(buf: bytes, start: int, end: int) -> dict[str, Any]:
    return _repeated(
        buf, start, end, "ScopeSpans", {1: ("scope", _scope), 2: ("spans", _span)}, _SPANS
    )


def _resource_spans(buf: bytes, start: int, end: int) -> dict[str, Any]:
    return _repeated(
        buf,
        start,
        end,
        "ResourceSpans",
        {1: ("resource", _resource), 2: ("scopeSpans", _scope_spans)},
        _SPANS,
    )


_SPANS = frozenset({2})


def decode_traces(raw: bytes) -> dict[str, Any]:
    """An ``ExportTraceServiceRequest`` as the OTLP JSON dict; raises :class:`ProtoError`.

    A request must hold at least one ``ResourceSpans`` (field 1): an empty
    message, or one whose top-level fields are something else, is not taken
    for a trace request.
    """
    resource_spans = []
    for number, wire, v in _fields(raw, 0, len(raw)):
        if number != 1:
            raise ProtoError(f"top-level field {number}: an ExportTraceServiceRequest has only 1")
        _expect("ExportTraceServiceRequest", number, wire, _LEN)
        resource_spans.append(_resource_spans(raw, *v))
    if not resource_spans:
        raise ProtoError("no resourceSpans")
    return {"resourceSpans": resource_spans}


def looks_like_protobuf(raw: bytes) -> bool:
    """True when ``raw`` parses as a protobuf message's top-level fields.

    >>> looks_like_protobuf(b"\\x0a\\x00"), looks_like_protobuf(b'{"a": 1}')
    (True, False)
    """
    try:
        return any(True for _ in _fields(raw, 0, len(raw)))
    except ProtoError:
        return False


def describe(raw: bytes) -> str:
    """What a protobuf message that is not a trace request looks like, for a dead letter.

    OTLP metrics and logs requests share the trace request's outer layers; the
    first field of their innermost records tells them apart (a metric's name
    is text, a log record's time a fixed64, a span's trace id 16 bytes).
    """
    kinds = _inner_record(raw)
    if kinds is not None:
        return f"an OTLP {kinds} export request, not traces: send traces to spendsentry"
    fields = []
    try:
        for number, wire, _ in _fields(raw, 0, len(raw)):
            label = f"{number}:{_WIRE_NAMES[wire]}"
            if label not in fields:
                fields.append(label)
            if len(fields) == 6:
                break
    except ProtoError:
        pass
    return f"a protobuf message (fields {', '.join(fields)}) that is not an OTLP trace request"


def _inner_record(raw: bytes) -> str | None:
    """ "metrics" or "logs" when ``raw`` nests like an OTLP metrics or logs request."""
    try:
        for number, wire, outer in _fields(raw, 0, len(raw)):
            if number != 1 or wire != _LEN:
                return None
            for n2, w2, scoped in _fields(raw, *outer):
                if n2 != 2 or w2 != _LEN:
                    continue
                for n3, w3, record in _fields(raw, *scoped):
                    if n3 != 2 or w3 != _LEN:
                        continue
                    for n4, w4, v4 in _fields(raw, *record):
                        if n4 == 1 and w4 == _FIXED64:
                            return "logs"
                        if n4 == 1 and w4 == _LEN and v4[1] - v4[0] != 16:
                            return "metrics"
                        return None
    except ProtoError:
        return None
    return None


# -- the two answers the OTLP/HTTP receiver writes -------------------------------


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _encode_len(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | _LEN) + _encode_varint(len(payload)) + payload


def encode_success(rejected_spans: int, error_message: str) -> bytes:
    """An ``ExportTraceServiceResponse``: empty when every span was taken, else
    ``partial_success`` (1) with ``rejected_spans`` (1) and ``error_message`` (2).

    >>> encode_success(0, ""), encode_success(2, "no")
    (b'', b'\\n\\x06\\x08\\x02\\x12\\x02no')
    """
    if not rejected_spans and not error_message:
        return b""
    inner = b""
    if rejected_spans:
        inner += _encode_varint(1 << 3 | _VARINT) + _encode_varint(rejected_spans)
    if error_message:
        inner += _encode_len(2, error_message.encode())
    return _encode_len(1, inner)


def encode_status(code: int, message: str) -> bytes:
    """A ``google.rpc.Status`` with ``code`` (1) and ``message`` (2): an error answer's body.

    >>> encode_status(3, "bad")
    b'\\x08\\x03\\x12\\x03bad'
    """
    return (
        _encode_varint(1 << 3 | _VARINT) + _encode_varint(code) + _encode_len(2, message.encode())
    )
