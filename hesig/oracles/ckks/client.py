"""The victim's side: owns the CKKS secret key, encrypts X, and reveals one bit per query.

It never sends logits or decryptions (decryptions leak CKKS keys: Li & Micciancio, EUROCRYPT
2021). Its only outputs are the public context message, the encrypted input, and, per query,
whether the decrypted top-1 class equals its own unperturbed top-1 class.
"""

from __future__ import annotations

import numpy as np
import tenseal as ts
import tenseal.sealapi as sa

from ...core.errors import InvalidValueError, ShapeError
from . import wire
from ._seal import Scratch, galois_elements
from ...core.defaults import CKKS_LAYOUTS as LAYOUTS
from .params import CKKSParameters



class CKKSClient:
    """``layout``: "batched" sends one ciphertext per pixel, the pixel replicated over all slots
    (slot j then carries query j once the server adds perturbation j); "compact" sends the image
    as one ciphertext in TenSEAL's im2col layout plus Galois keys for the power-of-two rotations
    the server needs to reach the batched layout itself."""

    def __init__(self, params: CKKSParameters = CKKSParameters(), *, layout: str = "batched"):
        if layout not in LAYOUTS:
            raise InvalidValueError(f"unknown CKKS layout '{layout}' (choose from {', '.join(LAYOUTS)})")
        self.params, self.layout = params, layout
        ctx = ts.context(ts.SCHEME_TYPE.CKKS, params.poly_modulus_degree,
                         coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes))
        ctx.global_scale = params.scale
        ctx.generate_relin_keys()
        self._ctx = ctx
        self._scratch = Scratch(self)
        seal_ctx = ctx.seal_context().data
        self._seal = seal_ctx
        self._encoder = sa.CKKSEncoder(seal_ctx)
        self._encryptor = sa.Encryptor(seal_ctx, ctx.public_key().data)
        self._decryptor = sa.Decryptor(seal_ctx, ctx.secret_key().data)
        public = ctx.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=True)
        self.context_id = wire.context_id(public)
        parts = [public]
        if layout == "compact":
            keys = sa.GaloisKeys()
            steps = [1 << i for i in range(params.slots.bit_length() - 1)]
            sa.KeyGenerator(seal_ctx, ctx.secret_key().data).create_galois_keys(
                galois_elements(steps, params.poly_modulus_degree), keys)
            parts.append(self._scratch.save(keys))
        self._context_message = wire.pack("context", self.context_id, parts, layout=layout)
        self._labels: dict[int, int] = {}
        self._kernel, self._stride = 7, 3  # hecnn's conv1; see set_conv_geometry

    def context_message(self) -> bytes:
        """The serialized public context (public key, relinearization keys, Galois keys if compact)."""
        return self._context_message

    def encrypt(self, image: np.ndarray, session: int) -> bytes:
        """Encrypt one secret image [C, H, W] in [0, 1] for ``session``."""
        image = np.asarray(image, dtype=np.float64)
        if image.ndim != 3:
            raise ShapeError(f"the client encrypts one image [C, H, W], got shape {list(image.shape)}")
        if not np.isfinite(image).all():
            raise InvalidValueError("secret image contains NaN or infinity")
        if self.layout == "batched":
            parts = []
            plain, ct = sa.Plaintext(), sa.Ciphertext()
            for value in image.reshape(-1):
                self._encoder.encode(float(value), self.params.scale, plain)  # a scalar fills every slot
                self._encryptor.encrypt(plain, ct)
                parts.append(self._scratch.save(ct))
        else:
            if image.shape[0] != 1:
                raise ShapeError("the compact (im2col) layout takes single-channel images")
            vec, _ = ts.im2col_encoding(self._ctx, image[0].tolist(), self._kernel, self._kernel, self._stride)
            parts = [self._scratch.save(vec.ciphertext()[0])]
        return wire.pack("input", self.context_id, parts, session=int(session), layout=self.layout,
                         shape=list(image.shape))

    def set_conv_geometry(self, kernel: int, stride: int) -> None:
        """The compact layout is TenSEAL's im2col for the model's first convolution (public knowledge)."""
        self._kernel, self._stride = int(kernel), int(stride)

    def _logits(self, message: bytes) -> tuple[dict, np.ndarray]:
        header, parts = wire.unpack(message, "result", self.context_id)
        plain, out = sa.Plaintext(), []
        for blob in parts:
            ct = self._scratch.load(sa.Ciphertext(), self._seal, blob)
            self._decryptor.decrypt(ct, plain)
            out.append(self._encoder.decode_double(plain))
        return header, np.asarray(out)

    def decrypt_logits(self, message: bytes) -> np.ndarray:
        """The decrypted logits float64 [count, num_classes] of a result's queries, in query order.

        The client's private view, for illustration (the confidence-against-ε figure) and tests.
        hesig's protocol never sends it anywhere: :meth:`answer` is the only reply.
        """
        header, logits = self._logits(message)
        return logits[:, :int(header["count"])].T.copy()

    def answer(self, message: bytes) -> bytes:
        """Decrypt a result and reveal, per query, only top-1 == own unperturbed top-1 (packed bits).

        The last used slot of every evaluation carries the unperturbed input; the first evaluation
        of a session fixes the client's reference class from it.
        """
        header, logits = self._logits(message)
        count, session = int(header["count"]), int(header["session"])
        top = logits[:, :count + 1].argmax(0)
        label = self._labels.setdefault(session, int(top[count]))
        return np.packbits(top[:count] == label).tobytes()

    def forget(self, session: int) -> None:
        self._labels.pop(session, None)


def unpack_bits(reply: bytes, count: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(reply, dtype=np.uint8), count=count).astype(bool)


__all__ = ["CKKSClient", "LAYOUTS", "unpack_bits"]
