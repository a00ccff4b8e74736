"""The label-change oracle over CKKS: a Client (secret key) and a Server (public context) in one
process, exchanging only bytes. The attack side sees exactly what it sees with the plaintext
oracle -- bits and counters -- plus the cost accounting (bytes each way, evaluations, seconds).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...core.defaults import CKKS_PEAK_MB
from ...core.errors import InvalidValueError, ShapeError
from ..base import Oracle
from ..policies import ClientPolicy, parse_client_policy
from .client import LAYOUTS, CKKSClient, unpack_bits
from .params import CKKSParameters
from .polymodel import POLY_CNN_DEPTH, poly_cnn
from .server import CKKSServer


class CKKSOracle(Oracle):
    """secrets: [n, C, H, W] in [0, 1], encrypted lazily (row r when first queried).

    ``capacity`` = slots - 1 queries per homomorphic evaluation (one slot carries the
    unperturbed input, from which the client reads its own reference class).

    ``client_policy``: the victim client's ClientPolicy or spec string (None = the default,
    hesig.oracles.policies.DEFAULT_POLICY_SPEC). With ``fresh-keys`` every row gets its own key
    pair (client and server session), created when the row is first queried; a per-key reply
    budget then ends the attack with QueryBudgetExhausted once a row's key is spent.
    """

    def __init__(self, model: nn.Module, secrets: torch.Tensor, *, in_shape: tuple[int, int, int], arch: str = "model",
                 params: CKKSParameters = CKKSParameters(), layout: str = "batched", budget: int | None = None,
                 client_policy: ClientPolicy | str | None = None):
        if secrets.ndim != 4 or tuple(secrets.shape[1:]) != tuple(in_shape):
            raise ShapeError(f"secrets must be [n, {', '.join(map(str, in_shape))}], got shape {tuple(secrets.shape)}")
        if not torch.isfinite(secrets).all():
            raise InvalidValueError("secret inputs contain NaN or infinity")
        super().__init__(secrets.shape[0], tuple(in_shape), budget)
        poly = poly_cnn(model, tuple(in_shape), arch)
        params.check_depth(poly.depth, arch)
        self.params, self.layout = params, layout
        self.policy = parse_client_policy(client_policy)
        self._poly = poly
        self._secrets = secrets.detach().cpu().double().numpy()
        self.capacity = params.slots - 1
        self.rows_at_once = 1  # a server session is ~300 MB: one image at a time keeps memory flat
        self._sessions: dict[int, object] = {}
        self._pairs: dict[int, tuple[CKKSClient, CKKSServer]] = {}
        self.stats = {"context_bytes": 0, "upload_bytes": 0, "download_bytes": 0, "reply_bytes": 0,
                      "evaluations": 0, "client_encrypt_seconds": 0.0, "server_setup_seconds": 0.0,
                      "server_eval_seconds": 0.0, "client_decrypt_seconds": 0.0, "slots_used": 0, "key_pairs": 0}
        self.client, self.server = self._new_pair(0)

    def _new_pair(self, key_index: int) -> tuple[CKKSClient, CKKSServer]:
        t0 = time.perf_counter()
        client = CKKSClient(self.params, layout=self.layout, policy=self.policy,
                            num_outputs=self._poly.fc2_weight.shape[0], key_index=key_index)
        client.set_conv_geometry(self._poly.conv_weight.shape[-1], self._poly.stride)
        self.stats["client_keygen_seconds"] = self.stats.get("client_keygen_seconds", 0.0) + time.perf_counter() - t0
        context = client.context_message()
        self.stats["context_bytes"] += len(context)
        self.stats["key_pairs"] += 1
        return client, CKKSServer(context, self._poly)

    def pair(self, row: int) -> tuple[CKKSClient, CKKSServer]:
        """The (client, server) that serve secret row ``row``: one pair for all rows, or one per
        row under the ``fresh-keys`` policy."""
        if not self.policy.fresh_keys:
            return self.client, self.server
        if row not in self._pairs:
            self._pairs[row] = (self.client, self.server) if not self._pairs else self._new_pair(row)
        return self._pairs[row]

    def session(self, row: int):
        """The server's session for secret row ``row``: the client encrypts the row and the server
        opens it on first use (both timed and byte-counted in :meth:`costs`)."""
        if not 0 <= int(row) < self.num_rows:
            raise ShapeError(f"row index out of range 0..{self.num_rows - 1}")
        row = int(row)
        if row not in self._sessions:
            client, server = self.pair(row)
            t0 = time.perf_counter()
            message = client.encrypt(self._secrets[row], session=row)
            self.stats["client_encrypt_seconds"] += time.perf_counter() - t0
            self.stats["upload_bytes"] += len(message)
            session = server.open_session(message)
            self.stats["server_setup_seconds"] += session.setup_seconds
            self._sessions[row] = session
        return self._sessions[row]

    def close_row(self, row: int) -> None:
        """Free a row's server-side ciphertexts (about 200 MB per image at N = 8192)."""
        self._sessions.pop(row, None)
        if self.policy.fresh_keys and row in self._pairs:
            del self._pairs[row]  # a later query of the row encrypts it again under a new key

    def release(self, rows: torch.Tensor) -> None:
        for row in rows.tolist():
            self.close_row(int(row))

    def close(self) -> None:
        self._sessions.clear()

    def _answer(self, perturbations: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        pert = perturbations.detach().cpu().double().numpy()
        rows_np = rows.cpu().numpy()
        answer = np.zeros(len(rows_np), dtype=bool)
        for row in np.unique(rows_np):
            where = np.flatnonzero(rows_np == row)
            session = self.session(int(row))
            client, server = self.pair(int(row))
            for start in range(0, len(where), self.capacity):
                idx = where[start:start + self.capacity]
                t0 = time.perf_counter()
                result = server.evaluate(session, pert[idx])
                t1 = time.perf_counter()
                reply = client.answer(result)
                t2 = time.perf_counter()
                answer[idx] = unpack_bits(reply, len(idx))
                self.stats["evaluations"] += 1
                self.stats["slots_used"] += len(idx) + 1
                self.stats["download_bytes"] += len(result)
                self.stats["reply_bytes"] += len(reply)
                self.stats["server_eval_seconds"] += t1 - t0
                self.stats["client_decrypt_seconds"] += t2 - t1
        return torch.from_numpy(answer)

    def costs(self) -> dict:
        """Additive counters: bytes each way, evaluations, slots used of ``slots_available``
        (evaluations x slots; utilisation = slots_used / slots_available), seconds per party."""
        s = {**self.stats, "slots_available": self.stats["evaluations"] * self.params.slots}
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items()}


