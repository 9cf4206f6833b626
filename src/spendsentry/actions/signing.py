"""Canonical JSON and HMAC-SHA256 signatures of throttle commands.

The rule (also in ``schemas/throttle-command.json``, for gateway authors): the
signature is the lowercase hex HMAC-SHA256, keyed by the UTF-8 bytes of the
key, of the canonical JSON of the command without its ``signature`` field:
keys sorted at every level, no whitespace, UTF-8, non-ASCII not escaped.

>>> body = {"b": 1, "a": {"z": "\u00d7", "y": None}}
>>> canonical_json(body)
b'{"a":{"y":null,"z":"\\xc3\\x97"},"b":1}'
>>> sig = sign(body, "k1")
>>> verify({**body, "signature": sig}, ["k2", "k1"])
True
>>> verify({**body, "b": 2, "signature": sig}, ["k1"])
False

Keys come from the environment (or a file) only, through
:meth:`ThrottleKeys.from_env`; they are never logged, and their ``repr`` only
says how many there are.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spendsentry.errors import ConfigError

__all__ = [
    "KEYS_ENV",
    "KEY_ENV",
    "KEY_FILE_ENV",
    "UNSIGNED",
    "ThrottleKeys",
    "canonical_json",
    "sign",
    "verify",
]

#: The signing key.
KEY_ENV = "SPENDSENTRY_THROTTLE_KEY"
#: Comma-separated keys accepted when verifying (rotation); the first signs
#: when ``SPENDSENTRY_THROTTLE_KEY`` is not set.
KEYS_ENV = "SPENDSENTRY_THROTTLE_KEYS"
#: A file with one key per line (the first signs when neither variable above does).
KEY_FILE_ENV = "SPENDSENTRY_THROTTLE_KEY_FILE"
#: The ``signature`` of a command written without a key (offline replay only):
#: gateways reject it like any signature that does not verify.
UNSIGNED = ""


def canonical_json(obj: Any) -> bytes:
    """The canonical form that is signed: sorted keys, no whitespace, UTF-8.

    Raises ``ValueError`` for a float that is not finite (commands hold none).
    """
    text = json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")


def _key_bytes(key: str | bytes) -> bytes:
    return key if isinstance(key, bytes) else key.encode("utf-8")


def sign(command: Mapping[str, Any], key: str | bytes) -> str:
    """Signature of ``command`` (its ``signature`` field, if any, is left out)."""
    body = {k: v for k, v in command.items() if k != "signature"}
    return hmac.new(_key_bytes(key), canonical_json(body), hashlib.sha256).hexdigest()


def verify(command: Mapping[str, Any], keys: Iterable[str | bytes]) -> bool:
    """Whether ``command["signature"]`` was made by one of ``keys``.

    Compares in constant time. False for a missing, empty or malformed
    signature, or a body that cannot be put in canonical form.
    """
    signature = command.get("signature")
    if not isinstance(signature, str) or len(signature) != 64:
        return False
    try:
        body = canonical_json({k: v for k, v in command.items() if k != "signature"})
    except (TypeError, ValueError):
        return False
    ok = False
    for key in keys:
        expected = hmac.new(_key_bytes(key), body, hashlib.sha256).hexdigest()
        # No early exit: the time taken does not tell which key matched.
        ok |= hmac.compare_digest(expected, signature)
    return ok


@dataclass(frozen=True)
class ThrottleKeys:
    """The signing key and the keys accepted when verifying.

    >>> keys = ThrottleKeys.from_env({"SPENDSENTRY_THROTTLE_KEYS": "new, old"})
    >>> keys.can_sign, len(keys.accepted), keys
    (True, 2, ThrottleKeys(signing=set, accepted=2))
    >>> ThrottleKeys.from_env({}).can_sign
    False
    """

    signing: bytes | None = field(default=None)
    accepted: tuple[bytes, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.signing is not None and self.signing not in self.accepted:
            object.__setattr__(self, "accepted", (self.signing, *self.accepted))

    def __repr__(self) -> str:
        # Never the keys themselves: reprs end up in logs and tracebacks.
        state = "set" if self.signing is not None else "none"
        return f"ThrottleKeys(signing={state}, accepted={len(self.accepted)})"

    @property
    def can_sign(self) -> bool:
        return self.signing is not None

    @classmethod
    def of(cls, signing: str | bytes | None, *others: str | bytes) -> ThrottleKeys:
        """Keys given in code (tests, embedding): ``signing`` first, then ``others``."""
        accepted = tuple(_key_bytes(k) for k in others if k)
        return cls(_key_bytes(signing) if signing else None, accepted)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ThrottleKeys:
        """Read :data:`KEY_ENV`, :data:`KEYS_ENV` and :data:`KEY_FILE_ENV`.

        The signing key is ``SPENDSENTRY_THROTTLE_KEY``, else the first of
        ``SPENDSENTRY_THROTTLE_KEYS``, else the first line of the key file.
        Every key named anywhere is accepted for verification.

        Raises
        ------
        ConfigError
            The key file cannot be read or holds no key (the message names
            the file, never a key).
        """
        env = os.environ if environ is None else environ
        single = env.get(KEY_ENV, "").strip()
        listed = _split(env.get(KEYS_ENV, "").split(","))
        from_file: list[str] = []
        path = env.get(KEY_FILE_ENV, "").strip()
        if path:
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or type(exc).__name__
                raise ConfigError(f"{KEY_FILE_ENV}: cannot read {path}: {reason}") from None
            from_file = _split(text.splitlines())
            if not from_file:
                raise ConfigError(f"{KEY_FILE_ENV}: {path} holds no key")
        ordered = ([single] if single else []) + listed + from_file
        unique = list(dict.fromkeys(ordered))
        if not unique:
            return cls()
        return cls.of(unique[0], *unique[1:])

    def sign(self, command: Mapping[str, Any]) -> str:
        """Signature with the signing key; :data:`UNSIGNED` without one."""
        return UNSIGNED if self.signing is None else sign(command, self.signing)

    def verify(self, command: Mapping[str, Any]) -> bool:
        return verify(command, self.accepted)


def _split(items: Sequence[str]) -> list[str]:
    return [s.strip() for s in items if s.strip() and not s.strip().startswith("#")]
