"""A malicious model owner's CKKS toolbox, built from the victim's public context bytes only.

It crafts "result" messages in exactly the protocol's format (one ciphertext per model output,
size 2, the result level and scale, the client's session, a count in range), so a strict
client's checks all pass, but the ciphertexts are its own:

* ``Enc_pk(v)``: an honest public-key encryption of slot values v (decrypts to v + noise);
* ``Enc_pk(v) + (0, W)``: the same with W added to the second component. It decrypts to
  v + W*s + noise: the decrypted slots are v_j + sigma_j(W s)/scale, a linear function of the
  secret key s. With W = K (an integer) or W = K * X^(N/2) (sigma_j(X^(N/2)) = i in every
  slot), slot j reads v_j + (K/scale) Re sigma_j(s) or v_j - (K/scale) Im sigma_j(s).

It never holds the victim's secret key: to turn a polynomial it computed (in SEAL's NTT form)
into slot values it decrypts (m, 0) with a throwaway key pair of its own (c1 = 0, so any key
gives m back).
"""

from __future__ import annotations

import numpy as np
import tenseal as ts
import tenseal.sealapi as sa

from ...core.errors import InvalidValueError, MismatchError
from ...oracles.ckks import rns, seeded, wire
from ...oracles.ckks._seal import Scratch, moduli_by_parms, pid_bytes


def _pid_list(pid: bytes) -> list[int]:
    return list(np.frombuffer(pid, dtype="<u8").astype(object))


