"""Baseline: TenSEAL's MNIST-tutorial evaluation, one query per ciphertext.

The client encrypts the image once with ``ts.im2col_encoding``; for each query the server adds
the perturbation in the same im2col layout (ciphertext + plaintext) and runs the tutorial's
``conv2d_im2col`` -> x^2 -> ``mm`` -> x^2 -> ``mm``. This is what an attacker gets without slot
batching; benchmarks/ckks.py times it on a sample of queries.
"""

from __future__ import annotations

import time

import numpy as np
import tenseal as ts

from ...core.errors import InvalidValueError
from .params import CKKSParameters
from .polymodel import PolyCNN, im2col_slots


class NaiveCKKS:
    """Client and server of the tutorial in one object; only bytes cross between them."""

    def __init__(self, model: PolyCNN, params: CKKSParameters = CKKSParameters()):
        if model.in_shape[0] != 1:
            raise InvalidValueError("the tutorial layout takes single-channel images")
        self.model, self.params = model, params
        ctx = ts.context(ts.SCHEME_TYPE.CKKS, params.poly_modulus_degree, coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes))
        ctx.global_scale = params.scale
        ctx.generate_galois_keys()
        ctx.generate_relin_keys()
        self._client_ctx = ctx
        public = ctx.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=True, save_relin_keys=True)
        self.context_bytes = len(public)
        server_ctx = ts.context_from(public)
        if server_ctx.is_private():
            raise InvalidValueError("refusing a context with a secret key")
        self._server_ctx = server_ctx
        k = model.conv_weight.shape[-1]
        self._kernel, self._stride = k, model.stride
        self._slots = im2col_slots(model.in_shape, k, model.stride)
        self._windows = model.out_hw[0] * model.out_hw[1]

    def encrypt(self, image: np.ndarray) -> bytes:
        vec, _ = ts.im2col_encoding(self._client_ctx, np.asarray(image, dtype=np.float64)[0].tolist(),
                                    self._kernel, self._kernel, self._stride)
        return vec.serialize()

    def evaluate(self, encrypted: bytes, perturbation: np.ndarray) -> bytes:
        """Server: one query. perturbation [C, H, W]; returns the serialized logits vector."""
        m = self.model
        enc = ts.ckks_vector_from(self._server_ctx, encrypted)
        shift = np.zeros(enc.size())
        shift[:len(self._slots)] = np.asarray(perturbation, dtype=np.float64).reshape(-1)[self._slots]
        enc = enc + shift.tolist()
        channels = [enc.conv2d_im2col(m.conv_weight[c, 0].tolist(), self._windows) + float(m.conv_bias[c])
                    for c in range(m.conv_weight.shape[0])]
        h = ts.CKKSVector.pack_vectors(channels)
        h.square_()
        h = h.mm(m.fc1_weight.T.tolist()) + m.fc1_bias.tolist()
        h.square_()
        h = h.mm(m.fc2_weight.T.tolist()) + m.fc2_bias.tolist()
        return h.serialize()

    def decide(self, result: bytes, label: int) -> bool:
        """Client: decrypt, reveal only top-1 == label."""
        logits = ts.ckks_vector_from(self._client_ctx, result).decrypt()
        return int(np.argmax(logits)) == label

    def top1(self, result: bytes) -> int:
        return int(np.argmax(ts.ckks_vector_from(self._client_ctx, result).decrypt()))

    def time_queries(self, image: np.ndarray, perturbations: np.ndarray) -> dict:
        """Seconds and bytes per query, and the decisions, over ``perturbations`` [Q, C, H, W]."""
        t0 = time.perf_counter()
        encrypted = self.encrypt(image)
        t_enc = time.perf_counter() - t0
        label = self.top1(self.evaluate(encrypted, np.zeros(self.model.in_shape)))
        t0 = time.perf_counter()
        answers, down = [], 0
        for p in perturbations:
            result = self.evaluate(encrypted, p)
            down += len(result)
            answers.append(self.decide(result, label))
        seconds = time.perf_counter() - t0
        q = len(perturbations)
        return {"queries": q, "seconds": seconds, "seconds_per_query": seconds / max(q, 1),
                "encrypt_seconds": t_enc, "upload_bytes": len(encrypted), "download_bytes_per_query": down / max(q, 1),
                "context_bytes": self.context_bytes, "answers": answers}


__all__ = ["NaiveCKKS"]
