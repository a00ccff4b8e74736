"""The malicious server: CKKS key recovery through the client's one-bit replies.

malicious_server (crafted ciphertexts from the public context only; decrypting with a
recovered key), attack (label probe, bisection on sigma(s), reconstruction, public-key
self-check). Scoring against the victim's real key lives in hesig/jobs/key_recovery.py.
"""

from .attack import KeyRecoveryAttack, KeyRecoveryResult
from .malicious_server import MaliciousServer

__all__ = ["KeyRecoveryAttack", "KeyRecoveryResult", "MaliciousServer"]
