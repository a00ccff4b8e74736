"""The model owner's side of the encrypted oracle: a CKKS server per victim key, and a channel
to the victim that carries only the protocol's bytes.

:class:`EncryptedOracle` is the label-change oracle as the server runs it. It never touches a
secret image or key: it asks a :class:`Victim` for a row's public context and encrypted input,
evaluates the perturbed model homomorphically, and hands each result to the victim for its reply
bits. The victim is in the same process (:class:`hesig.oracles.ckks.oracle.LocalVictim`, the
``--oracle ckks`` path) or across the network (:class:`hesig.service.remote.RemoteVictim`,
``hesig serve``); this module imports neither, so a server process that imports it holds no
code that makes or keeps a secret key.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Callable, ContextManager, Protocol

import numpy as np
import torch

from ...core.defaults import CKKS_PEAK_MB, CKKS_PROCESSES
from ...core.errors import InvalidValueError, MismatchError, ShapeError
from ..base import Oracle
from . import wire
from .helpers import check_processes
from .params import CKKSParameters
from .polymodel import PolyCNN
from .server import CKKSServer, Session


class Victim(Protocol):
    """The server's view of the victim: the messages it sends, nothing else."""

    def input(self, row: int) -> tuple[bytes, object]:
        """(context message, input message) of secret row ``row``: the public context of the key
        the row is encrypted under (the same bytes for rows that share a key) and the row's
        encrypted input (bytes, or a read-only buffer such as an mmap of an upload)."""

    def input_checked(self, row: int, error: str | None) -> bool:
        """The server's verdict on the input just received for ``row``: None (opened) or why it
        was refused. Returns True to ask the victim for the row again (a remote victim is told
        the reason and may resend), False to give up (the error is raised)."""

    def answer(self, row: int, result: bytes) -> bytes:
        """The victim's reply to a result message: packed bits, one per query (wire.unpack_bits).
        Raises the victim's refusal (ClientRefusal, MismatchError) instead of answering."""

    def forget(self, row: int) -> None:
        """The server is done with the row (the victim may drop its session)."""

    def costs(self) -> dict:
        """Additive counters the victim side measured (seconds), merged into the oracle's costs."""


