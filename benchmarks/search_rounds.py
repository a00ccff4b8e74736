"""Oracle rounds per fingerprint -- CKKS evaluations -- for coarse-grid choices; prints JSON.

A CKKS fingerprint costs one homomorphic evaluation per search round (the client's one input
is one row; a round's queries share the evaluation's slots), so rounds, not queries, set its
time. This counts them with the plaintext oracle at the CKKS slot count (``--slots``), which
answers the same bits up to CKKS noise (benchmarks/ckks_noise.json), for the paper's linear
grid (G = 8) and a geometric grid (G = 40, ``eps_min`` = ε_max·2^-16), ``points_per_round=auto``,
at each ``--rtol``. Deterministic (no timing): it may run beside other jobs.

    python benchmarks/search_rounds.py --model runs/mnist-hecnn/model \
        --directions runs/mnist-hecnn/directions.safetensors --out benchmarks/search_rounds.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

from hesig.core.io import atomic_write_json
from hesig.data import load_dataset
from hesig.models import load_model
from hesig.oracles import PlaintextOracle
from hesig.signature.directions import Directions
from hesig.signature.search import BoundarySearch

GRIDS = {"linear G8": {"coarse_points": 8}, "geometric G40": {"coarse_points": 40, "grid": "geometric"}}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--directions", required=True)
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--images", type=int, default=100, help="first N test images")
    ap.add_argument("--slots", type=int, default=4095, help="queries one evaluation answers (CKKS N 8192: 4095)")
    ap.add_argument("--rtol", type=float, nargs="+", default=[1e-2, 1e-3])
    ap.add_argument("--eps-max", type=float, default=60.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    target, dirs = load_model(args.model), Directions.load(args.directions)
    test = load_dataset(args.dataset, "test")
    images = test.images[:args.images]
    rows = []
    for rtol in args.rtol:
        for name, grid in GRIDS.items():
            search = BoundarySearch(args.eps_max, points_per_round="auto", rtol=rtol, **grid)
            rounds, queries = [], []
            for i in range(len(images)):
                res = search.run(PlaintextOracle(target.model, images[i:i + 1], device="cpu", batch_size=args.slots),
                                 dirs.vectors)
                rounds.append(res.rounds)
                queries.append(res.total_queries)
            rows.append({"grid": name, "search": search.params(), "rtol": rtol,
                         "evaluations_mean": statistics.mean(rounds), "evaluations_max": max(rounds),
                         "evaluations_histogram": {str(k): rounds.count(k) for k in sorted(set(rounds))},
                         "queries_per_fingerprint_mean": statistics.mean(queries)})
    result = {"benchmark": "search_rounds", "model_hash": target.hash, "arch": target.arch,
              "directions_hash": dirs.hash, "directions": dirs.count, "dataset": test.name,
              "test_split_hash": test.split_hash, "images": len(images), "slots": args.slots, "rows": rows,
              "command": "python benchmarks/search_rounds.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    print(json.dumps(result, indent=2))
    if args.out:
        atomic_write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
