"""CKKS parameters for the encrypted oracle, checked against the 128-bit security table.

Defaults (the TenSEAL MNIST tutorial's, which hecnn comes from): polynomial modulus degree
N = 8192 (4096 slots), coefficient modulus primes of [31, 26, 26, 26, 26, 26, 26, 31] bits
(218 bits: exactly the HomomorphicEncryption.org 128-bit bound for N = 8192), scale 2^26.

Depth: the first prime holds the result, the last is SEAL's special (key-switching) prime, so
``len(primes) - 2`` = 6 rescales are available. hecnn consumes 5 (conv1, x^2, fc1, x^2, fc2),
leaving the result at [31, 26] = 57 bits over a 26-bit scale: logits up to 2^30 in magnitude
decode correctly. The scale (26 bits) is the smallest the table allows with this depth; its
adequacy is measured, not assumed: benchmarks/ckks.py reports decision agreement with the
plaintext oracle on queries within +-5% of the decision boundary.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ...core.errors import InvalidValueError

# Largest total coefficient-modulus bit count for 128-bit classical security (SEAL's
# CoeffModulus::MaxBitCount, from the HomomorphicEncryption.org standard).
MAX_COEFF_BITS_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


@dataclass(frozen=True)
class CKKSParameters:
    """Validated at construction: an insecure or unusable set raises InvalidValueError."""

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (31, 26, 26, 26, 26, 26, 26, 31)
    scale_bits: int = 26

    def __post_init__(self):
        object.__setattr__(self, "coeff_mod_bit_sizes", tuple(int(b) for b in self.coeff_mod_bit_sizes))
        n, bits = int(self.poly_modulus_degree), self.coeff_mod_bit_sizes
        if n not in MAX_COEFF_BITS_128:
            raise InvalidValueError(f"poly modulus degree must be one of {sorted(MAX_COEFF_BITS_128)}, got {n}")
        if len(bits) < 3 or any(not 20 <= b <= 60 for b in bits):
            raise InvalidValueError(f"need >= 3 coefficient primes of 20..60 bits, got {list(bits)}")
        if sum(bits) > MAX_COEFF_BITS_128[n]:
            raise InvalidValueError(f"coefficient modulus of {sum(bits)} bits exceeds the 128-bit security bound "
                                    f"of {MAX_COEFF_BITS_128[n]} bits for N = {n}")
        if not 20 <= self.scale_bits <= min(bits[1:-1]):
            raise InvalidValueError(f"scale of 2^{self.scale_bits} must be 2^20 .. 2^{min(bits[1:-1])} "
                                    "(no larger than the rescaling primes)")

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def depth(self) -> int:
        """Rescales available: all primes but the result prime and the special prime."""
        return len(self.coeff_mod_bit_sizes) - 2

    @property
    def scale(self) -> float:
        return float(2 ** self.scale_bits)

    def describe(self, required_depth: int | None = None) -> dict:
        out = {**asdict(self), "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
               "total_coeff_bits": sum(self.coeff_mod_bit_sizes), "slots": self.slots,
               "depth_available": self.depth, "security_bits": 128,
               "max_coeff_bits_for_128_bit_security": MAX_COEFF_BITS_128[self.poly_modulus_degree]}
        if required_depth is not None:
            out["depth_required"] = required_depth
            out["result_bits"] = sum(self.coeff_mod_bit_sizes[:1 + self.depth - required_depth])
        return out

    def check_depth(self, required: int, what: str) -> None:
        if required > self.depth:
            raise InvalidValueError(f"{what} needs {required} multiplicative levels but the CKKS parameters "
                                    f"provide {self.depth} (scale out of bounds): use more coefficient primes")