class EncryptedOracle(Oracle):
    """Rows 0..num_rows-1 are the victim's secret inputs, encrypted by the victim when first queried.

    ``capacity`` = slots - 1 queries per homomorphic evaluation (one slot carries the unperturbed
    input, from which the client reads its own reference class). ``rows_at_once`` = 1: a server
    session is ~300 MB at N = 8192 (batched layout), one image at a time keeps memory flat.
    """

    def __init__(self, poly: PolyCNN, victim: Victim, num_rows: int, *, params: CKKSParameters = CKKSParameters(),
                 budget: int | None = None, gate: Callable[[], ContextManager] = contextlib.nullcontext,
                 counted_contexts: set[str] | None = None, server_processes: int = CKKS_PROCESSES):
        """gate: entered around every homomorphic computation (session setup, evaluation), never
        while the victim is answering: a server with many victims bounds its concurrent CKKS
        work, hence its memory, with one shared semaphore. counted_contexts: see below.
        server_processes: processes each image's server work is split over
        (:mod:`hesig.oracles.ckks.parallel`; same bytes, 1 = this process alone)."""
        super().__init__(num_rows, poly.in_shape, budget)
        self._server_processes = check_processes(server_processes)
        self._gate = gate
        # Context ids already in some oracle's costs: the oracles of one remote victim's chunks
        # share this set, so a context sent once is counted once.
        self._counted = counted_contexts if counted_contexts is not None else set()
        self._poly, self.victim, self.params = poly, victim, params
        self.capacity = params.slots - 1
        self.rows_at_once = 1
        self._servers: dict[str, CKKSServer] = {}  # context id -> server (one per victim key)
        self._latest: str | None = None
        self._sessions: dict[int, tuple[CKKSServer, Session]] = {}
        self.stats = {"context_bytes": 0, "upload_bytes": 0, "download_bytes": 0, "reply_bytes": 0,
                      "evaluations": 0, "server_setup_seconds": 0.0, "server_eval_seconds": 0.0,
                      "slots_used": 0, "key_pairs": 0}

    def _server(self, context: bytes | None, cid: str) -> CKKSServer:
        if cid not in self._servers:
            if context is None:
                raise MismatchError(f"the input is encrypted under a context ({cid[:40]}) the victim has not sent")
            server = make_server(context, self._poly, self._server_processes)  # refuses a secret key, a forged id, a foreign layout
            if server.context_id != cid:
                raise InvalidValueError("the victim's input names another context than the one it sent")
            self._servers[cid] = server
            if cid not in self._counted:
                self._counted.add(cid)
                self.stats["context_bytes"] += len(context)
                self.stats["key_pairs"] += 1
        self._latest = cid
        return self._servers[cid]

    def session(self, row: int) -> Session:
        """The server's session for secret row ``row``: the victim encrypts the row and the server
        opens it on first use (byte-counted and timed in :meth:`costs`)."""
        if not 0 <= int(row) < self.num_rows:
            raise ShapeError(f"row index out of range 0..{self.num_rows - 1}")
        row = int(row)
        while row not in self._sessions:
            context, message = self.victim.input(row)
            try:
                with self._gate():
                    server = self._server(context, str(wire.read_header(message).get("context_id")))
                    session = server.open_session(message)
            except (MismatchError, ShapeError, InvalidValueError) as exc:
                if self.victim.input_checked(row, str(exc)):
                    continue  # the victim was told why, and asked for the row again
                raise
            self.stats["upload_bytes"] += len(message)
            self.victim.input_checked(row, None)  # a remote victim's upload is unmapped and deleted here
            self.stats["server_setup_seconds"] += session.setup_seconds
            self._sessions[row] = (server, session)
        return self._sessions[row][1]

    def server_of(self, row: int) -> CKKSServer:
        """The server (the public context of row ``row``'s key) that holds the row's session, opening
        the session first if needed (illustrations and tests; the search needs only :meth:`same_label`)."""
        self.session(row)
        return self._sessions[int(row)][0]

    def close_row(self, row: int) -> None:
        """Free a row's server-side ciphertexts; drop key contexts no open row uses (but the latest)."""
        self._sessions.pop(row, None)
        self.victim.forget(row)
        used = {s.context_id for s, _ in self._sessions.values()} | {self._latest}
        for cid in [c for c in self._servers if c not in used]:
            del self._servers[cid]

    def release(self, rows: torch.Tensor) -> None:
        for row in rows.tolist():
            self.close_row(int(row))

    def close(self) -> None:
        self._sessions.clear()
        self._servers.clear()

    def _answer(self, perturbations: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        pert = perturbations.detach().cpu().double().numpy()
        rows_np = rows.cpu().numpy()
        answer = np.zeros(len(rows_np), dtype=bool)
        for row in np.unique(rows_np):
            where = np.flatnonzero(rows_np == row)
            session = self.session(int(row))
            server = self._sessions[int(row)][0]
            for start in range(0, len(where), self.capacity):
                idx = where[start:start + self.capacity]
                t0 = time.perf_counter()
                with self._gate():
                    result = server.evaluate(session, pert[idx])
                self.stats["server_eval_seconds"] += time.perf_counter() - t0
                reply = self.victim.answer(int(row), result)
                answer[idx] = wire.unpack_bits(reply, len(idx))
                self.stats["evaluations"] += 1
                self.stats["slots_used"] += len(idx) + 1
                self.stats["download_bytes"] += len(result)
                self.stats["reply_bytes"] += len(reply)
        return torch.from_numpy(answer)

    def costs(self) -> dict:
        """Additive counters: bytes each way, evaluations, slots used of ``slots_available``
        (evaluations x slots; utilisation = slots_used / slots_available), seconds per party."""
        s = {**self.stats, **self.victim.costs(), "slots_available": self.stats["evaluations"] * self.params.slots}
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items()}


def make_server(context: bytes, poly: PolyCNN, processes: int = CKKS_PROCESSES):
    """A CKKS server for one public context: this process alone, or split over ``processes``
    (a pool of helpers shared by every server of this process)."""
    if check_processes(processes) == 1:
        return CKKSServer(context, poly)
    from .parallel import ParallelServer, server_pool
    return ParallelServer(context, poly, server_pool(processes))


def available_mb() -> float | None:
    """MemAvailable from /proc/meminfo in MB (None where there is no such file)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory() -> None:
    """Refuse, in one line, to start a CKKS job the machine cannot hold (peak: CKKS_PEAK_MB, any chunk size)."""
    available = available_mb()
    if available is not None and available < CKKS_PEAK_MB:
        raise InvalidValueError(f"a CKKS fingerprint job peaks at about {CKKS_PEAK_MB} MB of memory (one image at a "
                                f"time, any chunk size); only {available:.0f} MB are available here")
