"""What the Slack notifier has delivered: a small JSON file in the state directory.

Two things must survive a notifier restart: the dedupe keys already posted
(``alert_id:status:severity:incident_seq``, one per state change of an
incident), so a re-read alert is not posted twice, and, in bot-token mode, the
channel and ``ts`` of each incident's parent message, so escalations and the
resolution still go into its thread.

The file is rewritten after every delivery: to a temporary file, fsynced,
renamed over the old one, directory fsynced; a crash leaves the old or the new
file, never a torn one. Alerts are rare (a handful per hour), so a whole-file
rewrite per delivery costs nothing worth a database. Entries older than
``retention_s`` (default 14 days, longer than ``ai.alerts`` is kept) are pruned
on save, and at most ``max_entries`` keys are kept (the oldest go first), so
the file stays small.

>>> import tempfile
>>> d = tempfile.TemporaryDirectory()
>>> state = DeliveryState.load(d.name, now=1000.0)
>>> state.delivered("a1:firing:warning:1")
False
>>> state.record("a1:firing:warning:1", "a1", thread=Thread("C1", "17.1"), now=1000.0)
>>> again = DeliveryState.load(d.name, now=1001.0)
>>> again.delivered("a1:firing:warning:1"), again.thread("a1")
(True, Thread(channel='C1', ts='17.1'))
>>> d.cleanup()
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spendsentry.errors import SpendSentryError

__all__ = ["STATE_VERSION", "DeliveryState", "StateError", "Thread", "write_atomically"]

log = logging.getLogger(__name__)

STATE_VERSION = 1
_DEFAULT_RETENTION_S = 14 * 86400.0
_DEFAULT_MAX_ENTRIES = 50_000


class StateError(SpendSentryError):
    """The notifier's state file cannot be written or read."""


@dataclass(frozen=True, slots=True)
class Thread:
    """Where an incident's parent message is: channel id and message ``ts``."""

    channel: str
    ts: str


class DeliveryState:
    """Delivered dedupe keys and thread parents, persisted atomically.

    Use :meth:`load`; ``record`` saves before returning.
    """

    def __init__(
        self,
        path: Path,
        *,
        retention_s: float = _DEFAULT_RETENTION_S,
        max_entries: int = _DEFAULT_MAX_ENTRIES,
    ) -> None:
        self.path = path
        self.retention_s = retention_s
        self.max_entries = max_entries
        #: dedupe key -> epoch seconds it was delivered
        self.keys: dict[str, float] = {}
        #: alert_id -> (thread, epoch seconds of its last use)
        self.threads: dict[str, tuple[Thread, float]] = {}

    @classmethod
    def load(
        cls,
        state_dir: str | Path,
        name: str = "slack-notifier",
        *,
        now: float | None = None,
        **kwargs: Any,
    ) -> DeliveryState:
        """Read ``<state_dir>/<name>.json``; an absent file is an empty state.

        Raises
        ------
        StateError
            If the file exists but is unreadable or not a state file. Starting
            empty instead would re-post every alert still on the topic, so the
            operator decides (fix or delete the file).

        Examples
        --------
        >>> import tempfile, pathlib
        >>> d = tempfile.TemporaryDirectory()
        >>> _ = (pathlib.Path(d.name) / "slack-notifier.json").write_text("{oops")
        >>> DeliveryState.load(d.name)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        spendsentry.slack.state.StateError: notifier state .../slack-notifier.json is corrupt (...
        >>> d.cleanup()
        """
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        state = cls(Path(state_dir) / f"{safe}.json", **kwargs)
        try:
            raw = state.path.read_bytes()
        except FileNotFoundError:
            return state
        except OSError as exc:
            raise StateError(f"cannot read notifier state {state.path}: {exc}") from exc
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("version") != STATE_VERSION:
                raise ValueError(f"not a version {STATE_VERSION} notifier state file")
            state.keys = {str(k): float(v) for k, v in doc.get("delivered", {}).items()}
            state.threads = {
                str(alert_id): (Thread(str(t["channel"]), str(t["ts"])), float(t["at"]))
                for alert_id, t in doc.get("threads", {}).items()
            }
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise StateError(
                f"notifier state {state.path} is corrupt ({exc}); fix or delete it "
                "(deleting it re-posts alerts still on the topic)"
            ) from None
        state._prune(time.time() if now is None else now)
        return state

    def delivered(self, key: str) -> bool:
        """Whether the state change ``key`` was posted already."""
        return key in self.keys

    def thread(self, alert_id: str) -> Thread | None:
        """The incident's parent message, if one was posted (bot-token mode)."""
        entry = self.threads.get(alert_id)
        return entry[0] if entry else None

    def record(
        self,
        key: str,
        alert_id: str,
        *,
        thread: Thread | None = None,
        now: float | None = None,
    ) -> None:
        """Remember that ``key`` was delivered (and the thread), durably."""
        at = time.time() if now is None else now
        self.keys[key] = at
        if thread is not None:
            self.threads[alert_id] = (thread, at)
        elif alert_id in self.threads:
            self.threads[alert_id] = (self.threads[alert_id][0], at)
        self._prune(at)
        self.save()

    def save(self) -> None:
        """Write the state atomically (temp file, fsync, rename, fsync dir)."""
        doc = {
            "version": STATE_VERSION,
            "delivered": self.keys,
            "threads": {
                a: {"channel": t.channel, "ts": t.ts, "at": at}
                for a, (t, at) in self.threads.items()
            },
        }
        payload = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
        write_atomically(self.path, payload)

    def _prune(self, now: float) -> None:
        horizon = now - self.retention_s
        self.keys = {k: at for k, at in self.keys.items() if at >= horizon}
        self.threads = {a: e for a, e in self.threads.items() if e[1] >= horizon}
        if len(self.keys) > self.max_entries:
            newest = sorted(self.keys.items(), key=lambda kv: kv[1])[-self.max_entries :]
            self.keys = dict(newest)
        if len(self.threads) > self.max_entries:
            kept = sorted(self.threads.items(), key=lambda kv: kv[1][1])[-self.max_entries :]
            self.threads = dict(kept)


def write_atomically(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path``: temp file, fsync, rename, fsync of the directory.

    A crash leaves the old file or the new one, never a torn one.

    Raises
    ------
    StateError
        The file cannot be written.
    """
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise StateError(f"cannot write notifier state {path}: {exc}") from exc
