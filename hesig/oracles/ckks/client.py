"""The victim's side: owns the CKKS secret key, encrypts X, and reveals one bit per query.

It never sends logits or decryptions (decryptions leak CKKS keys: Li & Micciancio, EUROCRYPT
2021). Its only outputs are the public context message, the encrypted input, and, per query,
whether the decrypted top-1 class equals its own unperturbed top-1 class.

A malicious server can still turn that bit into a key-recovery oracle by returning ciphertexts
it built itself (hesig.attacks.key_recovery). The client's :class:`~hesig.oracles.policies.ClientPolicy`
decides how much it defends: a strict client (every policy but ``undefended``) accepts only a
result of the protocol's exact format -- its own session, 1..slots-1 queries, one ciphertext per
model output, size 2, the result level and scale -- and answers anything else with one error
line and no bits; the session and its reference label are the client's, fixed by the first
result of an input and never reset by the server; a budget caps the replies per key.
"""

from __future__ import annotations

import io

import numpy as np
import tenseal as ts
import tenseal.sealapi as sa

import weakref

from ...core.defaults import CKKS_ENCRYPTIONS, CKKS_LAYOUTS as LAYOUTS, CKKS_PROCESSES
from ...core.errors import InvalidValueError, MismatchError, ClientRefusal, ShapeError
from ..policies import ClientPolicy, ClientView, parse_client_policy
from . import rns, seeded, wire
from ._seal import Scratch, galois_elements, moduli_by_parms, pid_bytes, trim_heap
from .helpers import HelperPool, check_processes, expect, recv_bytes, reply, run_loop
from .params import CKKSParameters
from .polymodel import POLY_CNN_DEPTH, im2col_slots
from .server import result_format


