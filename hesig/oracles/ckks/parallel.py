"""One CKKS server over several processes: hecnn's server work split by output position and fc1 unit.

TenSEAL holds the GIL in every SEAL call, so threads cannot put a second core to work; processes
can. :class:`ParallelServer` keeps share 0 (:func:`hesig.oracles.ckks.server.shares`) in the
calling process and gives share k to helper process k of a pool (:class:`hesig.oracles.ckks.helpers.HelperPool`). Per image, each
process builds and keeps the conv1 features of its own output positions (so it parses only the
pixel rows those read). Per evaluation:

1. each process perturbs its features and takes their part of fc1, P_k = sum_{f in F_k} W1[:, f]
   (conv1(X + N)_f)^2 mod q  [H, 3, L, N];
2. the caller collects every helper's rows of the units it does not finish, and sends each helper
   the sum of the other partials for the units it does: unit rows of sum_k P_k, exactly mod q;
3. each process finishes its units (bias, rescale, relinearize, rescale, x^2) and takes their part
   of fc2, exactly mod q; the caller adds the helpers' parts and fc2's bias, relinearizes the
   logits and rescales them.

Every sum is exact modular arithmetic, so the result message is byte for byte the one-process
server's (tests/test_ckks.py). Helpers hold only what the server holds: the public
context, the model and the input ciphertexts. Only the batched layout splits; the compact layout
runs in the calling process.
"""

from __future__ import annotations

import time
import weakref

import numpy as np
from threadpoolctl import threadpool_limits

from ...core.errors import HesigError, InvalidValueError
from .helpers import HelperPool, expect, recv_array, reply, run_loop
from .polymodel import PolyCNN
from .server import CKKSServer, Session, shares

#: the server helpers' loop (hesig.oracles.ckks.helpers.serve)
LOOP = "hesig.oracles.ckks.parallel:helper_loop"


def server_pool(processes: int) -> HelperPool:
    """This process's pool of server helpers for ``processes`` processes in all."""
    return HelperPool.shared(LOOP, processes)


def helper_loop(conn) -> None:
    """A server helper: a share of each image's features and of each evaluation's fc1 units."""
    servers: dict[int, tuple[CKKSServer, object]] = {}  # by the caller's server key, not the context id:
    # two servers of one context may overlap (a new one made before the old one's drop arrives)
    sessions: dict[int, Session] = {}

    def handle(command: tuple) -> None:
        op = command[0]
        if op == "context":
            _, key, message, model, count, index = command
            servers[key] = (CKKSServer(message, model), shares(model, count)[index])
            reply(conn, {"ok": True})
        elif op == "drop_context":
            servers.pop(command[1], None)
        elif op == "open":
            _, key, handle_id, session, parts = command
            server, share = servers[key]
            sessions[handle_id] = server.open_parts(session, parts, share)
            reply(conn, {"ok": True})
        elif op == "close":
            sessions.pop(command[1], None)
        elif op == "evaluate":
            _, key, handle_id, count = command
            server, share = servers[key]
            shift = np.frombuffer(conn.recv_bytes(), dtype=np.float64).reshape(count, len(share.features))
            hidden, head = server.fc1_partial(sessions[handle_id], shift, share.features)
            del shift
            others = np.setdiff1d(np.arange(hidden.shape[0]), share.units)
            conn.send_bytes(np.ascontiguousarray(hidden[others]))  # the rows of the units others finish
            rows = np.ascontiguousarray(hidden[share.units])
            del hidden
            theirs = np.frombuffer(conn.recv_bytes(), dtype=np.uint64).reshape(rows.shape)
            server.add_partials(rows, theirs, head)
            del theirs
            logits, _ = server.head_partial(rows, share.units, head)
            conn.send_bytes(logits)
        else:
            raise InvalidValueError(f"unknown helper command {op!r}")

    run_loop(conn, handle)


