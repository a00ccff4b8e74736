"""CKKS noise, measured (issue 22): how often the encrypted bit disagrees with the plaintext bit,
by distance to the decision boundary and by scale bits, and what that does to eps. Prints JSON.

    python benchmarks/ckks_noise.py --model runs/mnist-hecnn/model --out benchmarks/ckks_noise.json

For every parameter set (all at 128-bit security; the default first):

* ``--images`` MNIST test images, ``--directions`` directions of hesig's ``random`` family
  (``--seed``; their hash is in the JSON). The plaintext
  boundary eps of each pair comes from a bisection at rtol 1e-5 (the reference).
* Queries at eps_plain x (1 + d), with d drawn log-uniformly in magnitude from 1e-6 to 5e-2, with
  a random sign, ``--evaluations`` full evaluations per image (slots - 1 queries each).
* Each query's plaintext logit margin: the reference class's logit minus the largest other (the
  same bit is "the label is unchanged" exactly when the margin is > 0).
* The CKKS client (``strict``: every evaluation answered) decrypts its bit; a disagreement is a
  query whose CKKS bit differs from the plaintext bit.

Reported per parameter set: disagreements in bins of |margin| (logits) and of |d|; the largest |d|
and |margin| at which one occurred. A bisection that meets a disagreement at relative distance
|d| moves that pair's eps by at most |d| (it lands on the wrong side of a point that close), so
the largest |d| bounds the eps error CKKS noise causes, against the search tolerance (rtol 1e-3
in benchmarks/ckks.py).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from hesig.data import load_dataset
from hesig.models import load_model
from hesig.oracles import PlaintextOracle
from hesig.oracles.ckks import CKKSOracle, CKKSParameters
from hesig.signature.directions import make_directions
from hesig.signature.search import BoundarySearch

#: (name, N, primes, scale bits): the default, then smaller scales at the same N, then a larger scale
#: that only fits 128-bit security at N = 16384.
PARAMETER_SETS = [
    ("default: N 8192, scale 2^26", 8192, (31, 26, 26, 26, 26, 26, 26, 31), 26),
    ("N 8192, scale 2^24", 8192, (31, 24, 24, 24, 24, 24, 24, 31), 24),
    ("N 8192, scale 2^22", 8192, (31, 22, 22, 22, 22, 22, 22, 31), 22),
    ("N 16384, scale 2^30", 16384, (31, 30, 30, 30, 30, 30, 30, 31), 30),  # primes < 2^32: the numpy layers
]
MARGIN_BINS = [0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, float("inf")]
DISTANCE_BINS = [0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1.0]


def binned(values: np.ndarray, wrong: np.ndarray, edges: list[float]) -> list[dict]:
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (values >= lo) & (values < hi)
        n, bad = int(inside.sum()), int((wrong & inside).sum())
        rows.append({"from": lo, "to": hi if np.isfinite(hi) else None, "queries": n, "disagreements": bad,
                     "rate": bad / n if n else None})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="an MNIST hecnn checkpoint")
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--directions", type=int, default=100)
    ap.add_argument("--evaluations", type=int, default=2, help="full evaluations per image and parameter set")
    ap.add_argument("--sets", default="all", help="comma-separated indices into the parameter sets (default: all)")
    ap.add_argument("--eps-max", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    target = load_model(args.model)
    test = load_dataset("mnist", "test", args.data_root)
    images = test.images[:args.images]
    directions = make_directions("random", args.directions, tuple(images.shape[1:]), seed=args.seed)
    dirs = directions.vectors
    plain = PlaintextOracle(target.model, images, device="cpu")
    fine = BoundarySearch(args.eps_max, coarse_points=8, points_per_round=1, rtol=1e-5).run(plain, dirs)
    with torch.no_grad():
        reference = target.model(images.float()).argmax(1)
    chosen = range(len(PARAMETER_SETS)) if args.sets == "all" else [int(i) for i in args.sets.split(",")]
    out: dict = {"machine": {"python": platform.python_version(), "torch": torch.__version__},
                 "model_hash": target.hash, "directions_hash": directions.hash, "test_split_hash": test.split_hash,
                 "images": args.images, "directions": args.directions,
                 "evaluations_per_image": args.evaluations, "seed": args.seed, "sets": []}
    for index in chosen:
        name, n, primes, scale_bits = PARAMETER_SETS[index]
        params = CKKSParameters(poly_modulus_degree=n, coeff_mod_bit_sizes=primes, scale_bits=scale_bits)
        rng = np.random.default_rng(args.seed + index)
        per_image = (params.slots - 1) * args.evaluations
        pert, rows, rel = [], [], []
        for r in range(args.images):
            ok = np.flatnonzero(~fine.censored[r].numpy())
            d = rng.choice(ok, per_image)
            signed = rng.choice([-1.0, 1.0], per_image) * 10 ** rng.uniform(-6, np.log10(5e-2), per_image)
            eps = fine.eps[r, d].double().numpy() * (1 + signed)
            pert.append(dirs[d] * torch.from_numpy(eps).float()[:, None, None, None])
            rows.append(torch.full((per_image,), r))
            rel.append(np.abs(signed))
        pert, rows, rel = torch.cat(pert), torch.cat(rows), np.concatenate(rel)
        with torch.no_grad():
            logits = torch.cat([target.model((images[rows[i:i + 4096]] + pert[i:i + 4096]).float())
                                for i in range(0, len(rows), 4096)]).double()
        ref = reference[rows]
        top_ref = logits.gather(1, ref[:, None])[:, 0]
        others = logits.scatter(1, ref[:, None], float("-inf")).max(1).values
        margin = (top_ref - others).numpy()
        want = plain.same_label(pert, rows).numpy()
        t0 = time.perf_counter()
        ck = CKKSOracle(target.model, images, in_shape=target.in_shape, arch=target.arch, params=params,
                        layout="batched", client_policy="strict")
        got = ck.same_label(pert, rows).numpy()
        seconds = time.perf_counter() - t0
        wrong = got != want
        record = {"name": name, "params": params.describe(), "queries": int(len(rows)),
                  "disagreements": int(wrong.sum()), "rate": float(wrong.mean()),
                  "plaintext_bit_matches_margin_sign": float(((margin > 0) == want).mean()),
                  "by_abs_margin_logits": binned(np.abs(margin), wrong, MARGIN_BINS),
                  "by_abs_relative_distance": binned(rel, wrong, DISTANCE_BINS),
                  "max_abs_margin_at_disagreement": float(np.abs(margin[wrong]).max()) if wrong.any() else None,
                  "max_abs_relative_distance_at_disagreement": float(rel[wrong].max()) if wrong.any() else None,
                  "seconds": round(seconds, 1), "costs": ck.costs()}
        del ck
        out["sets"].append(record)
        print(json.dumps({k: record[k] for k in ("name", "queries", "disagreements",
                                                 "max_abs_relative_distance_at_disagreement", "seconds")}), flush=True)
    text = json.dumps(out, indent=2, sort_keys=True) + "\n"
    with open(args.out, "w") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
