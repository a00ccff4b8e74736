"""The encrypted oracle: TenSEAL CKKS client (secret key) and server (public context), bytes between.

Modules: params (parameters, security and depth), wire (messages), rns (SEAL ciphertexts as
numpy RNS arrays, exact modular linear algebra), polymodel (hecnn as a polynomial network),
client, server, oracle (the Oracle protocol over both), naive (TenSEAL tutorial baseline: one
query per ciphertext).
"""

from .client import LAYOUTS, CKKSClient
from .oracle import CKKSOracle
from .params import CKKSParameters
from .polymodel import POLY_CNN_DEPTH, PolyCNN, poly_cnn
from .server import CKKSServer

__all__ = ["CKKSClient", "CKKSOracle", "CKKSParameters", "CKKSServer", "LAYOUTS", "POLY_CNN_DEPTH", "PolyCNN", "poly_cnn"]
