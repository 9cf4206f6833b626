"""The webhook sink's signature: HMAC-SHA256 over the timestamp and the body, and its check.

The sender puts two headers on every POST::

    X-Spendsentry-Timestamp: 1793610000
    X-Spendsentry-Signature: v1=<hex HMAC-SHA256(secret, "1793610000." + body)>

A receiver verifies with :func:`verify` over the exact bytes it received (before
parsing them), and rejects a timestamp more than ``tolerance_s`` away from its
clock, so a captured request cannot be replayed later. Several ``v1=`` values
separated by commas are accepted, for a secret being rotated.

>>> body = b'{"alert_id":"ab"}'
>>> sig = sign("s3cret", 1793610000, body)
>>> sig[:3], verify("s3cret", "1793610000", sig, body, now=1793610100)
('v1=', True)
>>> verify("s3cret", "1793610000", sig, body + b" ", now=1793610100)
False
>>> verify("s3cret", "1793610000", sig, body, now=1793610000 + 3600)  # too old
False
"""

from __future__ import annotations

import hashlib
import hmac
import time

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "sign", "verify"]

TIMESTAMP_HEADER = "X-Spendsentry-Timestamp"
SIGNATURE_HEADER = "X-Spendsentry-Signature"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``v1=`` and the hex HMAC-SHA256 of ``"<timestamp>." + body`` under ``secret``."""
    base = str(int(timestamp)).encode() + b"." + body
    return "v1=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def verify(
    secret: str,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    *,
    now: float | None = None,
    tolerance_s: float = 300.0,
) -> bool:
    """Whether ``signature`` (the header's value) signs ``body`` at a fresh ``timestamp``."""
    if not timestamp or not signature:
        return False
    try:
        stamp = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - stamp) > tolerance_s:
        return False
    expected = sign(secret, stamp, body)
    ok = False
    for candidate in signature.split(","):
        ok |= hmac.compare_digest(expected, candidate.strip())
    return ok
