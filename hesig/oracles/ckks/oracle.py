"""The label-change oracle over CKKS in one process: the victim (:class:`LocalVictim`, a TenSEAL
client holding the secret key and the images) and the server (:class:`EncryptedOracle`, public
context only) exchange only bytes. The attack side sees exactly what it sees with the plaintext
oracle -- bits and counters -- plus the cost accounting (bytes each way, evaluations, seconds).
``hesig serve`` / ``hesig victim`` run the same two roles in two processes over HTTP.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from ...core.defaults import CKKS_ENCRYPTIONS, CKKS_PROCESSES
from ...core.errors import InvalidValueError, ShapeError
from ..policies import ClientPolicy, parse_client_policy
from .channel import EncryptedOracle, check_memory
from .helpers import check_processes
from .client import LAYOUTS, CKKSClient
from .params import CKKSParameters
from .polymodel import POLY_CNN_DEPTH, PolyCNN, poly_cnn


class LocalVictim:
    """The victim in the attacker's process: secret images [n, C, H, W] in [0, 1] and the client(s)
    that hold their keys. One client serves every row, or, under the ``fresh-keys`` policy, each
    row gets its own key pair when it is first encrypted (a later re-encryption of a released row
    gets another). It gives the server nothing but the wire messages."""

    def __init__(self, secrets: np.ndarray, poly: PolyCNN, params: CKKSParameters, layout: str, policy: ClientPolicy,
                 encryption: str = CKKS_ENCRYPTIONS[0], processes: int = CKKS_PROCESSES):
        self._secrets, self._poly, self.params, self.layout, self.policy = secrets, poly, params, layout, policy
        self.encryption, self.processes = encryption, processes
        self.stats = {"client_keygen_seconds": 0.0, "client_encrypt_seconds": 0.0, "client_decrypt_seconds": 0.0}
        self._keys = 0
        self._clients: dict[int, CKKSClient] = {}
        self.client = self._new_client()

    def _new_client(self) -> CKKSClient:
        t0 = time.perf_counter()
        client = CKKSClient(self.params, layout=self.layout, policy=self.policy, encryption=self.encryption,
                            num_outputs=self._poly.fc2_weight.shape[0], key_index=self._keys, processes=self.processes)
        client.set_conv_geometry(self._poly.conv_weight.shape[-1], self._poly.stride)
        self._keys += 1
        self.stats["client_keygen_seconds"] += time.perf_counter() - t0
        return client

    def client_of(self, row: int) -> CKKSClient:
        """The client that holds row ``row``'s key (one for all rows, or one per row under fresh-keys)."""
        if row not in self._clients:
            fresh = self.policy.fresh_keys and self._clients
            self._clients[row] = self._new_client() if fresh else self.client
        return self._clients[row]

    def input(self, row: int) -> tuple[bytes, bytes]:
        client = self.client_of(row)
        t0 = time.perf_counter()
        message = client.encrypt(self._secrets[row], session=row)
        self.stats["client_encrypt_seconds"] += time.perf_counter() - t0
        return client.context_message(), message

    def input_checked(self, row: int, error: str | None) -> bool:
        return False  # in process the input is the client's own: an error is a bug to report, not to retry

    def answer(self, row: int, result: bytes) -> bytes:
        t0 = time.perf_counter()
        try:
            return self.client_of(row).answer(result)
        finally:
            self.stats["client_decrypt_seconds"] += time.perf_counter() - t0

    def forget(self, row: int) -> None:
        client = self._clients.get(row)
        if client is not None and self.policy.fresh_keys:
            del self._clients[row]  # a later query of the row encrypts it again under a new key
        elif client is not None:
            client.forget(row)
            del self._clients[row]

    def costs(self) -> dict:
        return dict(self.stats)


