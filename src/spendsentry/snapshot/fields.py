"""Validated reading of a decoded snapshot document: every failure names the field.

A codec reads its part of the document through :class:`Fields`, which checks
presence and type and raises :class:`SnapshotError` with the field's path
(``$.engine.use_cases.chat.monitors[2].detector.window: expected int, got str``).
A field added in a later version is read with a default, so older documents
still load (see docs/worker.md, Snapshot format).

>>> f = Fields({"n": 3, "x": "a"}, "$")
>>> f.int("n"), f.int("added_later", 0)
(3, 0)
>>> f.int("x")
Traceback (most recent call last):
...
spendsentry.snapshot.SnapshotError: $.x: expected int, got str
>>> f.float("y")
Traceback (most recent call last):
...
spendsentry.snapshot.SnapshotError: $.y: missing
"""

from __future__ import annotations

import builtins
from typing import Any, TypeVar

from spendsentry.errors import SpendSentryError

T = TypeVar("T")
_MISSING: Any = object()
_NUMBER = (int, float)


class SnapshotError(SpendSentryError):
    """A snapshot could not be written, found or read; the message says why."""


# Its public home (what tracebacks and doctests show).
SnapshotError.__module__ = "spendsentry.snapshot"


def _name(value: object) -> str:
    return "nil" if value is None else type(value).__name__


class Fields:
    """One map of a snapshot document, read field by field with its path.

    Values are returned as stored (an int in a float field stays an int: the
    engine's arithmetic then gives the same result it gave before the snapshot).
    """

    __slots__ = ("data", "path")

    def __init__(self, data: object, path: builtins.str) -> None:
        if not isinstance(data, dict):
            raise SnapshotError(f"{path}: expected a map, got {_name(data)}")
        self.data: builtins.dict[Any, Any] = data
        self.path = path

    def fail(self, name: builtins.str, message: builtins.str) -> SnapshotError:
        """An error about field ``name`` (for checks a codec makes itself)."""
        return SnapshotError(f"{self.path}.{name}: {message}")

    def raw(self, name: builtins.str, default: Any = _MISSING) -> Any:
        """The value of ``name`` unchecked (``default`` when absent)."""
        value = self.data.get(name, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise self.fail(name, "missing")
            return default
        return value

    def typed(
        self,
        name: builtins.str,
        types: builtins.type | builtins.tuple[type, ...],
        what: builtins.str,
        default: Any,
    ) -> Any:
        value = self.raw(name, default)
        if value is default and default is not _MISSING:
            return value
        # bool is an int to Python, not to a snapshot.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
            raise self.fail(name, f"expected {what}, got {_name(value)}")
        return value

    def int(self, name: builtins.str, default: Any = _MISSING) -> builtins.int:
        return self.typed(name, int, "int", default)

    def float(self, name: builtins.str, default: Any = _MISSING) -> builtins.float:
        return self.typed(name, _NUMBER, "float", default)

    def bool(self, name: builtins.str, default: Any = _MISSING) -> builtins.bool:
        return self.typed(name, bool, "bool", default)

    def str(self, name: builtins.str, default: Any = _MISSING) -> builtins.str:
        return self.typed(name, str, "str", default)

    def bytes(self, name: builtins.str, default: Any = _MISSING) -> builtins.bytes:
        return self.typed(name, bytes, "bytes", default)

    def optional_float(self, name: builtins.str, default: Any = _MISSING) -> builtins.float | None:
        return self.typed(name, (*_NUMBER, type(None)), "float or nil", default)

    def optional_int(self, name: builtins.str, default: Any = _MISSING) -> builtins.int | None:
        return self.typed(name, (int, type(None)), "int or nil", default)

    def optional_str(self, name: builtins.str, default: Any = _MISSING) -> builtins.str | None:
        return self.typed(name, (str, type(None)), "str or nil", default)

    def list(
        self,
        name: builtins.str,
        item: builtins.type | builtins.tuple[type, ...] | None = None,
        default: Any = _MISSING,
    ) -> builtins.list[Any]:
        """A list; with ``item``, every element is checked against it."""
        value = self.typed(name, list, "list", default)
        if item is not None:
            for i, v in enumerate(value):
                if not isinstance(v, item) or (isinstance(v, bool) and bool not in _tuple(item)):
                    raise SnapshotError(
                        f"{self.path}.{name}[{i}]: expected {_what(item)}, got {_name(v)}"
                    )
        return value

    def rows(
        self,
        name: builtins.str,
        *columns: builtins.type | builtins.tuple[type, ...],
        default: Any = _MISSING,
    ) -> builtins.list[builtins.list[Any]]:
        """A list of fixed-width rows (tuples in the live object), each cell checked."""
        value = self.typed(name, list, "list", default)
        width = len(columns)
        for i, row in enumerate(value):
            if not isinstance(row, list) or len(row) != width:
                raise SnapshotError(f"{self.path}.{name}[{i}]: expected a row of {width}")
            for j, (v, t) in enumerate(zip(row, columns, strict=True)):
                if not isinstance(v, t) or (isinstance(v, bool) and bool not in _tuple(t)):
                    raise SnapshotError(
                        f"{self.path}.{name}[{i}][{j}]: expected {_what(t)}, got {_name(v)}"
                    )
        return value

    def map(
        self,
        name: builtins.str,
        key: builtins.type | builtins.tuple[type, ...] = builtins.str,
        value: builtins.type | builtins.tuple[type, ...] | None = None,
        default: Any = _MISSING,
    ) -> builtins.dict[Any, Any]:
        """A map; keys (and values, with ``value``) checked."""
        got = self.typed(name, dict, "map", default)
        for k, v in got.items():
            if not isinstance(k, key) or isinstance(k, bool):
                raise SnapshotError(f"{self.path}.{name}: key {k!r} is not {_what(key)}")
            if value is not None and (
                not isinstance(v, value) or (isinstance(v, bool) and bool not in _tuple(value))
            ):
                raise SnapshotError(
                    f"{self.path}.{name}[{k!r}]: expected {_what(value)}, got {_name(v)}"
                )
        return got

    def child(self, name: builtins.str) -> Fields:
        """The map in field ``name``."""
        return Fields(self.raw(name), f"{self.path}.{name}")

    def children(self, name: builtins.str) -> builtins.list[Fields]:
        """The maps in list field ``name``."""
        return [Fields(v, f"{self.path}.{name}[{i}]") for i, v in enumerate(self.list(name))]


def _tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _what(types: type | tuple[type, ...]) -> str:
    return " or ".join(
        "float" if t is float else t.__name__
        for t in _tuple(types)
        if t is not int or float not in _tuple(types)
    )


NUMBER = _NUMBER
OPTIONAL_NUMBER = (*_NUMBER, type(None))
