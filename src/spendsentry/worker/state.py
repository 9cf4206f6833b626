"""Durable snapshots of the worker's state in its state directory.

A snapshot is one pickle: the whole :class:`~spendsentry.engine.Engine`, the
next input offset per partition that the engine state reflects, the partition
watermarks, the keys of alerts already published, and the end offsets of the
alerts topic at the time of the snapshot (where a restarted worker starts
reading back what it published after the snapshot).

It is written to a temporary file, fsynced, renamed over the previous one and
the directory fsynced, so a crash (even ``kill -9``) leaves either the old or
the new snapshot, never a torn one. The worker commits input offsets to Kafka
only after that: committed offsets never run ahead of durable state.

Why a state directory and not a compacted Kafka topic: an engine snapshot can
be many megabytes (the dedupe id set alone holds up to 2 million ids), beyond a
broker's default ``message.max.bytes`` of 1 MB, and chunking a snapshot over
several records adds a torn-snapshot case of its own. A snapshot is per worker
(whole engine); see ``docs/worker.md`` for how this maps to partitions when
scaling out.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

from spendsentry.errors import SpendSentryError

#: Bumped when the snapshot layout changes; older snapshots are ignored.
SNAPSHOT_VERSION = 1


class SnapshotError(SpendSentryError):
    """A snapshot could not be written or read."""


class SnapshotStore:
    """One snapshot file per consumer group in ``state_dir``.

    Parameters
    ----------
    state_dir : str or Path
        Directory for snapshots (created if missing).
    name : str
        The consumer group id; it names the file.

    Examples
    --------
    >>> import tempfile
    >>> d = tempfile.TemporaryDirectory()
    >>> store = SnapshotStore(d.name, "spendsentry")
    >>> size = store.save({"offsets": {("ai.usage", 0): 42}})
    >>> store.load()["offsets"]
    {('ai.usage', 0): 42}
    >>> d.cleanup()
    """

    def __init__(self, state_dir: str | Path, name: str) -> None:
        self.dir = Path(state_dir)
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        self.path = self.dir / f"{safe}.snapshot.pickle"

    def save(self, state: dict[str, Any]) -> int:
        """Write ``state`` durably; return the snapshot's size in bytes."""
        payload = pickle.dumps(
            {"version": SNAPSHOT_VERSION, "state": state}, protocol=pickle.HIGHEST_PROTOCOL
        )
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=self.path.name, suffix=".tmp", dir=self.dir)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(payload)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            # The rename itself is durable only once the directory is synced.
            dir_fd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise SnapshotError(f"cannot write snapshot {self.path}: {exc}") from exc
        return len(payload)

    def load(self) -> dict[str, Any] | None:
        """The last snapshot's state, or None when there is none (or it is stale).

        Raises
        ------
        SnapshotError
            If the file exists but cannot be read or unpickled.
        """
        try:
            payload = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SnapshotError(f"cannot read snapshot {self.path}: {exc}") from exc
        try:
            doc = pickle.loads(payload)  # our own file in our own state dir
        except Exception as exc:  # pickle raises almost anything on a bad file
            raise SnapshotError(f"cannot load snapshot {self.path}: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("version") != SNAPSHOT_VERSION:
            return None
        state: dict[str, Any] = doc["state"]
        return state
