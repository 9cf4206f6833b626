"""The message contracts: JSON Schemas for everything spendsentry reads or writes.

The schemas live in the top-level ``schemas/`` directory (``src/spendsentry/schemas``
links to it, so they ship as package data). They are the documentation that
gateways written in other languages read, and the tests hold spendsentry's own
messages to them.

>>> validate("outcome-event", {"type": "outcome", "event_id": "o1", "ts": 1793610000,
...                            "use_case": "support_chat", "outcome": "ticket_resolved"})
[]
>>> for line in validate("outcome-event", {"type": "outcome", "event_id": "o1", "ts": "yesterday",
...                                         "use_case": "", "outcome": "ticket_resolved"}):
...     print(line)
$.ts: 'yesterday' is not an RFC 3339 date-time (e.g. 2026-11-02T09:00:00Z)
$.use_case: '' should be non-empty
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Iterable
from datetime import datetime
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from spendsentry import alerts as _alerts
from spendsentry.messages.severity import SEVERITIES

__all__ = [
    "ALERT_KINDS",
    "DEAD_LETTER_REASONS",
    "LADDER_ACTIONS",
    "SCHEMA_NAMES",
    "SEVERITIES",
    "THROTTLE_ACTIONS",
    "format_error",
    "format_errors",
    "key_path",
    "load_schema",
    "validate",
    "validator",
]

#: One schema per message (file ``schemas/<name>.json``).
SCHEMA_NAMES: tuple[str, ...] = (
    "usage-event",
    "outcome-event",
    "alert",
    "throttle-command",
    "dead-letter",
    "policy",
    "control-action",
)

# The enums other modules need, spelled once in Python. tests/unit/test_schemas.py
# checks each against its schema so the two cannot drift apart.
#: The detectors (the ``kind`` of an alert), defined once next to the alert type;
#: ``SEVERITIES`` (lowest first) is the message vocabulary's.
ALERT_KINDS: tuple[str, ...] = _alerts.ALERT_KINDS
#: The ``action`` of a throttle command.
THROTTLE_ACTIONS: tuple[str, ...] = (
    "limit_rate",
    "route_model",
    "cap_input_tokens",
    "block",
    "release",
)
#: The ``action`` of a policy ladder step ("none": alert only).
LADDER_ACTIONS: tuple[str, ...] = ("none", "limit_rate", "route_model", "cap_input_tokens", "block")
#: The ``reason`` of a dead letter.
DEAD_LETTER_REASONS: tuple[str, ...] = (
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "invalid_value",
    "negative_value",
    "absurd_value",
    "bad_timestamp",
    "future_timestamp",
    "oversized",
    "late",
    "unknown_type",
    "empty",
    "unsupported_protobuf",
)

# RFC 3339 section 5.6 ``date-time``: "T" and "Z" may be lower case, the offset is required.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))",
    re.ASCII,
)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
_MAX_MESSAGE_CHARS = 300


def _is_rfc3339(value: object) -> bool:
    """The ``date-time`` format check (non-strings pass: ``type`` judges those)."""
    if not isinstance(value, str):
        return True
    m = _RFC3339.fullmatch(value)
    if m is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    off_h, off_m = m.group(7), m.group(8)
    if second > 60 or (off_h is not None and (int(off_h) > 23 or int(off_m) > 59)):
        return False
    try:
        # Second 60 is a leap second; datetime cannot hold it but the date must still exist.
        datetime(year, month, day, hour, minute, min(second, 59))
    except ValueError:
        return False
    return True


def _format_checker() -> FormatChecker:
    # jsonschema checks "date-time" only when the optional rfc3339-validator is
    # installed, and silently passes everything otherwise; a check of our own
    # makes the contract hold whatever else is installed.
    checker = FormatChecker()
    checker.checks("date-time")(_is_rfc3339)
    return checker


def _schema_file(name: str) -> Any:
    stem = name.removesuffix(".json")
    if stem not in SCHEMA_NAMES:
        raise ValueError(f"unknown schema {name!r}; expected one of {', '.join(SCHEMA_NAMES)}")
    return resources.files("spendsentry") / "schemas" / f"{stem}.json"


def load_schema(name: str) -> dict[str, Any]:
    """Return the schema ``name`` (e.g. ``"alert"`` or ``"alert.json"``) as a fresh dict.

    Parameters
    ----------
    name
        One of :data:`SCHEMA_NAMES`, with or without ``.json``.

    Returns
    -------
    dict
        The parsed schema; the caller may modify it.

    Raises
    ------
    ValueError
        For a name that is not one of :data:`SCHEMA_NAMES`.
    """
    doc = json.loads(_schema_file(name).read_text(encoding="utf-8"))
    if not isinstance(doc, dict):
        raise ValueError(f"schema {name!r} is not a JSON object")
    return doc


def validator(name: str) -> Draft202012Validator:
    """Return the (cached) validator for schema ``name``, with date-time checked.

    Parameters
    ----------
    name
        One of :data:`SCHEMA_NAMES`, with or without ``.json``.

    Returns
    -------
    jsonschema.Draft202012Validator
        Shared between callers; it is stateless, so this is safe across threads.
    """
    return _validator(name.removesuffix(".json"))


@functools.cache
def _validator(stem: str) -> Draft202012Validator:
    return Draft202012Validator(load_schema(stem), format_checker=_format_checker())


def validate(name: str, obj: object) -> list[str]:
    """Check ``obj`` against schema ``name``.

    Parameters
    ----------
    name
        One of :data:`SCHEMA_NAMES`, with or without ``.json``.
    obj
        The parsed JSON message.

    Returns
    -------
    list of str
        One line per problem, each starting with the JSON path (``$`` is the
        message itself, e.g. ``$.evidence: missing required key 'metric'``),
        sorted by path. Empty when ``obj`` is valid.
    """
    return format_errors(validator(name).iter_errors(obj), root="$")


def format_errors(errors: Iterable[ValidationError], root: str = "$") -> list[str]:
    """Format validation errors with :func:`format_error`, sorted and without duplicates."""
    lines: list[str] = []
    for error in sorted(errors, key=lambda e: (_path_sort_key(e), e.message)):
        for line in format_error(error, root):
            if line not in lines:
                lines.append(line)
    return lines


def format_error(error: ValidationError, root: str = "$") -> list[str]:
    """Turn one validation error into lines of the form ``PATH: problem``.

    Parameters
    ----------
    error
        An error from ``iter_errors``.
    root
        How the path of the whole document is written: ``"$"`` gives
        ``$.scope.use_case``, ``""`` gives ``scope.use_case`` (TOML-style, for
        policy files; the document itself is then ``(top level)``).

    Returns
    -------
    list of str
        Usually one line; an unknown-keys error gives one line per unknown key
        so each names its key.
    """
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        lines = _unknown_keys(error, root, path)
        if lines:
            return lines
    if error.validator == "required" and isinstance(error.instance, dict):
        line = _missing_key(error, root, path)
        if line is not None:
            return [line]
    if error.validator == "anyOf":
        lines = _any_of(error, root, path)
        if lines:
            return lines
    if error.validator == "format" and error.validator_value == "date-time":
        return [
            f"{key_path(root, path)}: {_short(error.instance)} is not an RFC 3339 date-time"
            " (e.g. 2026-11-02T09:00:00Z)"
        ]
    return [f"{key_path(root, path)}: {_shorten(error.message)}"]


def _unknown_keys(error: ValidationError, root: str, path: list[Any]) -> list[str]:
    """One line per key the schema does not allow, with the closest allowed key."""
    allowed = sorted(error.schema.get("properties", {}))
    lines = []
    for key in (k for k in error.instance if k not in allowed):
        hint = difflib.get_close_matches(str(key), allowed, n=1)
        if hint:
            suffix = f"; did you mean {hint[0]!r}?"
        else:
            suffix = f"; expected one of: {', '.join(allowed)}" if allowed else ""
        lines.append(f"{key_path(root, [*path, key])}: unknown key{suffix}")
    return lines


def _missing_key(error: ValidationError, root: str, path: list[Any]) -> str | None:
    """The line naming the missing key (None if none is missing after all)."""
    # jsonschema reports one error per missing key; the message names it.
    missing = [k for k in error.validator_value if k not in error.instance]
    absent = next((k for k in missing if error.message.startswith(repr(k))), None)
    if absent is None and missing:
        absent = missing[0]
    if absent is None:
        return None
    return f"{key_path(root, [*path, absent])}: missing ({_rule(error) or 'required'})"


def _any_of(error: ValidationError, root: str, path: list[Any]) -> list[str]:
    """A value that matched no branch: the rule, the branch it was meant for, or the choices."""
    rule = _rule(error)
    if rule:
        return [f"{key_path(root, path)}: {rule}"]
    if error.context:
        # Report the branch the value was meant for (a negative number broke the
        # number branch's minimum), not that it matched no branch at all.
        closer = [e for e in error.context if e.validator != "type"]
        if closer:
            return format_error(closer[0], root)
        wanted = _anyof_expectations(error)
        if wanted:
            return [f"{key_path(root, path)}: {_short(error.instance)} is neither {wanted}"]
    return []


def _rule(error: ValidationError) -> str | None:
    # A ``then`` branch in our schemas carries a description saying which rule
    # it enforces ("route_model needs target_model"): a plain "'target_model'
    # is a required property" would not say why the key is required here.
    schema = error.schema
    if "then" in error.relative_schema_path and isinstance(schema, dict):
        description = schema.get("description")
        if isinstance(description, str):
            return description
    return None


def _anyof_expectations(error: ValidationError) -> str:
    names = []
    for sub in error.validator_value:
        if not isinstance(sub, dict):
            return ""
        if sub.get("format") == "date-time":
            names.append("an RFC 3339 date-time")
        elif "type" in sub and len(sub) <= 3:
            names.append(f"a {sub['type']}" if isinstance(sub["type"], str) else "")
        else:
            return ""
    if not all(names):
        return ""
    return " nor ".join(names)


def key_path(root: str, path: Iterable[object]) -> str:
    """Write a key path: ``key_path("$", ["a", 0, "b c"])`` is ``$.a[0]."b c"``.

    Keys other than letters, digits, ``_`` and ``-`` are quoted as in TOML, so
    a path names a policy file's key the way the file spells it.
    """
    out = root
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        key = str(part)
        text = key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)
        out = f"{out}.{text}" if out else text
    return out or "(top level)"


def _path_sort_key(error: ValidationError) -> tuple[str, ...]:
    return tuple(f"{p:08d}" if isinstance(p, int) else str(p) for p in error.absolute_path)


def _short(value: object) -> str:
    return _shorten(repr(value), 80)


def _shorten(text: str, limit: int = _MAX_MESSAGE_CHARS) -> str:
    # A message that quotes a whole large message would bury the path; cut it.
    return text if len(text) <= limit else text[: limit - 3] + "..."
