"""Seeded symmetric ciphertexts on the wire without zstd: c0 as uint32 words, c1 as SEAL's seed.

Why: a seeded CKKS ciphertext (SEAL's ``encrypt_symmetric``) is c0 plus the 81-byte seed of its
uniform c1. sealapi saves it only through SEAL's zstd serialization: an encryption took 5.7 ms with
it and 3.3 ms with this form at N 8192 (benchmarks/ckks.json, floors), and zstd gains little on
coefficients that are uniform modulo primes below 2^32: it keeps about 4.1 bytes of each 8-byte
word. This format stores each coefficient in 4 bytes (every prime is below 2^32), so it is smaller
than SEAL's zstd form and costs a copy.

Layout (little endian):
    b"HSC1" | SEAL version major, minor (2 x u8) | 2 zero bytes
    | SEAL's ciphertext members (parms_id 32 B, is_ntt_form u8, size u64 = 2, N u64, L u64,
      scale f64, correction factor u64)
    | seed length u32 | c0: u32 [L, N] | the seed: SEAL's UniformRandomGeneratorInfo, as SEAL saves it

The receiver rebuilds SEAL's own uncompressed serialization of the same ciphertext
(:func:`to_seal`) and lets SEAL load it: SEAL validates the parameters and the coefficients
against its context and expands the seed with its own PRNG. Nothing here trusts a length it has not
checked against the blob's size.
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass

import numpy as np

from ...core.errors import MismatchError
from . import _seal, rns
from ._seal import _LAYOUT_WORDS, object_address

MAGIC = b"HSC1"
_PREFIX = struct.Struct("<4sBBH")
_SEED_LEN = struct.Struct("<I")
_SEED_MARKER = 0xFFFFFFFFFFFFFFFF  # SEAL writes it as c1's first word when c1 is a seed
_MAX_SEED_BYTES = 4096  # SEAL's seed record is 81 bytes


@dataclass(frozen=True)
class SeededShape:
    """What every fresh seeded ciphertext of one context must look like: its first level's
    parms_id (32 bytes), N, number of primes, and the SEAL version (major, minor)."""

    parms_id: bytes
    n: int
    levels: int
    version: tuple[int, int]

    @classmethod
    def of(cls, seal_context, public_key, scratch) -> "SeededShape":
        """From a SEALContext; the version is read from the header of ``public_key`` saved by SEAL."""
        data = seal_context.first_context_data()
        return cls(_seal.pid_bytes(data.parms_id()), int(data.parms().poly_modulus_degree()),
                   len(data.parms().coeff_modulus()), rns.seal_version(scratch.save(public_key)))


def is_packed(blob) -> bool:
    return bytes(blob[:4]) == MAGIC


def pack(serializable, shape: SeededShape, scale: float) -> bytes | None:
    """The wire form of one seeded ciphertext, read in place from sealapi's
    ``Serializable<Ciphertext>`` (the object ``Encryptor.encrypt_symmetric(plain)`` returns), or
    None where its memory does not look exactly as expected (the caller then saves it through
    SEAL). Every header word is checked against what the caller knows the ciphertext must be:
    parms_id, size 2, N, L, buffer length, scale, and the seed marker SEAL writes into c1."""
    if not (_seal.PACKED_SEEDS and _seal.layout_readable()):
        return None
    parms_id, n, levels = shape.parms_id, shape.n, shape.levels
    try:
        address = object_address(serializable)
        if not address:
            return None
        words = (ctypes.c_uint64 * _LAYOUT_WORDS).from_address(address)  # Serializable<T> holds only T
        count = 2 * n * levels
        if (struct.pack("<4Q", *words[0:4]) != parms_id or (words[5], words[6], words[7], words[13]) != (2, n, levels, count)
                or struct.unpack("<d", struct.pack("<Q", words[8]))[0] != scale or not words[14]):
            return None
        buffer = np.ctypeslib.as_array((ctypes.c_uint64 * count).from_address(words[14]))
        if int(buffer[n * levels]) != _SEED_MARKER:
            return None
        seed_words = buffer[n * levels + 1:]
        magic, hsize, _, _, mode, _, seed_bytes = rns._HEADER.unpack_from(seed_words[:2].tobytes(), 0)
        if magic != rns.SEAL_MAGIC or hsize != rns._HEADER.size or mode != rns.COMPR_NONE \
                or not rns._HEADER.size < seed_bytes <= min(_MAX_SEED_BYTES, 8 * len(seed_words)):
            return None
        seed = seed_words.tobytes()[:seed_bytes]
        c0 = buffer[:n * levels]
        if int(c0.max()) >= 1 << 32:
            return None
        members = rns._MEMBERS.pack(parms_id, 1, 2, n, levels, float(scale), int(words[9]))
        return b"".join([_PREFIX.pack(MAGIC, *shape.version, 0), members, _SEED_LEN.pack(seed_bytes),
                         c0.astype("<u4").tobytes(), seed])
    except (ValueError, OverflowError, TypeError, struct.error):
        return None


def to_seal(blob) -> bytes:
    """SEAL's uncompressed serialization of the seeded ciphertext in ``blob`` (this module's form),
    for SEAL's loader. Raises MismatchError, in one line, on anything malformed."""
    try:
        magic, major, minor, reserved = _PREFIX.unpack_from(blob, 0)
        pid, ntt, size, n, levels, scale, corr = rns._MEMBERS.unpack_from(blob, _PREFIX.size)
        (seed_bytes,) = _SEED_LEN.unpack_from(blob, _PREFIX.size + rns._MEMBERS.size)
    except struct.error:
        raise MismatchError("not a SEAL CKKS ciphertext (packed seeded form: truncated header)") from None
    if magic != MAGIC or reserved != 0 or ntt != 1 or size != 2:
        raise MismatchError("not a SEAL CKKS ciphertext (packed seeded form: bad header)")
    if not (1 <= n <= 1 << 17 and 1 <= levels <= 64 and rns._HEADER.size < seed_bytes <= _MAX_SEED_BYTES):
        raise MismatchError("not a SEAL CKKS ciphertext (packed seeded form: out-of-range sizes)")
    start = _PREFIX.size + rns._MEMBERS.size + _SEED_LEN.size
    words = n * levels
    if len(blob) != start + 4 * words + seed_bytes:
        raise MismatchError(f"not a SEAL CKKS ciphertext (packed seeded form: {len(blob)} bytes, the header says {start + 4 * words + seed_bytes})")
    c0 = np.frombuffer(blob, dtype="<u4", count=words, offset=start).astype(np.uint64)
    seed = bytes(blob[start + 4 * words:])
    members = rns._MEMBERS.pack(pid, 1, 2, n, levels, scale, corr)
    inner_total = rns._HEADER.size + 8 + 8 * words
    inner = rns._HEADER.pack(rns.SEAL_MAGIC, rns._HEADER.size, major, minor, rns.COMPR_NONE, 0, inner_total) + struct.pack("<Q", words)
    total = rns._HEADER.size + len(members) + len(inner) + 8 * words + len(seed)
    outer = rns._HEADER.pack(rns.SEAL_MAGIC, rns._HEADER.size, major, minor, rns.COMPR_NONE, 0, total)
    return b"".join([outer, members, inner, c0.tobytes(), seed])


__all__ = ["MAGIC", "SeededShape", "is_packed", "pack", "to_seal"]