class CKKSOracle(EncryptedOracle):
    """secrets: [n, C, H, W] in [0, 1], encrypted lazily (row r when first queried) by a
    :class:`LocalVictim` under ``client_policy`` (a ClientPolicy or spec string; None = the
    default, hesig.oracles.policies.DEFAULT_POLICY_SPEC). With ``fresh-keys`` every row gets its
    own key pair; a per-key reply budget then ends the attack with ClientRefusal once a row's key
    is spent. ``encryption``: how the victim's client encrypts (hesig.core.defaults.CKKS_ENCRYPTIONS).
    ``processes``: processes the client's encryption and the server's work on each image are
    split over (hesig.core.defaults.CKKS_PROCESSES; the same results)."""

    def __init__(self, model: nn.Module, secrets: torch.Tensor, *, in_shape: tuple[int, int, int], arch: str = "model",
                 params: CKKSParameters = CKKSParameters(), layout: str = "batched", budget: int | None = None,
                 client_policy: ClientPolicy | str | None = None, poly: PolyCNN | None = None,
                 encryption: str = CKKS_ENCRYPTIONS[0], processes: int = CKKS_PROCESSES):
        if secrets.ndim != 4 or tuple(secrets.shape[1:]) != tuple(in_shape):
            raise ShapeError(f"secrets must be [n, {', '.join(map(str, in_shape))}], got shape {tuple(secrets.shape)}")
        if not torch.isfinite(secrets).all():
            raise InvalidValueError("secret inputs contain NaN or infinity")
        if layout not in LAYOUTS:
            raise InvalidValueError(f"unknown CKKS layout '{layout}' (choose from {', '.join(LAYOUTS)})")
        if encryption not in CKKS_ENCRYPTIONS:
            raise InvalidValueError(f"unknown CKKS encryption '{encryption}' (choose from {', '.join(CKKS_ENCRYPTIONS)})")
        poly = poly if poly is not None else poly_cnn(model, tuple(in_shape), arch)
        params.check_depth(poly.depth, arch)
        self.layout = layout
        self.policy = parse_client_policy(client_policy).check_encrypted()
        processes = check_processes(processes)
        victim = LocalVictim(secrets.detach().cpu().double().numpy(), poly, params, layout, self.policy, encryption, processes)
        super().__init__(poly, victim, secrets.shape[0], params=params, budget=budget, server_processes=processes)
        self.client = victim.client

    def client_of(self, row: int) -> CKKSClient:
        """The victim's client for row ``row`` (tests and illustrations: the attacker never holds it)."""
        return self.victim.client_of(int(row))


class CKKSFactory:
    """The registry's factory for ``--oracle ckks``: checks the model's depth against the parameters
    once, then builds a fresh client (new keys) and server per chunk of secrets."""

    def __init__(self, target, *, layout: str = "batched", params: CKKSParameters = CKKSParameters(),
                 client_policy: str | None = None, encryption: str = CKKS_ENCRYPTIONS[0],
                 processes: int = CKKS_PROCESSES):
        if layout not in LAYOUTS:
            raise InvalidValueError(f"unknown CKKS layout '{layout}' (choose from {', '.join(LAYOUTS)})")
        if encryption not in CKKS_ENCRYPTIONS:
            raise InvalidValueError(f"unknown CKKS encryption '{encryption}' (choose from {', '.join(CKKS_ENCRYPTIONS)})")
        self.target, self.layout, self.params, self.encryption = target, layout, params, encryption
        self.processes = check_processes(processes)
        self.policy = parse_client_policy(client_policy).check_encrypted()  # None: the default (most secure) policy
        check_memory()
        self.poly = poly_cnn(target.model, target.in_shape, target.arch)
        self.depth = self.poly.depth
        params.check_depth(self.depth, target.arch)

    def __call__(self, secrets: torch.Tensor, budget: int | None) -> CKKSOracle:
        return CKKSOracle(self.target.model, secrets, in_shape=self.target.in_shape, arch=self.target.arch,
                          params=self.params, layout=self.layout, budget=budget, client_policy=self.policy,
                          poly=self.poly, encryption=self.encryption, processes=self.processes)

    def describe(self) -> dict:
        return {"ckks": {**self.params.describe(POLY_CNN_DEPTH), "layout": self.layout, "encryption": self.encryption},
                "client_policy": self.policy.spec}


factory = CKKSFactory