def _available_mb() -> float | None:
    """MemAvailable from /proc/meminfo in MB (None where there is no such file)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _check_memory() -> None:
    """Refuse, in one line, to start a CKKS job the machine cannot hold (peak: CKKS_PEAK_MB, any chunk size)."""
    available = _available_mb()
    if available is not None and available < CKKS_PEAK_MB:
        raise InvalidValueError(f"a CKKS fingerprint job peaks at about {CKKS_PEAK_MB} MB of memory (one image at a "
                                f"time, any chunk size); only {available:.0f} MB are available here")


class CKKSFactory:
    """The registry's factory for ``--oracle ckks``: checks the model's depth against the parameters
    once, then builds a fresh client (new keys) and server per chunk of secrets."""

    def __init__(self, target, *, layout: str = "batched", params: CKKSParameters = CKKSParameters(),
                 client_policy: str | None = None):
        if layout not in LAYOUTS:
            raise InvalidValueError(f"unknown CKKS layout '{layout}' (choose from {', '.join(LAYOUTS)})")
        self.target, self.layout, self.params = target, layout, params
        self.policy = parse_client_policy(client_policy)  # None: the default (most secure) policy
        _check_memory()
        self.depth = poly_cnn(target.model, target.in_shape, target.arch).depth
        params.check_depth(self.depth, target.arch)

    def __call__(self, secrets: torch.Tensor, budget: int | None) -> CKKSOracle:
        return CKKSOracle(self.target.model, secrets, in_shape=self.target.in_shape, arch=self.target.arch,
                          params=self.params, layout=self.layout, budget=budget, client_policy=self.policy)

    def describe(self) -> dict:
        return {"ckks": {**self.params.describe(POLY_CNN_DEPTH), "layout": self.layout},
                "client_policy": self.policy.spec}


factory = CKKSFactory