class CKKSClient:
    """``layout``: "batched" sends one ciphertext per pixel, the pixel replicated over all slots
    (slot j then carries query j once the server adds perturbation j); "compact" sends the image
    as one ciphertext in TenSEAL's im2col layout plus Galois keys for the power-of-two rotations
    the server needs to reach the batched layout itself.

    ``encryption``: "seeded" encrypts with the client's own secret key (symmetric RLWE) and sends
    every ciphertext and evaluation key in SEAL's seeded form, where the uniformly random half is
    replaced by the 64-byte seed it was expanded from: half the bytes, and about half the
    client's encryption time. "public-key" is hesig's original path (public-key encryption,
    TenSEAL's full-size keys), kept as the baseline of benchmarks/ckks.py. Both are IND-CPA under
    RLWE; the server's view differs only in size.

    ``processes``: the batched layout's 784 encryptions are split over this many processes, the
    client's own helpers (:func:`encrypt_loop`), which receive this client's secret key; the
    server's helpers are other processes and never do."""

    def __init__(self, params: CKKSParameters = CKKSParameters(), *, layout: str = "batched",
                 policy: ClientPolicy | str | None = None, num_outputs: int = 10, key_index: int = 0,
                 encryption: str = CKKS_ENCRYPTIONS[0], processes: int = CKKS_PROCESSES):
        """policy: a ClientPolicy or spec string (None = the default policy, see hesig.oracles.policies).
        num_outputs: the model's number of logits (a strict client accepts exactly that many ciphertexts).
        key_index: salts the flooding noise of this key pair."""
        self.processes = check_processes(processes)
        self._pool: HelperPool | None = None
        if layout not in LAYOUTS:
            raise InvalidValueError(f"unknown CKKS layout '{layout}' (choose from {', '.join(LAYOUTS)})")
        if encryption not in CKKS_ENCRYPTIONS:
            raise InvalidValueError(f"unknown CKKS encryption '{encryption}' (choose from {', '.join(CKKS_ENCRYPTIONS)})")
        if int(num_outputs) < 2:
            raise InvalidValueError(f"a classifier has >= 2 outputs, got {num_outputs}")
        self.params, self.layout, self.encryption = params, layout, encryption
        self.policy = parse_client_policy(policy).check_encrypted()
        self.num_outputs = int(num_outputs)
        self._rng = self.policy.rng(key_index)
        self.replies = 0
        self.evaluations: dict[int, int] = {}  # per session: queries answered (the evaluations budget)
        self.view = ClientView()  # per session: what this client saw (hesig.defenses.detector)
        ctx = ts.context(ts.SCHEME_TYPE.CKKS, params.poly_modulus_degree,
                         coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes))
        ctx.global_scale = params.scale
        is_seeded = encryption == "seeded"
        if not is_seeded:
            ctx.generate_relin_keys()
        self._ctx = ctx
        self._scratch = Scratch(self)
        seal_ctx = ctx.seal_context().data
        self._seal = seal_ctx
        self._encoder = sa.CKKSEncoder(seal_ctx)
        self._encryptor = sa.Encryptor(seal_ctx, ctx.public_key().data)
        self._encryptor.set_secret_key(ctx.secret_key().data)
        self._decryptor = sa.Decryptor(seal_ctx, ctx.secret_key().data)
        self._seeded_shape = seeded.SeededShape.of(seal_ctx, ctx.public_key().data, self._scratch) if is_seeded else None
        public = ctx.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=not is_seeded)
        self.context_id = wire.context_id(public)
        keygen = sa.KeyGenerator(seal_ctx, ctx.secret_key().data)
        parts = [public]
        if is_seeded:  # create_* without a destination returns SEAL's seeded Serializable form
            parts.append(self._scratch.save(keygen.create_relin_keys()))
        if layout == "compact":
            elements = galois_elements([1 << i for i in range(params.slots.bit_length() - 1)], params.poly_modulus_degree)
            if is_seeded:
                parts.append(self._scratch.save(keygen.create_galois_keys(elements)))
            else:
                keys = sa.GaloisKeys()
                keygen.create_galois_keys(elements, keys)
                parts.append(self._scratch.save(keys))
        self._context_message = wire.pack("context", self.context_id, parts, layout=layout, encryption=encryption)
        self._labels: dict[int, int | None] = {}
        moduli = moduli_by_parms(seal_ctx)
        chain, data = [], seal_ctx.first_context_data()
        while data is not None:
            chain.append(pid_bytes(data.parms_id()))
            data = data.next_context_data()
        result = chain[min(POLY_CNN_DEPTH, len(chain) - 1)]
        self._result_parms, self._result_moduli = result, moduli[result]
        self._result_scale = (result_format([int(q) for q in moduli[chain[0]]], params.scale)
                              if len(chain) > POLY_CNN_DEPTH else None)
        self._next_session = 0
        self._kernel, self._stride = 7, 3  # hecnn's conv1; see set_conv_geometry

    def context_message(self) -> bytes:
        """The serialized public context (public key, relinearization keys, Galois keys if compact)."""
        return self._context_message

    def encrypt(self, image: np.ndarray, session: int | None = None) -> bytes:
        """Encrypt one secret image [C, H, W] in [0, 1]; the message names its session.

        session: the client's id for this input (None: the next free one). A strict client
        refuses to reuse an id that already holds an input, and with ``fresh-keys`` refuses a
        second input under the same key.
        """
        fields, parts = self.encrypt_parts(image, session)
        # Joined part by part, each part released once copied: b"".join would hold the 784 parts
        # and the message (2 x 180 MB) at once. BytesIO grows one buffer in place and hands it over
        # as the message without a copy (CPython), so the peak is about one message.
        buffer = io.BytesIO()
        for i, piece in enumerate(wire.pack_stream("input", self.context_id, parts, **fields)):
            buffer.write(piece)
            if i:
                parts[i - 1] = None
            if i % 64 == 0:
                trim_heap()  # give the released parts' pages back as we go
        del parts, piece
        message = buffer.getvalue()
        del buffer
        trim_heap()
        return message

    def encrypt_parts(self, image: np.ndarray, session: int | None = None) -> tuple[dict, list[bytes]]:
        """:meth:`encrypt` before packing: (header fields, ciphertext parts), for a sender that
        streams the message (wire.pack_stream) instead of joining a second copy of it."""
        if session is None:
            while self._next_session in self._labels:
                self._next_session += 1
            session = self._next_session
        session = int(session)
        image = np.asarray(image, dtype=np.float64)
        if image.ndim != 3:
            raise ShapeError(f"the client encrypts one image [C, H, W], got shape {list(image.shape)}")
        if not np.isfinite(image).all():
            raise InvalidValueError("secret image contains NaN or infinity")
        if self.policy.strict:
            if session in self._labels:
                raise InvalidValueError(f"session {session} already holds an input (forget it first)")
            if self.policy.fresh_keys and self._labels:
                raise InvalidValueError("this client's policy is fresh-keys: one input per key pair (make a new client)")
        if self.layout == "batched":
            parts = self._encrypt_values(image.reshape(-1))
        else:
            if image.shape[0] != 1:
                raise ShapeError("the compact (im2col) layout takes single-channel images")
            if self.encryption == "seeded":
                where = im2col_slots(image.shape, self._kernel, self._stride)
                if where.size > self.params.slots:
                    raise ShapeError("the image's im2col layout does not fit in the slots")
                slots = np.zeros(self.params.slots)
                slots[:where.size] = image.reshape(-1)[where]
                plain = sa.Plaintext()
                self._encoder.encode(slots.tolist(), self.params.scale, plain)
                parts = [self._encrypt(plain)]
            else:
                vec, _ = ts.im2col_encoding(self._ctx, image[0].tolist(), self._kernel, self._kernel, self._stride)
                parts = [self._scratch.save(vec.ciphertext()[0])]
        self._labels.setdefault(session, None)
        return {"session": int(session), "layout": self.layout, "shape": list(image.shape)}, parts

    def _encrypt(self, plain) -> bytes:
        """One serialized ciphertext of ``plain`` (seeded symmetric, or public-key: see the class)."""
        return _encrypt(self._encryptor, self._scratch, plain, self.encryption, self._seeded_shape)

    def _encrypt_values(self, values: np.ndarray) -> list[bytes]:
        """One ciphertext per value, the value in every slot; split over the client's helpers."""
        if self.processes == 1:
            return _encrypt_scalars(self._encoder, self._encryptor, self._scratch, values, self.params.scale, self.encryption,
                                    self._seeded_shape)
        chunks = np.array_split(np.asarray(values, dtype=np.float64), self.processes)
        if self._pool is None or not self._pool.alive():
            self._pool = HelperPool.shared(ENCRYPT_LOOP, self.processes)
            secret = self._ctx.serialize(save_public_key=True, save_secret_key=True, save_galois_keys=False,
                                         save_relin_keys=False)
            with self._pool.lock:
                for conn in self._pool.helpers:
                    conn.send(("key", self.context_id, secret, self.encryption, self.params.scale))
                for conn in self._pool.helpers:
                    expect(conn)
            del secret
            weakref.finalize(self, self._pool.tell, ("drop", self.context_id))
        with self._pool.lock:
            for chunk, conn in zip(chunks[1:], self._pool.helpers):
                conn.send(("encrypt", self.context_id, chunk.tolist()))
            parts = _encrypt_scalars(self._encoder, self._encryptor, self._scratch, chunks[0], self.params.scale, self.encryption,
                                     self._seeded_shape)
            for conn in self._pool.helpers:
                count = expect(conn)["parts"]
                parts.extend(recv_bytes(conn) for _ in range(int(count)))
        return parts

    def set_conv_geometry(self, kernel: int, stride: int) -> None:
        """The compact layout is TenSEAL's im2col for the model's first convolution (public knowledge)."""
        self._kernel, self._stride = int(kernel), int(stride)

    def _logits(self, message: bytes) -> tuple[dict, np.ndarray]:
        header, parts = wire.unpack(message, "result", self.context_id)
        if self.policy.strict:
            self._validate(header, parts)
        plain, out = sa.Plaintext(), []
        for blob in parts:
            try:
                ct = self._scratch.load(sa.Ciphertext(), self._seal, blob)
            except Exception:  # SEAL's own validation: ValueError / RuntimeError on a foreign object
                raise MismatchError("refused result: a part is not a valid ciphertext of this context") from None
            self._decryptor.decrypt(ct, plain)
            out.append(self._encoder.decode_double(plain))
        if not out:
            raise MismatchError("refused result: it holds no ciphertexts")
        return header, np.asarray(out)

    def _validate(self, header: dict, parts: list[bytes]) -> None:
        """Refuse (MismatchError, one line) any result but the protocol's: see the module docstring."""
        session, count = header.get("session"), header.get("count")
        if type(session) is not int or session not in self._labels:
            raise MismatchError(f"refused result: session {session!r} is not one of this client's inputs")
        if type(count) is not int or not 1 <= count <= self.params.slots - 1:
            raise MismatchError(f"refused result: count {count!r} is not an integer in 1..{self.params.slots - 1}")
        if len(parts) != self.num_outputs:
            raise MismatchError(f"refused result: {len(parts)} ciphertexts, the model has {self.num_outputs} outputs")
        if self._result_scale is None:
            raise MismatchError("refused result: these parameters cannot hold the model's result level")
        for i, blob in enumerate(parts):
            ct = rns.parse(blob)  # MismatchError "not a SEAL CKKS ciphertext" on anything else
            size, levels, n = ct.data.shape
            if size != 2:
                raise MismatchError(f"refused result: ciphertext {i} has size {size}, results are relinearized (size 2)")
            if n != self.params.poly_modulus_degree:
                raise MismatchError(f"refused result: ciphertext {i} has {n} coefficients, not {self.params.poly_modulus_degree}")
            if ct.parms_id != self._result_parms or levels != len(self._result_moduli):
                raise MismatchError(f"refused result: ciphertext {i} is not at the result level "
                                    f"({levels} primes, expected {len(self._result_moduli)})")
            if not abs(ct.scale / self._result_scale - 1) < 1e-9:
                raise MismatchError(f"refused result: ciphertext {i} has scale 2^{np.log2(max(ct.scale, 1e-300)):.3f}, "
                                    f"the protocol's is 2^{np.log2(self._result_scale):.3f}")
            if not rns.check_reduced(ct.data, self._result_moduli):
                raise MismatchError(f"refused result: ciphertext {i} has unreduced coefficients")

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
        of a session fixes the client's reference class from it (after the policy's flooding or
        rounding). A strict client refuses any other message with one MismatchError line and
        answers nothing; past its budget it raises ClientRefusal before decrypting.
        """
        if not self.policy.strict:
            return self._answer_undefended(message)
        budget = self.policy.replies_per_key
        if budget is not None and self.replies >= budget:
            raise ClientRefusal(f"this key's decryption budget of {budget} replies is spent; "
                                       "the client answers no more results under it")
        header, logits = self._logits(message)
        count, session = header["count"], header["session"]
        limit, used = self.policy.evaluations_per_input, self.evaluations.get(session, 0)
        if limit is not None and used + count > limit:
            raise ClientRefusal(f"this input's evaluation budget of {limit} evaluations would be exceeded "
                                f"({used} answered, the result holds {count})")
        self.replies += 1
        self.evaluations[session] = used + count
        bits, label = self.policy.release(logits[:, :count + 1], self._labels[session], self._rng)
        self._labels[session] = label
        self.view.record(np.full(count, session), logits[:, :count], np.full(count, label))
        return wire.pack_bits(bits)

    def _answer_undefended(self, message: bytes) -> bytes:
        """hesig's original client: trusts the header (session, count) and the parts as sent."""
        header, logits = self._logits(message)
        count, session = int(header["count"]), int(header["session"])
        top = logits[:, :count + 1].argmax(0)
        label = self._labels.get(session)
        if label is None:
            label = self._labels[session] = int(top[count])
        self.replies += 1
        return wire.pack_bits(top[:count] == label)

    def forget(self, session: int) -> None:
        self._labels.pop(session, None)
        self.evaluations.pop(session, None)


