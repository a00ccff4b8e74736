"""Small helpers around TenSEAL's SEAL bindings (``tenseal.sealapi``).

sealapi saves and loads only through file paths, so each party owns a private scratch directory
(in /dev/shm when there is one); bytes are what leaves a party.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import threading
import weakref
from pathlib import Path

import numpy as np


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


def moduli_by_parms(context) -> dict[bytes, np.ndarray]:
    """parms_id (32 bytes) -> the primes of that level, for every data level of ``context``."""
    out = {}
    data = context.first_context_data()
    while data is not None:
        out[pid_bytes(data.parms_id())] = np.array([m.value() for m in data.parms().coeff_modulus()], dtype=np.uint64)
        data = data.next_context_data()
    return out
