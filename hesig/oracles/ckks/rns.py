"""SEAL ciphertexts as numpy RNS arrays, and exact modular linear algebra on them.

Why: hecnn's fully connected layer is 64 x 256 plaintext-scalar products per evaluation. In SEAL
each product is a full ciphertext pass (~0.4 ms at N = 8192), 16,384 of them per evaluation.
CKKS ciphertexts are kept in NTT form, where multiplying by an integer constant and adding are
coefficient-wise operations modulo each prime q_l. So a plaintext-weight linear layer over F
ciphertexts is one integer matrix product per prime, done here exactly with float64 BLAS by
splitting the weights into chunks small enough that every partial sum stays below 2^53.

A ciphertext crosses between SEAL and numpy through SEAL's own serialization (the bytes a
network would carry): ``parse`` reads SEAL's format (zstd, zlib or uncompressed), ``serialize``
writes it uncompressed, and SEAL validates whatever it loads.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from ...core.errors import MismatchError

SEAL_MAGIC = 0xA15E
_HEADER = struct.Struct("<HBBBBHQ")  # magic, header size, version major, minor, compression, reserved, total size
_MEMBERS = struct.Struct("<32sBQQQdQ")  # parms_id, is_ntt_form, size, N, coeff modulus count, scale, correction factor
COMPR_NONE, COMPR_ZLIB, COMPR_ZSTD = 0, 1, 2


@dataclass
class RnsCiphertext:
    """One CKKS ciphertext: ``data`` uint64 [size, L, N] (NTT form), its parms_id, scale, version."""

    data: np.ndarray
    parms_id: bytes
    scale: float
    correction_factor: int = 1
    version: tuple[int, int] = (4, 1)


def _decompress(mode: int, body: bytes, expected: int) -> bytes:
    if mode == COMPR_NONE:
        return body
    if mode == COMPR_ZLIB:
        return zlib.decompress(body)
    if mode == COMPR_ZSTD:
        import zstandard

        return zstandard.ZstdDecompressor().decompress(body, max_output_size=max(expected, 1 << 20) * 8)
    raise MismatchError(f"unknown SEAL compression mode {mode}")


def parse(blob: bytes) -> RnsCiphertext:
    """Read a SEAL-serialized ciphertext. Raises MismatchError on anything that is not one."""
    try:
        magic, hsize, major, minor, mode, _, total = _HEADER.unpack_from(blob, 0)
        if magic != SEAL_MAGIC or hsize != _HEADER.size or total != len(blob):
            raise ValueError("bad header")
        body = _decompress(mode, blob[_HEADER.size:], total * 4)
        pid, ntt, size, n, count, scale, corr = _MEMBERS.unpack_from(body, 0)
        off = _MEMBERS.size
        imagic, ihsize, _, _, imode, _, itotal = _HEADER.unpack_from(body, off)
        if imagic != SEAL_MAGIC or imode != COMPR_NONE:
            raise ValueError("bad inner header")
        (length,) = struct.unpack_from("<Q", body, off + _HEADER.size)
        start = off + _HEADER.size + 8
        if length != size * n * count or len(body) < start + 8 * length or not ntt:
            raise ValueError("bad shape")
        data = np.frombuffer(body, dtype=np.uint64, count=length, offset=start).reshape(size, count, n)
    except (ValueError, struct.error, zlib.error) as exc:
        raise MismatchError(f"not a SEAL CKKS ciphertext ({exc})") from None
    except Exception as exc:  # zstandard.ZstdError and the like
        raise MismatchError(f"not a SEAL CKKS ciphertext ({type(exc).__name__})") from None
    return RnsCiphertext(data, pid, scale, corr, (major, minor))


def seal_version(blob: bytes) -> tuple[int, int]:
    """The SEAL version (major, minor) in the header of any SEAL-serialized object."""
    try:
        magic, _, major, minor, _, _, _ = _HEADER.unpack_from(blob, 0)
        if magic != SEAL_MAGIC:
            raise ValueError
    except (ValueError, struct.error):
        raise MismatchError("not a SEAL-serialized object") from None
    return int(major), int(minor)


def serialize(ct: RnsCiphertext) -> bytes:
    """SEAL's serialization of ``ct``, uncompressed (SEAL's loader validates it)."""
    size, count, n = ct.data.shape
    payload = np.ascontiguousarray(ct.data, dtype=np.uint64).tobytes()
    inner_total = _HEADER.size + 8 + len(payload)
    members = _MEMBERS.pack(ct.parms_id, 1, size, n, count, float(ct.scale), int(ct.correction_factor))
    inner = _HEADER.pack(SEAL_MAGIC, _HEADER.size, *ct.version, COMPR_NONE, 0, inner_total) + struct.pack("<Q", size * count * n)
    total = _HEADER.size + len(members) + len(inner) + len(payload)
    return b"".join([_HEADER.pack(SEAL_MAGIC, _HEADER.size, *ct.version, COMPR_NONE, 0, total), members, inner, payload])


def check_reduced(data: np.ndarray, moduli: np.ndarray) -> bool:
    """True if every coefficient of ``data`` [..., L, N] is below its prime (SEAL's validity check)."""
    return bool((data < moduli[:, None]).all())


def lincomb(weights: np.ndarray, x, moduli: np.ndarray, into: np.ndarray | None = None) -> np.ndarray:
    """Exact ``sum_f weights[o, f] * x[f]`` modulo each prime.

    weights: int64 [O, F] (signed: plaintext weights already multiplied by their scale and rounded).
    x: uint64 (or uint32) [F, S, L, N], or a list of F such [S, L, N] arrays (no stacked copy),
    coefficients below ``moduli`` [L].
    Returns uint64 [O, S, L, N]; with ``into`` (uint64 [O, S, L, N], reduced), adds the result
    to it modulo each prime, in place, and returns it.

    Per prime q (bits(q) = b), in float64, where every integer below 2^53 is exact:
    the weights are taken mod q and centred, |w| <= q/2, and written in base 2^c,
    w = sum_k d_k 2^{kc} with c = 52 - b - ceil(log2 F) (low digits in [0, 2^c), the top one
    signed), so each product-sum P_k = d_k @ x is an exact integer, |P_k| < 2^52. Horner's rule
    from the top digit, acc = (acc 2^c + P_k) mod q, stays below 2^53 since acc < q. The
    reduction is p - floor(p / q) q, off by at most one q (the quotient's rounding error is below
    2^-23), corrected by one comparison each way, in place with scratch buffers reused across
    primes (the gain over reducing each digit's product as uint64: benchmarks/ckks_eval_ab.json).
    """
    o_count, f_count = weights.shape
    size, levels, n = x[0].shape
    if len(x) != f_count:
        raise ValueError(f"{f_count} weights per output for {len(x)} inputs")
    out = np.empty((o_count, size, levels, n), dtype=np.uint64) if into is None else into
    if into is not None and (into.shape != (o_count, size, levels, n) or into.dtype != np.uint64):
        raise ValueError(f"into has shape {into.shape} ({into.dtype}), expected {(o_count, size, levels, n)} (uint64)")
    log_f = max(1, math.ceil(math.log2(max(f_count, 2))))
    xl = np.empty((f_count, size * n))
    quotient = np.empty((o_count, size * n))
    below = np.empty((o_count, size * n), dtype=bool)
    for level in range(levels):
        q = int(moduli[level])
        qf = float(q)
        chunk = 52 - q.bit_length() - log_f
        if chunk < 1:
            raise ValueError(f"{f_count} terms of a {q.bit_length()}-bit prime cannot be summed exactly in float64")
        if isinstance(x, np.ndarray):
            xl.reshape(f_count, size, n)[...] = x[:, :, level, :]
        else:
            for f, one in enumerate(x):
                xl[f].reshape(size, n)[...] = one[:, level, :]
        rest = np.mod(weights, q).astype(np.int64)
        rest[rest > q // 2] -= q
        digits = []
        while rest.min() < -(1 << chunk) or rest.max() >= 1 << chunk:
            low = rest & ((1 << chunk) - 1)
            digits.append(low)
            rest = (rest - low) >> chunk
        digits.append(rest)
        acc = None
        for digit in reversed(digits):
            prod = digit.astype(np.float64) @ xl
            if acc is not None:
                np.multiply(acc, float(1 << chunk), out=acc)
                np.add(prod, acc, out=prod)
            _reduce(prod, qf, quotient, below)
            acc = prod
        if into is not None:
            np.add(acc, into[:, :, level, :].reshape(o_count, size * n), out=acc)
            np.greater_equal(acc, qf, out=below)
            np.subtract(acc, qf, out=acc, where=below)
        out[:, :, level, :] = acc.reshape(o_count, size, n)
    return out


def _reduce(p: np.ndarray, q: float, quotient: np.ndarray, flags: np.ndarray) -> None:
    """In place: p mod q for float64 integers |p| < 2^53 - q (result in [0, q))."""
    np.multiply(p, 1.0 / q, out=quotient)
    np.floor(quotient, out=quotient)
    np.multiply(quotient, q, out=quotient)
    np.subtract(p, quotient, out=p)  # in [-q, 2q): the rounded quotient is off by at most one
    np.less(p, 0.0, out=flags)
    np.add(p, q, out=p, where=flags)
    np.greater_equal(p, q, out=flags)
    np.subtract(p, q, out=p, where=flags)


def add_constant(data: np.ndarray, values: np.ndarray, scale: float, moduli: np.ndarray) -> None:
    """In place: add the real constants ``values`` [O] (one per ciphertext of ``data`` [O, S, L, N]).

    A real constant c encodes in CKKS as the constant polynomial round(c * scale), which is the
    same constant at every NTT coefficient; it is added to the first polynomial.
    """
    for o, value in enumerate(values):
        k = int(round(float(value) * scale))
        for level, q in enumerate(moduli):
            data[o, 0, level, :] = (data[o, 0, level, :] + np.uint64(k % int(q))) % q
