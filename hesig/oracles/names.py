"""Oracle and CKKS-layout names, importable without TenSEAL (the CLI builds its choices from them)."""

ORACLES = ("plaintext", "ckks")
CKKS_LAYOUTS = ("batched", "compact")
