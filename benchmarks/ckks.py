"""CKKS oracle benchmark (issue 3): fidelity, speed, ratio to the naive baseline, costs. Prints JSON.

    python benchmarks/ckks.py --model runs/mnist-hecnn/model \
        --directions runs/mnist-hecnn/directions.safetensors --out benchmarks/ckks.json

All numbers come from one run on one machine:
1. decision agreement with the plaintext oracle on queries at eps within +-5% of the plaintext
   boundary eps (plaintext boundary from a bisection at rtol 1e-5);
2. eps agreement: full 100-direction fingerprints of ``--images`` test images through both
   oracles with the same search (rtol 1e-3), |eps_ckks - eps_plain| <= rtol * max(eps);
3. seconds per fingerprint (client encryption + server setup + evaluations + decryption);
4. the naive one-query-per-ciphertext oracle (TenSEAL tutorial) timed on ``--naive-queries``
   queries, its seconds per fingerprint = seconds/query x the queries one fingerprint needs
   with one query per evaluation (bisection, measured with the plaintext oracle);
5. evaluations, queries, slot utilisation; 6. peak memory and bytes each way.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time

import numpy as np
import torch

from hesig.data import load_dataset
from hesig.signature.directions import Directions
from hesig.models import load_model
from hesig.oracles import PlaintextOracle
from hesig.oracles.ckks import CKKSOracle, CKKSParameters, poly_cnn
from hesig.oracles.ckks.naive import NaiveCKKS
from hesig.signature.search import BoundarySearch


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--directions", required=True)
    ap.add_argument("--images", type=int, default=20, help="test images for eps agreement and speed")
    ap.add_argument("--agreement-images", type=int, default=3, help="images for near-boundary decision agreement")
    ap.add_argument("--naive-queries", type=int, default=5)
    ap.add_argument("--layout", default="batched", choices=["batched", "compact"])
    ap.add_argument("--compact-images", type=int, default=1, help="images fingerprinted with the compact layout too")
    ap.add_argument("--rtol", type=float, default=1e-3)
    ap.add_argument("--eps-max", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    target = load_model(args.model)
    dirs = Directions.load(args.directions)
    data = load_dataset("mnist", "test", args.data_root)
    params = CKKSParameters()
    slots = params.slots
    out: dict = {"machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": torch.get_num_threads()},
                 "ckks": params.describe(5), "model_hash": target.hash, "directions_hash": dirs.hash,
                 "directions": dirs.count}
    rng = np.random.default_rng(args.seed)

    # 1. decision agreement near the boundary -------------------------------------------
    k = args.agreement_images
    images = data.images[:k]
    plain = PlaintextOracle(target.model, images, device="cpu")
    fine = BoundarySearch(args.eps_max, coarse_points=8, points_per_round=1, rtol=1e-5).run(plain, dirs.vectors)
    per_image = slots - 1
    pert, rows = [], []
    for r in range(k):
        ok = np.flatnonzero(~fine.censored[r].numpy())
        d = rng.choice(ok, per_image)
        eps = fine.eps[r, d].numpy() * rng.uniform(0.95, 1.05, per_image)
        pert.append(dirs.vectors[d] * torch.from_numpy(eps).float()[:, None, None, None])
        rows.append(torch.full((per_image,), r))
    pert, rows = torch.cat(pert), torch.cat(rows)
    want = plain.same_label(pert, rows)
    ck = CKKSOracle(target.model, images, in_shape=target.in_shape, arch=target.arch, params=params, layout=args.layout,
                    client_policy="strict")  # a client that answers every evaluation (no reply budget)
    t0 = time.perf_counter()
    got = ck.same_label(pert, rows)
    out["decision_agreement"] = {"queries": int(len(rows)), "images": k, "window": "eps_plain x U(0.95, 1.05)",
                                 "agreement": float((got == want).float().mean()),
                                 "disagreements": int((got != want).sum()),
                                 "fraction_flipped_plaintext": float((~want).float().mean()),
                                 "seconds": round(time.perf_counter() - t0, 1), "costs": ck.costs()}
    del ck
    print(json.dumps({"decision_agreement": out["decision_agreement"]["agreement"]}), file=sys.stderr)

    # 2 + 3 + 5 + 6. full fingerprints at rtol 1e-3 ------------------------------------
    search = BoundarySearch(args.eps_max, coarse_points=(slots - 1) // dirs.count, points_per_round="auto", rtol=args.rtol)
    n = args.images
    eps_p, cen_p, eps_c, cen_c, secs, costs, queries = [], [], [], [], [], [], []
    for i in range(n):
        img = data.images[i:i + 1]
        res_p = search.run(PlaintextOracle(target.model, img, device="cpu"), dirs.vectors)
        t0 = time.perf_counter()
        ck = CKKSOracle(target.model, img, in_shape=target.in_shape, arch=target.arch, params=params, layout=args.layout,
                    client_policy="strict")  # a client that answers every evaluation (no reply budget)
        res_c = search.run(ck, dirs.vectors)
        secs.append(time.perf_counter() - t0)
        costs.append(ck.costs())
        queries.append(res_c.total_queries)
        eps_p.append(res_p.eps[0]); cen_p.append(res_p.censored[0]); eps_c.append(res_c.eps[0]); cen_c.append(res_c.censored[0])
        del ck
        print(json.dumps({"image": i, "seconds": round(secs[-1], 1), "queries": queries[-1]}), file=sys.stderr)
    eps_p, cen_p, eps_c, cen_c = map(torch.stack, (eps_p, cen_p, eps_c, cen_c))
    both = ~cen_p & ~cen_c
    diff = (eps_c - eps_p).abs()[both]
    tol = args.rtol * torch.maximum(eps_c, eps_p)[both]
    out["eps_agreement"] = {"images": n, "pairs": int(cen_p.numel()), "pairs_both_uncensored": int(both.sum()),
                            "censored_status_agreement": float((cen_p == cen_c).float().mean()),
                            "fraction_within_tolerance": float((diff <= tol).float().mean()),
                            "fraction_identical": float((diff == 0).float().mean()),
                            "max_relative_difference": float((diff / eps_p[both]).max()),
                            "search": search.params()}
    total = {key: sum(c[key] for c in costs) for key in costs[0] if isinstance(costs[0][key], (int, float))}
    out["speed"] = {"layout": args.layout, "rtol": args.rtol, "seconds_per_fingerprint_mean": float(np.mean(secs)),
                    "seconds_per_fingerprint_max": float(np.max(secs)),
                    "client_encrypt_seconds_per_image": total["client_encrypt_seconds"] / n,
                    "server_setup_seconds_per_image": total["server_setup_seconds"] / n,
                    "server_eval_seconds_per_evaluation": total["server_eval_seconds"] / total["evaluations"],
                    "client_decrypt_seconds_per_evaluation": total["client_decrypt_seconds"] / total["evaluations"],
                    "evaluations_per_fingerprint": total["evaluations"] / n,
                    "queries_per_fingerprint": float(np.mean(queries)),
                    "slot_utilisation": total["slots_used"] / (total["evaluations"] * slots),
                    "upload_bytes_per_image": total["upload_bytes"] / n, "context_bytes": costs[0]["context_bytes"],
                    "download_bytes_per_fingerprint": total["download_bytes"] / n,
                    "reply_bytes_per_fingerprint": total["reply_bytes"] / n}

    # compact layout: the same search on the first image(s) ----------------------------
    if args.compact_images:
        secs_c, costs_c = [], []
        for i in range(args.compact_images):
            t0 = time.perf_counter()
            ck = CKKSOracle(target.model, data.images[i:i + 1], in_shape=target.in_shape, arch=target.arch, params=params,
                            client_policy="strict",
                            layout="compact")
            res = search.run(ck, dirs.vectors)
            secs_c.append(time.perf_counter() - t0)
            costs_c.append(ck.costs())
            same = bool(torch.equal(res.eps[0], eps_c[i]) and torch.equal(res.censored[0], cen_c[i]))
            del ck
        cc = costs_c[0]
        out["compact_layout"] = {"images": args.compact_images, "seconds_per_fingerprint_mean": float(np.mean(secs_c)),
                                 "client_encrypt_seconds": cc["client_encrypt_seconds"],
                                 "server_setup_seconds": cc["server_setup_seconds"],
                                 "evaluations": cc["evaluations"], "upload_bytes_per_image": cc["upload_bytes"],
                                 "context_bytes_with_galois_keys": cc["context_bytes"],
                                 "eps_identical_to_batched_on_image_0": same}

    # 4. naive baseline ----------------------------------------------------------------
    poly = poly_cnn(target.model, target.in_shape, target.arch)
    naive = NaiveCKKS(poly, params)
    q = args.naive_queries
    d = rng.choice(dirs.count, q)
    pert = (dirs.vectors[d] * torch.from_numpy(rng.uniform(0.5, 20, q)).float()[:, None, None, None]).double().numpy()
    timing = naive.time_queries(data.images[0].double().numpy(), pert)
    bisect = BoundarySearch(args.eps_max, coarse_points=8, points_per_round=1, rtol=args.rtol)
    q_bisect = bisect.run(PlaintextOracle(target.model, data.images[:n], device="cpu"), dirs.vectors).queries.sum(1).float().mean()
    naive_fp = timing["seconds_per_query"] * float(q_bisect)
    ours = out["speed"]["seconds_per_fingerprint_mean"]
    ours_per_query = total["server_eval_seconds"] / sum(queries)
    out["naive"] = {k: v for k, v in timing.items() if k != "answers"}
    out["naive"].update({"queries_per_fingerprint_bisection": float(q_bisect),
                         "seconds_per_fingerprint_estimated": naive_fp,
                         "ratio_seconds_per_fingerprint": naive_fp / ours,
                         "ratio_server_seconds_per_query": timing["seconds_per_query"] / ours_per_query})
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    text = json.dumps(out, indent=2, default=float)
    if args.out:
        from hesig.core.io import atomic_write_json
        atomic_write_json(args.out, json.loads(text))
    print(text)
    return out


if __name__ == "__main__":
    main()
