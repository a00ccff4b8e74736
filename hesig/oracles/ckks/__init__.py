"""The encrypted oracle: TenSEAL CKKS client (secret key) and server (public context), bytes between.

Modules: params (parameters, security and depth), wire (messages), rns (SEAL ciphertexts as
numpy RNS arrays, exact modular linear algebra), polymodel (hecnn as a polynomial network),
client (the victim: secret key), server (the model owner: public context), channel (the oracle
as the server runs it, over any victim channel), oracle (both roles in one process), naive
(TenSEAL tutorial baseline: one query per ciphertext).

Names are imported lazily, so importing a server-side module (``channel``, ``server``) never
imports the client: a server process holds no code path to a secret key.
"""

from __future__ import annotations

import importlib

_WHERE = {"CKKSClient": "client", "LAYOUTS": "client", "CKKSOracle": "oracle", "CKKSParameters": "params",
          "CKKSServer": "server", "POLY_CNN_DEPTH": "polymodel", "PolyCNN": "polymodel", "poly_cnn": "polymodel",
          "EncryptedOracle": "channel"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
