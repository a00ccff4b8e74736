"""Helper processes that put more cores to work on one party's CKKS computation.

TenSEAL holds the GIL in every SEAL call, so threads cannot use a second core; processes can.
A :class:`HelperPool` runs ``processes - 1`` helpers for one party; the calling process is the
first. Each helper is a fresh interpreter (``python -c``, not multiprocessing's spawn, which
would re-run the caller's main script) serving one loop function on a socket. Commands are
pickled tuples: a helper trusts only its own caller. Replies are JSON or raw bytes, never
pickles: a helper parses the other party's ciphertexts, so the caller trusts nothing it sends
beyond data. A helper shares nothing with its caller but what is sent.

The two parties never share a pool: the server's helpers (hesig.oracles.ckks.parallel) run code
that holds no secret key; the client's (hesig.oracles.ckks.client) hold the client's own key.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import socket
import subprocess
import sys
import threading
import weakref
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from ...core.defaults import CKKS_PROCESSES_MAX
from ...core.errors import HesigError, InvalidValueError, MismatchError, ShapeError

#: errors a helper reports by name and the caller raises again as the same class
_ERRORS = {cls.__name__: cls for cls in (MismatchError, ShapeError, InvalidValueError)}


def check_processes(processes) -> int:
    """An integer 1..CKKS_PROCESSES_MAX, or one line saying why not."""
    if isinstance(processes, bool) or not isinstance(processes, (int, np.integer)) or not 1 <= processes <= CKKS_PROCESSES_MAX:
        raise InvalidValueError(f"CKKS processes must be an integer 1..{CKKS_PROCESSES_MAX}, got {processes!r}")
    return int(processes)


def serve(fd: int, loop: str) -> None:
    """A helper's entry point: run ``loop`` ("module:function", called with the connection) on
    the socket ``fd`` until the caller closes it."""
    module, function = loop.split(":")
    getattr(importlib.import_module(module), function)(Connection(fd))


def reply(conn, value: dict) -> None:
    """A helper's reply: a JSON object (:func:`expect` reads it)."""
    conn.send_bytes(json.dumps(value).encode())


def reply_error(conn, exc: BaseException) -> None:
    """Report a helper's error to its caller, which raises it there (:func:`expect`)."""
    reply(conn, {"error": type(exc).__name__, "message": str(exc)[:2000]})


class HelperPool:
    """``processes - 1`` helpers running ``loop``. One operation at a time (``lock``, reentrant),
    so threads may share a pool. :meth:`shared` keeps one per process, loop and size: a helper
    costs an interpreter with torch imported (~2 s to start, once)."""

    _shared: dict[tuple[str, int], "HelperPool"] = {}

    def __init__(self, loop: str, processes: int):
        if int(processes) < 2:
            raise InvalidValueError(f"a helper pool needs 2 or more processes, got {processes}")
        self.loop, self.processes = loop, int(processes)
        self.lock = threading.RLock()
        package_root = str(Path(__file__).resolve().parents[3])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        self._conns, self._procs = [], []
        for _ in range(self.processes - 1):
            mine, theirs = socket.socketpair()
            code = f"from hesig.oracles.ckks.helpers import serve; serve({theirs.fileno()}, {loop!r})"
            proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=(theirs.fileno(),), env=env,
                                    stdin=subprocess.DEVNULL)
            theirs.close()
            self._conns.append(Connection(mine.detach()))
            self._procs.append(proc)
        self._finalizer = weakref.finalize(self, HelperPool._stop, list(self._conns), list(self._procs))

    @classmethod
    def shared(cls, loop: str, processes: int) -> "HelperPool":
        """This process's pool of ``processes`` running ``loop`` (started on first use, stopped at exit)."""
        key = (loop, int(processes))
        pool = cls._shared.get(key)
        if pool is None or not pool.alive():
            pool = cls._shared[key] = cls(loop, processes)
        return pool

    def alive(self) -> bool:
        return all(p.poll() is None for p in self._procs)

    @property
    def helpers(self) -> list:
        return self._conns

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def ready(self) -> None:
        """Wait until every helper has started and answers (benchmarks time work, not start-up)."""
        with self.lock:
            for conn in self._conns:
                conn.send(("ping",))
            for conn in self._conns:
                expect(conn)

    def peak_rss_mb(self) -> list[float]:
        """Each helper's peak resident memory (VmHWM), MB."""
        with self.lock:
            for conn in self._conns:
                conn.send(("peak",))
            return [float(expect(conn)["peak_mb"]) for conn in self._conns]

    def tell(self, command: tuple) -> None:
        """A command with no reply (freeing something); a stopped pool has nothing left to free."""
        if self.alive():
            with self.lock:
                for conn in self._conns:
                    try:
                        conn.send(command)
                    except (OSError, ValueError):  # closed meanwhile: the helper is gone, and its memory with it
                        return

    @staticmethod
    def _stop(conns, procs) -> None:
        for conn in conns:
            conn.close()
        for proc in procs:  # a helper exits when its socket closes
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()

    def close(self) -> None:
        self._finalizer()


atexit.register(lambda: [pool.close() for pool in list(HelperPool._shared.values())])


def run_loop(conn, handle) -> None:
    """A helper's loop: each command from the caller goes to ``handle(command)`` (which sends its
    own replies; "ping" and "peak" are answered here), until the caller closes the socket. An
    error is reported to the caller, which raises it there; the helper lives on."""
    while True:
        try:
            command = conn.recv()
        except EOFError:
            return
        try:
            if not common_command(conn, command):
                handle(command)
        except Exception as exc:
            reply_error(conn, exc)


def common_command(conn, command: tuple) -> bool:
    """Answer the commands every helper knows ("ping", "peak"); False for any other."""
    if command[0] == "ping":
        reply(conn, {"ok": True})
    elif command[0] == "peak":
        reply(conn, {"peak_mb": peak_rss_mb()})
    else:
        return False
    return True


def peak_rss_mb() -> float:
    """This process's peak resident memory, MB. Linux: VmHWM, which starts afresh at exec (a
    spawned child's ru_maxrss would start from its parent's RSS at fork); elsewhere ru_maxrss."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def expect(conn) -> dict:
    """A helper's JSON reply, its error raised here in one line (a dead helper too)."""
    return _parsed(recv_bytes(conn))


def _parsed(data: bytes) -> dict:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise HesigError("a CKKS helper sent a malformed reply") from None
    if not isinstance(value, dict):
        raise HesigError("a CKKS helper sent a malformed reply")
    if "error" in value:
        raise _ERRORS.get(str(value["error"]), HesigError)(str(value.get("message", "")))
    return value


def recv_bytes(conn) -> bytes:
    try:
        return conn.recv_bytes()
    except (EOFError, OSError):
        raise HesigError("a CKKS helper process died") from None


def recv_array(conn, dtype, shape: tuple) -> np.ndarray:
    """A raw array a helper sent (a writable copy), or the error it sent instead, raised here."""
    data = recv_bytes(conn)
    want = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if len(data) != want:
        _parsed(data)  # raises the helper's error, or says the reply is malformed
        raise HesigError(f"a CKKS helper sent {len(data)} bytes where {want} were expected")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
