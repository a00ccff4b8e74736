"""Boundary-search engine benchmark; prints one JSON object.

Measured in one run, on the same model and batch size:

* ``raw_forward_qps``: images/s of the bare batched forward pass (channels-last, inference mode)
  on prebuilt batches -- the ceiling for any oracle-driven search.
* ``engine_qps``: oracle queries/s of a full ``BoundarySearch.run`` through ``PlaintextOracle``
  (perturbation building, gathering, argmax and bookkeeping included).
* ``engine_to_raw``: their ratio (target >= 0.8).
* bisection cost: mean queries per uncensored pair at absolute tolerance ``tol`` against
  log2(ε_max / tol) (target <= 1.1x), for several coarse-pass sizes G.

Usage::

    python benchmarks/search.py [--model runs/mnist-lenet5/model] [--rows 200] [--directions 100]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time

import torch

from hesig.data import load_dataset
from hesig.directions import make_directions
from hesig.models import build_model, load_model
from hesig.oracles import PlaintextOracle
from hesig.search import BoundarySearch


def raw_forward_qps(model, images, batch_size, seconds):
    """Images/s of model(batch) on prebuilt channels-last batches of ``batch_size``."""
    model = model.eval().to(memory_format=torch.channels_last)
    reps = math.ceil(batch_size / len(images))
    batch = images.repeat(reps, 1, 1, 1)[:batch_size].contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        model(batch).argmax(1)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model(batch).argmax(1)
            n += batch_size
    return n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint dir (default: freshly initialised lenet5, seed 0)")
    ap.add_argument("--arch", default="lenet5")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--directions", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--eps-max", type=float, default=30.0)
    ap.add_argument("--bisection-levels", type=int, default=12, help="L: tol = eps_max / 2^L")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    test = load_dataset(args.dataset, "test", args.data_root)
    if args.model:
        loaded = load_model(args.model)
        model, arch, model_hash = loaded.model, loaded.arch, loaded.hash
    else:
        model, arch, model_hash = build_model(args.arch, test.shape, test.num_classes), args.arch, "untrained"
    images = test.images[: args.rows]
    dirs = make_directions("random", args.directions, test.shape, seed=args.seed).vectors

    raw = raw_forward_qps(model, images, args.batch_size, args.seconds)

    # Engine throughput with the fingerprinting defaults (G = 8 coarse points, rtol 1e-2, bisection).
    search = BoundarySearch(args.eps_max, coarse_points=8, rtol=1e-2)
    oracle = PlaintextOracle(model, images, device="cpu", batch_size=args.batch_size)
    t0 = time.perf_counter()
    res = search.run(oracle, dirs)
    engine_seconds = time.perf_counter() - t0
    engine = res.total_queries / engine_seconds

    # Bisection cost against the information-theoretic log2(eps_max / tol).
    levels = args.bisection_levels
    tol = args.eps_max / 2 ** levels
    bisection = []
    sub = images[: max(10, args.rows // 10)]
    for g in (1, 2, 8):
        r = BoundarySearch(args.eps_max, coarse_points=g, atol=tol, rtol=0.0, points_per_round=1).run(
            PlaintextOracle(model, sub, device="cpu", batch_size=args.batch_size), dirs)
        q = r.queries[~r.censored].double()
        bisection.append({"coarse_points": g, "queries_per_pair_mean": float(q.mean()) if q.numel() else None,
                          "log2_eps_max_over_tol": levels,
                          "ratio": float(q.mean()) / levels if q.numel() else None,
                          "censored_fraction": float(r.censored.float().mean())})

    print(json.dumps({
        "benchmark": "search", "model": arch, "model_hash": model_hash, "dataset": test.name,
        "rows": len(images), "directions": args.directions, "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.machine(),
        "raw_forward_qps": round(raw), "engine_qps": round(engine), "engine_to_raw": round(engine / raw, 3),
        "engine_target": 0.8, "engine_seconds": round(engine_seconds, 2), "engine_queries": res.total_queries,
        "engine_rounds": res.rounds, "queries_per_pair_mean_default": float(res.queries.double().mean()),
        "censored_fraction_default": float(res.censored.float().mean()),
        "bisection": bisection, "bisection_target": 1.1,
    }, indent=2))


if __name__ == "__main__":
    main()