class MaliciousServer:
    """context_message: the victim's public context message (what every hesig server receives)."""

    def __init__(self, context_message: bytes):
        header, parts = wire.unpack(context_message, "context", None)
        try:
            ctx = ts.context_from(bytes(parts[0]))
        except Exception:
            raise MismatchError("the context message does not hold a TenSEAL CKKS context") from None
        if ctx.is_private() or ctx.has_secret_key():
            raise InvalidValueError("the attacker must work from the public context only")
        self.context_id = header["context_id"]
        self._scratch = Scratch(self)
        seal = ctx.seal_context().data
        self._seal = seal
        self._moduli = moduli_by_parms(seal)
        self._encoder, self._eval = sa.CKKSEncoder(seal), sa.Evaluator(seal)
        self._encryptor = sa.Encryptor(seal, ctx.public_key().data)
        self.public_key = rns.parse(self._scratch.save(ctx.public_key().data))  # [2, key-level primes, N]
        self.first_parms = pid_bytes(seal.first_parms_id())
        self.poly_modulus_degree = seal.first_context_data().parms().poly_modulus_degree()
        self.slots = self.poly_modulus_degree // 2
        # A throwaway key pair with the same parameters (hence the same parms_ids): decodes (m, 0).
        own = sa.SEALContext(seal.key_context_data().parms(), True, sa.SEC_LEVEL_TYPE.TC128)
        self._own_seal = own
        self._own_decryptor = sa.Decryptor(own, sa.KeyGenerator(own).secret_key())
        self._own_encoder = sa.CKKSEncoder(own)
        self.result_parms, self.result_scale, self.num_outputs = None, None, None
        self.ciphertexts_built = 0

    # -- the protocol's result format -----------------------------------------------------

    def learn_format(self, honest_result: bytes) -> dict:
        """Read level, scale and number of outputs from an honest result this server computed."""
        header, parts = wire.unpack(honest_result, "result", self.context_id)
        ct = rns.parse(parts[0])
        self.result_parms, self.result_scale, self.num_outputs = ct.parms_id, ct.scale, len(parts)
        return {"session": header["session"], "num_outputs": len(parts), "scale": ct.scale,
                "result_primes": int(ct.data.shape[1])}

    def moduli(self, parms: bytes) -> np.ndarray:
        return self._moduli[parms]

    # -- crafting ----------------------------------------------------------------------------

    def plain_ntt(self, values, parms: bytes, scale: float) -> np.ndarray:
        """CKKS encoding of ``values`` (real or complex [slots], or a scalar) at ``parms`` and
        ``scale``, as its NTT-form RNS data uint64 [L, N] (the encoder rounds scale*sigma^-1(values))."""
        plain = sa.Plaintext()
        if np.ndim(values) == 0:
            self._encoder.encode(values.item() if hasattr(values, "item") else values, _pid_list(parms), float(scale), plain)
        else:
            vals = np.asarray(values)
            self._encoder.encode(vals.tolist(), _pid_list(parms), float(scale), plain)
        n = plain.coeff_count()
        data = np.fromiter((plain.data(i) for i in range(n)), dtype=np.uint64, count=n)
        return data.reshape(-1, self.poly_modulus_degree)

    def input_ciphertext(self, blob) -> rns.RnsCiphertext:
        """One of the victim's input ciphertexts as RNS data, whether it was sent in full, in
        SEAL's seeded form or in hesig's packed seeded form (SEAL's loader expands the public seed)."""
        try:
            return rns.parse(blob)
        except MismatchError:
            try:
                ct = self._scratch.load(sa.Ciphertext(), self._seal, seeded.to_seal(blob) if seeded.is_packed(blob) else blob)
            except MismatchError:
                raise
            except Exception:  # SEAL's own validation
                raise MismatchError("not a SEAL CKKS ciphertext of the victim's context") from None
            return rns.parse(self._scratch.save(ct))

    def encrypt(self, values: np.ndarray, parms: bytes, scale: float) -> rns.RnsCiphertext:
        """Enc_pk(values): values float64 [slots] (slot values, e.g. logit units)."""
        plain, ct = sa.Plaintext(), sa.Ciphertext()
        self._encoder.encode(np.asarray(values, dtype=np.float64).tolist(), _pid_list(parms), float(scale), plain)
        self._encryptor.encrypt(plain, ct)
        self.ciphertexts_built += 1
        return rns.parse(self._scratch.save(ct))

    def shifted(self, values: np.ndarray, w_ntt: np.ndarray) -> rns.RnsCiphertext:
        """Enc_pk(values) + (0, w): decrypts to values*scale + w*s (+ encryption noise), at the result level.

        w_ntt: uint64 [L, N], the NTT-form polynomial added to the second component."""
        ct = self.encrypt(values, self.result_parms, self.result_scale)
        q = self._moduli[self.result_parms][:, None]
        data = ct.data.copy()
        data[1] = (data[1] + w_ntt) % q
        return rns.RnsCiphertext(data, ct.parms_id, ct.scale, ct.correction_factor, ct.version)

    def result_message(self, ciphertexts: list[rns.RnsCiphertext], session: int, count: int) -> bytes:
        if len(ciphertexts) != self.num_outputs:
            raise InvalidValueError(f"a result carries {self.num_outputs} ciphertexts, got {len(ciphertexts)}")
        return wire.pack("result", self.context_id, [rns.serialize(c) for c in ciphertexts],
                         session=int(session), count=int(count))

    # -- using a recovered key ------------------------------------------------------------

    def decode_poly(self, m_ntt: np.ndarray, parms: bytes, scale: float) -> np.ndarray:
        """Slot values complex128 [slots] of the NTT-form polynomial m (uint64 [L, N]) at ``parms``:
        decrypts (m, 0) with this server's own key (c1 = 0, so the key does not matter)."""
        ct = rns.RnsCiphertext(np.stack([m_ntt, np.zeros_like(m_ntt)]), parms, float(scale), 1, self.public_key.version)
        seal_ct = self._scratch.load(sa.Ciphertext(), self._own_seal, rns.serialize(ct))
        plain = sa.Plaintext()
        self._own_decryptor.decrypt(seal_ct, plain)
        return np.asarray(self._own_encoder.decode_complex(plain))

    def decrypt_with(self, s_ntt: np.ndarray, ct: rns.RnsCiphertext) -> np.ndarray:
        """Decrypt a victim ciphertext with a recovered key s (NTT form, first-level primes [L0, N]):
        slot values complex128 [slots]."""
        levels = ct.data.shape[1]
        q = self._moduli[ct.parms_id][:, None]
        m = (ct.data[0] + ct.data[1] * s_ntt[:levels] % q) % q
        return self.decode_poly(m, ct.parms_id, ct.scale)

    def public_key_residual(self, s_ntt: np.ndarray) -> float:
        """max_j |sigma_j(p0 + p1 s)| at the first level: the public key's error if s is its key
        (a few thousand for SEAL's error of std 3.2), astronomically large otherwise."""
        levels = len(self._moduli[self.first_parms])
        q = self._moduli[self.first_parms][:, None]
        p0, p1 = self.public_key.data[0, :levels], self.public_key.data[1, :levels]
        e = (p0 + p1 * s_ntt[:levels] % q) % q
        slots = self.decode_poly(e, self.first_parms, 1.0)
        return float(np.abs(slots).max())
