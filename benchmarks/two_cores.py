"""How much work two busy processes get done on this machine, against one. Prints JSON.

    python benchmarks/two_cores.py --out benchmarks/two_cores.json

Why: the split CKKS path (``--ckks-processes 2``) gains far less than 2x. This separates the
machine from the code: the same fixed piece of work -- the CKKS server's own kind (SEAL
relinearizations and rescales at N 8192, and an exact modular product in numpy, one BLAS thread)
-- is timed in one process alone, then in two processes started together. ``throughput_2_over_1``
is (2 pieces / wall time of the pair) / (1 piece / time alone): 2.0 on two free cores, 1.0 if the
two processes only take turns.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PIECE = r"""
import sys, time
import numpy as np
import tenseal as ts
import tenseal.sealapi as sa
from hesig.oracles.ckks import rns
kind, repeats = sys.argv[1], int(sys.argv[2])
ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[31, 26, 26, 26, 26, 26, 26, 31])
ctx.global_scale = 2 ** 26
ctx.generate_relin_keys()
seal = ctx.seal_context().data
ev, enc = sa.Evaluator(seal), sa.CKKSEncoder(seal)
encryptor = sa.Encryptor(seal, ctx.public_key().data)
plain, ct, sq = sa.Plaintext(), sa.Ciphertext(), sa.Ciphertext()
enc.encode(0.5, 2 ** 26, plain)
encryptor.encrypt(plain, ct)
relin = ctx.relin_keys().data  # once: TenSEAL hands out a copy of the keys on every call
rng = np.random.default_rng(0)
moduli = np.array([2147352577, 67043329, 67239937], dtype=np.uint64)
x = np.stack([rng.integers(0, int(q), size=(128, 3, 8192), dtype=np.uint64) for q in moduli], axis=2).astype(np.uint32)
w = rng.integers(-(1 << 25), 1 << 25, size=(64, 128))
sys.stdout.write("ready\n"); sys.stdout.flush(); sys.stdin.readline()
t0 = time.perf_counter()
for _ in range(repeats):
    if kind == "seal":
        ev.square(ct, sq); ev.relinearize_inplace(sq, relin); ev.rescale_to_next_inplace(sq)
    else:
        rns.lincomb(w, x, moduli)
print(time.perf_counter() - t0)
"""


def run(kind: str, repeats: int, copies: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", PIECE, kind, str(repeats)], env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(copies)]
    for p in procs:  # every copy has built its keys and data before any starts the clock
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    seconds = [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a {kind} piece failed")
    return seconds


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=None, help="work per piece (default: 150 SEAL rounds, 12 products)")
    ap.add_argument("--rounds", type=int, default=3, help="alternations of alone / pair")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    out: dict = {"cpus": os.cpu_count(), "rounds": args.rounds}
    for kind, default in (("seal", 150), ("numpy", 12)):
        repeats = args.repeats or default
        alone, pair = [], []
        for _ in range(args.rounds):
            alone.append(run(kind, repeats, 1)[0])
            pair.append(max(run(kind, repeats, 2)))
        a, p = sorted(alone)[len(alone) // 2], sorted(pair)[len(pair) // 2]
        out[kind] = {"repeats": repeats, "seconds_alone": alone, "seconds_pair_slowest": pair,
                     "throughput_2_over_1": round(2 * a / p, 3)}
        print(json.dumps({kind: out[kind]["throughput_2_over_1"]}), file=sys.stderr)
    if args.out:
        sys.path.insert(0, str(REPO))
        from hesig.core.io import atomic_write_json
        atomic_write_json(args.out, out)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
