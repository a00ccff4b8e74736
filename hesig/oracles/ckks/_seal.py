"""Small helpers around TenSEAL's SEAL bindings (``tenseal.sealapi``).

sealapi saves and loads only through file paths, so each party owns a private scratch directory
(in /dev/shm when there is one); bytes are what leaves a party.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import struct
import sys
import tempfile
import threading
import weakref
from pathlib import Path

import numpy as np
from tenseal import __version__ as ts_version


#: glibc, loaded on first use by trim_heap (False where there is none)
_libc = None


def trim_heap() -> None:
    """Give the C heap's free pages back to the operating system (glibc's ``malloc_trim``; a no-op
    elsewhere). A session's setup frees some 400 MB of quarter-megabyte buffers (serialized
    ciphertexts, numpy temporaries) that glibc would otherwise keep mapped, and they would sit
    under every later evaluation's peak."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else False
            _libc.malloc_trim.argtypes, _libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        except (OSError, AttributeError):
            _libc = False  # not glibc
    if _libc:
        _libc.malloc_trim(0)



def galois_elements(steps: list[int], poly_modulus_degree: int) -> list[int]:
    """SEAL's Galois element for a left rotation by ``step`` slots: 3^step mod 2N."""
    return [pow(3, int(s), 2 * poly_modulus_degree) for s in steps]


def pid_bytes(parms_id) -> bytes:
    return struct.pack("<4Q", *[int(v) for v in parms_id])


class Scratch:
    """A private scratch directory for sealapi's path-based save/load; removed with its owner."""

    def __init__(self, owner):
        base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self.dir = Path(tempfile.mkdtemp(prefix="hesig-ckks-", dir=base))
        os.chmod(self.dir, 0o700)
        self._path = str(self.dir / "obj")
        weakref.finalize(owner, shutil.rmtree, str(self.dir), True)

    def _file(self) -> str:
        # one file per thread: a victim encrypts its next image in a background thread while its
        # main thread decrypts results with the same client
        return f"{self._path}-{threading.get_ident()}"

    def save(self, obj) -> bytes:
        path = self._file()
        obj.save(path)
        with open(path, "rb") as fh:
            return fh.read()

    def load(self, obj, context, blob: bytes):
        path = self._file()
        with open(path, "wb") as fh:
            fh.write(blob)
        obj.load(context, path)
        return obj


#: False makes :func:`ciphertext_data` always take SEAL's serialization (the old, slower path,
#: kept so benchmarks/ckks.py can measure before and after in one run).
ZERO_COPY = True
#: False makes the client save seeded ciphertexts through SEAL's zstd serialization instead of the
#: packed form (seeded.py): the previous client path, kept as a benchmark baseline.
PACKED_SEEDS = True
# The in-place read is tried only where its layout assumptions were checked: TenSEAL 0.3 (SEAL 4)
# on a 64-bit, non-debug CPython (whose PyObject header is 16 bytes). Elsewhere: serialization.
_LAYOUT_OK: bool | None = (None if ts_version.startswith("0.3.") and sys.implementation.name == "cpython"
                           and not hasattr(sys, "gettotalrefcount") and struct.calcsize("P") == 8 else False)

# seal::Ciphertext as TenSEAL 0.3 (SEAL 4) lays it out, in 8-byte words: parms_id [0:4],
# is_ntt_form [4], size [5], poly_modulus_degree [6], coeff_modulus_size [7], scale [8],
# correction_factor [9], data_ = DynArray {pool [10:12], capacity [12], size [13], pointer [14]}.
_LAYOUT_WORDS = 15


def object_address(obj) -> int:
    # pybind11's simple instance layout: PyObject_HEAD (16 bytes), then the C++ object's pointer
    return ctypes.c_void_p.from_address(id(obj) + 16).value or 0


def layout_readable() -> bool:
    """Whether in-place reads may be tried (see ciphertext_data)."""
    return ZERO_COPY and _LAYOUT_OK is not False


def _buffer(ct) -> np.ndarray | None:
    """SEAL's coefficient buffer of ``ct`` as a numpy view, uint64 [size, L, N], after checking the
    object's header words against sealapi's own accessors (size, degree, primes, buffer length,
    scale); None (and the fast path off for good) on any mismatch or where it is not tried."""
    global _LAYOUT_OK
    if not ZERO_COPY or _LAYOUT_OK is False:
        return None
    try:
        address = object_address(ct)
        if not address:
            raise ValueError
        words = (ctypes.c_uint64 * _LAYOUT_WORDS).from_address(address)
        size, n, levels = ct.size(), ct.poly_modulus_degree(), ct.coeff_modulus_size()
        count = size * n * levels
        scale = struct.unpack("<d", struct.pack("<Q", words[8]))[0]
        if (words[5], words[6], words[7], words[13]) != (size, n, levels, count) or scale != ct.scale or not words[14]:
            raise ValueError
        return np.ctypeslib.as_array((ctypes.c_uint64 * count).from_address(words[14])).reshape(size, levels, n)
    except (ValueError, OverflowError, TypeError, IndexError):
        _LAYOUT_OK = False
        return None


def _agrees(ct, data: np.ndarray) -> bool:
    """Three coefficients of ``data`` [size, L, N] against sealapi's accessors of ``ct``."""
    count = data.size
    return bool(data[0, 0, 0] == ct.data(0) and (data.shape[0] < 2 or data[1, 0, 0] == ct.data(1))
                and data[-1, -1, -1] == ct.dyn_array().at(count - 1))


def ciphertext_data(ct) -> np.ndarray | None:
    """A copy of SEAL's coefficient buffer of ``ct``: uint64 [size, L, N], or None.

    Why: sealapi exposes a ciphertext's coefficients only through ``save``, which always
    zstd-compresses (about 4 ms per ciphertext at N = 8192, most of the server's evaluation
    time). This reads the buffer in place instead. The layout is an assumption about the
    compiled library, so every call first checks the object's header words against sealapi's
    own accessors (:func:`_buffer`) and, after copying, three coefficients against ``data(0)``,
    ``data(1)`` and the buffer's last element; on any mismatch it returns None and the caller
    serializes as before (and the fast path stays off).
    """
    global _LAYOUT_OK
    view = _buffer(ct)
    if view is None:
        return None
    data = view.copy()
    if not _agrees(ct, data):
        _LAYOUT_OK = False
        return None
    _LAYOUT_OK = True
    return data


def write_ciphertext_data(ct, data: np.ndarray) -> bool:
    """Overwrite the coefficients of ``ct`` in place with ``data`` (uint64 or uint32 [size, L, N]
    of ``ct``'s shape; the caller keeps parms id, scale and NTT form, which it must match).
    False, with ``ct`` untouched, where the in-place layout is not confirmed (:func:`ciphertext_data`
    has not succeeded yet, or the header check fails) or the shapes differ; the caller then
    loads the ciphertext through SEAL's serialization instead."""
    global _LAYOUT_OK
    if _LAYOUT_OK is not True:  # write only into a layout a read has confirmed
        return False
    view = _buffer(ct)
    if view is None or view.shape != data.shape:
        return False
    np.copyto(view, data, casting="safe")
    if not _agrees(ct, view):
        _LAYOUT_OK = False
        return False
    return True


def moduli_by_parms(context) -> dict[bytes, np.ndarray]:
    """parms_id (32 bytes) -> the primes of that level, for every data level of ``context``."""
    out = {}
    data = context.first_context_data()
    while data is not None:
        out[pid_bytes(data.parms_id())] = np.array([m.value() for m in data.parms().coeff_modulus()], dtype=np.uint64)
        data = data.next_context_data()
    return out