__all__ = ["CKKSClient", "LAYOUTS"]


#: the client helpers' loop (hesig.oracles.ckks.helpers.serve)
ENCRYPT_LOOP = "hesig.oracles.ckks.client:encrypt_loop"


def _encrypt(encryptor, scratch: Scratch, plain, encryption: str, shape: seeded.SeededShape | None) -> bytes:
    if encryption == "seeded":
        ct = encryptor.encrypt_symmetric(plain)  # SEAL's Serializable: c0 and c1's seed
        return seeded.pack(ct, shape, plain.scale) or scratch.save(ct)
    ct = sa.Ciphertext()
    encryptor.encrypt(plain, ct)
    return scratch.save(ct)


def _encrypt_scalars(encoder, encryptor, scratch: Scratch, values, scale: float, encryption: str,
                     shape: seeded.SeededShape | None) -> list[bytes]:
    plain = sa.Plaintext()
    parts = []
    for value in values:
        encoder.encode(float(value), scale, plain)  # a scalar fills every slot
        parts.append(_encrypt(encryptor, scratch, plain, encryption, shape))
    return parts


def encrypt_loop(conn) -> None:
    """A client helper: encrypts values under the keys its own client sent it ("key"), until told
    to drop them. It runs only as a child of the client that owns those keys."""
    keys: dict[str, tuple] = {}
    scratch_owner = type("ScratchOwner", (), {})()
    scratch = Scratch(scratch_owner)

    def handle(command: tuple) -> None:
        op = command[0]
        if op == "key":
            _, cid, secret, encryption, scale = command
            ctx = ts.context_from(secret)
            seal = ctx.seal_context().data
            encryptor = sa.Encryptor(seal, ctx.public_key().data)
            encryptor.set_secret_key(ctx.secret_key().data)
            shape = seeded.SeededShape.of(seal, ctx.public_key().data, scratch) if encryption == "seeded" else None
            keys[cid] = (sa.CKKSEncoder(seal), encryptor, encryption, scale, shape, ctx)
            reply(conn, {"ok": True})
        elif op == "drop":
            keys.pop(command[1], None)
        elif op == "encrypt":
            _, cid, values = command
            encoder, encryptor, encryption, scale, shape, _ = keys[cid]
            parts = _encrypt_scalars(encoder, encryptor, scratch, values, scale, encryption, shape)
            reply(conn, {"parts": len(parts)})
            for part in parts:
                conn.send_bytes(part)
        else:
            raise InvalidValueError(f"unknown helper command {op!r}")

    run_loop(conn, handle)