class ParallelServer:
    """A :class:`CKKSServer` whose batched-layout work is split over ``pool``'s processes. Same
    interface (``open_session``, ``evaluate``, ``context_id``, ``layout``, ``slots``,
    ``holds_secret_key``), same result bytes."""

    _handles = iter(range(1 << 62))

    def __init__(self, context_message: bytes, model: PolyCNN, pool: HelperPool):
        self._local = CKKSServer(context_message, model)  # refuses a secret key, a forged id, too few levels
        self.context_id, self.layout, self.model = self._local.context_id, self._local.layout, model
        self.slots, self.poly_modulus_degree = self._local.slots, self._local.poly_modulus_degree
        self._pool = pool
        self._key = next(self._handles)  # this server's name in the helpers
        self._split = self.layout == "batched"
        self._shares = shares(model, pool.processes) if self._split else None
        if self._split:
            with pool.lock:
                for k, conn in enumerate(pool.helpers, start=1):
                    conn.send(("context", self._key, context_message, model, pool.processes, k))
                for conn in pool.helpers:
                    expect(conn)
            weakref.finalize(self, pool.tell, ("drop_context", self._key))

    @property
    def holds_secret_key(self) -> bool:
        return self._local.holds_secret_key

    def open_session(self, message) -> Session:
        t0 = time.perf_counter()
        session, parts = self._local.read_input(message)
        if not self._split:
            return self._local.open_parts(session, parts, None, t0)
        handle = next(self._handles)
        windows = self.model.windows()
        with self._pool.lock:
            for share, conn in zip(self._shares[1:], self._pool.helpers):
                pixels = sorted({int(p) for w in share.windows for p in windows[w][0]})
                conn.send(("open", self._key, handle, session, {p: bytes(parts[p]) for p in pixels}))
            try:
                with threadpool_limits(1, "blas"):  # the other cores are the helpers'
                    local = self._local.open_parts(session, parts, self._shares[0], t0)
            except BaseException:
                local = None
                raise
            finally:  # every helper answers, opened or refused, before anything is raised
                errors = []
                for conn in self._pool.helpers:
                    try:
                        expect(conn)
                    except HesigError as exc:
                        errors.append(exc)
                if local is None or errors:
                    self._close(handle)
            if errors:
                raise errors[0]
        local.handle = handle
        weakref.finalize(local, self._close, handle)
        local.setup_seconds = time.perf_counter() - t0
        return local

    def _close(self, handle: int) -> None:
        self._pool.tell(("close", handle))

    def evaluate(self, session: Session, perturbations: np.ndarray) -> bytes:
        """As :meth:`CKKSServer.evaluate`, the work split over the pool (module docstring)."""
        pert = self._local.check_perturbations(perturbations)
        if not self._split:
            return self._local.evaluate(session, pert)
        count = pert.shape[0]
        shift = self.model.conv_linear(pert)  # [Q, F]
        local_share, helper_shares = self._shares[0], self._shares[1:]
        units = self.model.fc1_weight.shape[0]
        with self._pool.lock, threadpool_limits(1, "blas"):  # the other cores are the helpers'
            try:
                for share, conn in zip(helper_shares, self._pool.helpers):
                    conn.send(("evaluate", self._key, session.handle, count))
                    conn.send_bytes(np.ascontiguousarray(shift[:, share.features]))
                hidden, head = self._local.fc1_partial(session, shift, local_share.features)
                del shift
                # Add every helper's rows of the units it does not finish into ours, mod q. Then our row
                # of a local unit is the whole sum, and our row of helper j's unit is the sum of every
                # partial but j's own, which j adds itself.
                moduli = self._local.moduli_of(head)
                for share, conn in zip(helper_shares, self._pool.helpers):
                    others = np.setdiff1d(np.arange(units), share.units)
                    rows = recv_array(conn, np.uint64, (len(others),) + hidden.shape[1:])
                    for i, unit in enumerate(others):
                        np.add(hidden[unit], rows[i], out=hidden[unit])
                        np.remainder(hidden[unit], moduli, out=hidden[unit])
                    del rows
                for share, conn in zip(helper_shares, self._pool.helpers):
                    conn.send_bytes(np.ascontiguousarray(hidden[share.units]))
                mine, logit_head = self._local.head_partial(np.ascontiguousarray(hidden[local_share.units]),
                                                            local_share.units, head)
                del hidden
                partials = [mine]
                for conn in self._pool.helpers:
                    partials.append(recv_array(conn, np.uint64, mine.shape))
            except Exception as exc:
                # a helper left mid-protocol cannot be resynchronised: stop the pool (the next server
                # starts a fresh one) and say so in one line
                self._pool.close()
                if isinstance(exc, HesigError):
                    raise
                raise HesigError(f"the split CKKS evaluation failed ({type(exc).__name__}: {exc}); its helpers were stopped") from None
        return self._local.finish(session, count, partials, logit_head)

