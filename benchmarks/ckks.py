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

Before and after (issue 22), each path in its own process so its peak memory is its own:
``after`` is today's path (seeded symmetric encryption sent in hesig's packed form,
seeded keys, the server reading SEAL's buffers in place); ``before`` is the old one (public-key encryption, TenSEAL's full-size keys,
every SEAL-to-numpy crossing through SEAL's zstd serialization), on the first
``--baseline-images`` of the same images. The compact layout is timed both ways too.
``split`` is the after path with the client's encryption and the server's work each split over
``--processes`` processes (``--ckks-processes``): same results, on the first ``--split-images``;
its helpers are started and answering before the clock starts, and their peak memory is reported
beside the path's own. ``pipelines`` runs ``--pipelines`` after-path pipelines at once, each in
its own process on its share of the first ``--pipeline-images`` (every core on its own image, as
``hesig fingerprint --executor ray --workers 2`` computes chunks): seconds per fingerprint there
is wall clock / images, a throughput; the other paths' are one image's latency.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import queue
import sys
import time

import numpy as np
import torch

from hesig.data import load_dataset
from hesig.signature.directions import Directions
from hesig.models import load_model
from hesig.oracles import PlaintextOracle
from hesig.oracles.ckks import CKKSOracle, CKKSParameters, poly_cnn
from hesig.oracles.ckks.helpers import peak_rss_mb
from hesig.oracles.ckks.naive import NaiveCKKS
from hesig.signature.search import BoundarySearch


#: today's CKKS path and the old one (see the module docstring)
AFTER = {"name": "after", "layout": "batched", "encryption": "seeded", "zero_copy": True}
BEFORE = {"name": "before", "layout": "batched", "encryption": "public-key", "zero_copy": False}
SPLIT = {**AFTER, "name": "split"}  # + "processes", from --processes
PIPELINES = {**AFTER, "name": "pipelines"}  # + "pipelines", from --pipelines


def fingerprints(args, path: dict, images: list[int], search: BoundarySearch, barrier=None) -> dict:
    """Fingerprint the test images ``images`` through CKKS along ``path`` (and in plaintext, first,
    off the clock): per-stage seconds, bytes each way, this process's peak memory, and the
    monotonic clock at the start and end of the CKKS work (after ``barrier``, if given, so that
    concurrent pipelines start together). Runs in a child process."""
    from hesig.oracles.ckks import _seal

    torch.set_num_threads(1)
    _seal.ZERO_COPY = path["zero_copy"]
    target = load_model(args.model)
    dirs = Directions.load(args.directions)
    data = load_dataset("mnist", "test", args.data_root)
    params = CKKSParameters()
    processes = path.get("processes", 1)
    pools = []
    if processes > 1:  # started before the clock: a helper's start-up is paid once per process, not per image
        from hesig.oracles.ckks.client import ENCRYPT_LOOP
        from hesig.oracles.ckks.helpers import HelperPool
        from hesig.oracles.ckks.parallel import server_pool
        pools = [server_pool(processes), HelperPool.shared(ENCRYPT_LOOP, processes)]
        for pool in pools:
            pool.ready()
    n = len(images)
    eps_p, cen_p, eps_c, cen_c, secs, costs, queries = [], [], [], [], [], [], []
    plain = [search.run(PlaintextOracle(target.model, data.images[i:i + 1], device="cpu"), dirs.vectors) for i in images]
    if barrier is not None:
        barrier.wait()
    clock_start = time.monotonic()
    for i, res_p in zip(images, plain):
        img = data.images[i:i + 1]
        t0 = time.perf_counter()
        ck = CKKSOracle(target.model, img, in_shape=target.in_shape, arch=target.arch, params=params, layout=path["layout"],
                        encryption=path["encryption"], client_policy="strict", processes=processes)  # answers every evaluation
        res_c = search.run(ck, dirs.vectors)
        secs.append(time.perf_counter() - t0)
        costs.append(ck.costs())
        queries.append(res_c.total_queries)
        eps_p.append(res_p.eps[0]); cen_p.append(res_p.censored[0]); eps_c.append(res_c.eps[0]); cen_c.append(res_c.censored[0])
        del ck
        print(json.dumps({"path": path["name"], "layout": path["layout"], "image": i, "seconds": round(secs[-1], 1),
                          "queries": queries[-1]}), file=sys.stderr)
    clock_end = time.monotonic()
    total = {key: sum(c[key] for c in costs) for key in costs[0] if isinstance(costs[0][key], (int, float))}
    speed = {**path, "images": n, "rtol": args.rtol, "seconds_per_fingerprint_mean": float(np.mean(secs)),
             "seconds_per_fingerprint_max": float(np.max(secs)),
             "client_keygen_seconds_per_image": total["client_keygen_seconds"] / n,
             "client_encrypt_seconds_per_image": total["client_encrypt_seconds"] / n,
             "server_setup_seconds_per_image": total["server_setup_seconds"] / n,
             "server_eval_seconds_per_evaluation": total["server_eval_seconds"] / total["evaluations"],
             "client_decrypt_seconds_per_evaluation": total["client_decrypt_seconds"] / total["evaluations"],
             "evaluations_per_fingerprint": total["evaluations"] / n,
             "queries_per_fingerprint": float(np.mean(queries)),
             "slot_utilisation": total["slots_used"] / (total["evaluations"] * params.slots),
             "upload_bytes_per_image": total["upload_bytes"] / n, "context_bytes": costs[0]["context_bytes"],
             "download_bytes_per_fingerprint": total["download_bytes"] / n,
             "reply_bytes_per_fingerprint": total["reply_bytes"] / n}
    helpers = {"server": pools[0].peak_rss_mb(), "client": pools[1].peak_rss_mb()} if pools else None
    return {"speed": speed, "peak_rss_mb": round(peak_rss_mb(), 1), "peak_rss_mb_helpers": helpers, "total": total, "queries": queries,
            "eps_p": eps_p, "cen_p": cen_p, "eps_c": eps_c, "cen_c": cen_c, "images": list(images),
            "clock": (clock_start, clock_end)}


def _pipeline(args, path, images, search, barrier, results) -> None:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):  # one core per pipeline: the others are the other pipelines'
        run = fingerprints(args, path, images, search, barrier)
    for key in ("eps_p", "cen_p", "eps_c", "cen_c"):  # numpy: torch would share them through this process's files
        run[key] = [t.numpy() for t in run[key]]
    results.put(run)


def pipelines(args, count: int, n: int, search: BoundarySearch) -> dict:
    """``count`` after-path pipelines at once, each its own process (client and server) on every
    count-th of the first ``n`` test images: what a machine fingerprints per second when each core
    works on its own image (``hesig fingerprint --executor ray --workers 2`` does this per chunk).
    Seconds per fingerprint = the wall clock from the moment every pipeline is ready to the last
    one's end, divided by ``n``; peak memory per process and summed."""
    spawn = multiprocessing.get_context("spawn")
    barrier, results = spawn.Barrier(count), spawn.Queue()
    procs = [spawn.Process(target=_pipeline, args=(args, PIPELINES, list(range(k, n, count)), search, barrier, results))
             for k in range(count)]
    for proc in procs:
        proc.start()
    runs = []
    while len(runs) < count:  # a pipeline that dies would leave the others waiting at the barrier
        try:
            runs.append(results.get(timeout=5))
        except queue.Empty:
            failed = [proc.exitcode for proc in procs if proc.exitcode not in (None, 0)]
            if failed:
                for proc in procs:
                    proc.terminate()
                raise SystemExit(f"a pipeline process failed (exit code {failed[0]}); see its output above") from None
    for proc in procs:
        proc.join()
    wall = max(r["clock"][1] for r in runs) - min(r["clock"][0] for r in runs)
    merged = {key: [] for key in ("eps_p", "cen_p", "eps_c", "cen_c", "queries")}
    by_image = {i: (r, j) for r in runs for j, i in enumerate(r["images"])}
    for i in range(n):
        r, j = by_image[i]
        for key in merged:
            merged[key].append(torch.from_numpy(r[key][j]) if key != "queries" else r[key][j])
    speeds = [r["speed"] for r in runs]
    speed = {**PIPELINES, "pipelines": count, "images": n, "rtol": args.rtol, "wall_seconds": wall,
             "seconds_per_fingerprint": wall / n,
             "seconds_per_fingerprint_in_each_pipeline_mean": float(np.mean([s["seconds_per_fingerprint_mean"] for s in speeds])),
             "evaluations_per_fingerprint": sum(s["evaluations_per_fingerprint"] * s["images"] for s in speeds) / n,
             "upload_bytes_per_image": sum(s["upload_bytes_per_image"] * s["images"] for s in speeds) / n}
    peaks = [r["peak_rss_mb"] for r in runs]
    return {**merged, "speed": speed, "peak_rss_mb": max(peaks), "peak_rss_mb_each": peaks,
            "peak_rss_mb_sum": round(sum(peaks), 1)}


def floors(params: CKKSParameters, pixels: int, features: int, repeats: int = 20) -> dict:
    """Per-primitive costs (median of ``repeats``, one core) and what they imply for the issue-22
    targets: the bytes and seconds no implementation of a layout can go below with SEAL."""
    import statistics
    import tenseal as ts
    import tenseal.sealapi as sa
    from hesig.oracles.ckks import _seal, rns, seeded

    ctx = ts.context(ts.SCHEME_TYPE.CKKS, params.poly_modulus_degree, coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes))
    seal = ctx.seal_context().data
    scratch = _seal.Scratch(ctx)
    encoder, evaluator = sa.CKKSEncoder(seal), sa.Evaluator(seal)
    encryptor = sa.Encryptor(seal, ctx.public_key().data)
    encryptor.set_secret_key(ctx.secret_key().data)
    keygen = sa.KeyGenerator(seal, ctx.secret_key().data)

    def median_seconds(fn) -> float:
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        return statistics.median(samples)

    plain, ct = sa.Plaintext(), sa.Ciphertext()
    encoder.encode(0.5, params.scale, plain)
    seeded_zstd = scratch.save(encryptor.encrypt_symmetric(plain))
    encryptor.encrypt(plain, ct)
    full = scratch.save(ct)
    one_step = _seal.galois_elements([1], params.poly_modulus_degree)
    galois = sa.GaloisKeys()
    keygen.create_galois_keys(one_step, galois)
    relin = sa.RelinKeys()
    keygen.create_relin_keys(relin)
    sizes = {"ciphertext_seeded_zstd": len(seeded_zstd), "ciphertext_full": len(full),
             "ciphertext_c0_information_floor": params.poly_modulus_degree * sum(params.coeff_mod_bit_sizes[:-1]) // 8,
             "relin_keys_seeded": len(scratch.save(keygen.create_relin_keys())), "relin_keys_full": len(scratch.save(relin)),
             "one_galois_key_seeded": len(scratch.save(keygen.create_galois_keys(one_step))),
             "one_galois_key_full": len(scratch.save(galois))}

    shape = seeded.SeededShape.of(seal, ctx.public_key().data, scratch)
    packed = seeded.pack(encryptor.encrypt_symmetric(plain), shape, plain.scale)
    sizes["ciphertext_seeded_packed"] = len(packed)

    def seeded_encrypt():  # today's client: hesig's packed form (seeded.py)
        encoder.encode(0.5, params.scale, plain)
        seeded.pack(encryptor.encrypt_symmetric(plain), shape, plain.scale)

    def seeded_encrypt_zstd():  # the previous client: SEAL's zstd serialization
        encoder.encode(0.5, params.scale, plain)
        scratch.save(encryptor.encrypt_symmetric(plain))

    def public_encrypt():
        encoder.encode(0.5, params.scale, plain)
        encryptor.encrypt(plain, ct)
        scratch.save(ct)

    def seeded_load():
        _seal.ciphertext_data(scratch.load(sa.Ciphertext(), seal, seeded.to_seal(packed)))

    def seeded_load_zstd():
        _seal.ciphertext_data(scratch.load(sa.Ciphertext(), seal, seeded_zstd))

    rotated = sa.Ciphertext()
    seconds = {"encrypt_seeded": median_seconds(seeded_encrypt), "encrypt_seeded_zstd": median_seconds(seeded_encrypt_zstd),
               "encrypt_public_key": median_seconds(public_encrypt),
               "server_load_seeded": median_seconds(seeded_load), "server_load_seeded_zstd": median_seconds(seeded_load_zstd),
               "server_parse_full": median_seconds(lambda: rns.parse(full)),
               "rotation": median_seconds(lambda: evaluator.rotate_vector(ct, 1, galois, rotated))}
    rotation_steps = params.slots.bit_length() - 1
    compact_keys = sizes["ciphertext_seeded_packed"] + rotation_steps * sizes["one_galois_key_seeded"] + sizes["relin_keys_seeded"]
    return {"repeats": repeats, "bytes": sizes, "seconds": seconds,
            "batched": {"upload_bytes_per_image_seeded": pixels * sizes["ciphertext_seeded_packed"],
                        "upload_bytes_per_image_seeded_zstd": pixels * sizes["ciphertext_seeded_zstd"],
                        "upload_bytes_per_image_information_floor": pixels * sizes["ciphertext_c0_information_floor"],
                        "client_encrypt_seconds_one_core": pixels * seconds["encrypt_seeded"],
                        "server_input_seconds_one_core": pixels * seconds["server_load_seeded"]},
            "compact": {"rotations_per_image": features * rotation_steps,
                        "rotation_seconds_per_image_one_core": features * rotation_steps * seconds["rotation"],
                        "key_bytes_per_key_pair_seeded": compact_keys - sizes["ciphertext_seeded_packed"],
                        "upload_bytes_per_image_seeded": sizes["ciphertext_seeded_packed"],
                        "images_per_key_pair_for_10_mb": math.ceil((compact_keys - sizes["ciphertext_seeded_packed"])
                                                                   / (10e6 - sizes["ciphertext_seeded_packed"]))}}


def eps_agreement(run: dict, rtol: float, search: BoundarySearch) -> dict:
    """CKKS against plaintext ε of one path's fingerprints: same censoring, |Δε| <= rtol·max ε."""
    eps_p, cen_p, eps_c, cen_c = (torch.stack(run[k]) for k in ("eps_p", "cen_p", "eps_c", "cen_c"))
    both = ~cen_p & ~cen_c
    diff = (eps_c - eps_p).abs()[both]
    within = diff <= rtol * torch.maximum(eps_c, eps_p)[both]
    rows = both.nonzero()[:, 0]
    return {"images": int(eps_p.shape[0]), "path": run["speed"]["name"], "pairs": int(cen_p.numel()),
            "pairs_both_uncensored": int(both.sum()), "censored_status_agreement": float((cen_p == cen_c).float().mean()),
            "fraction_within_tolerance": float(within.float().mean()), "pairs_outside_tolerance": int((~within).sum()),
            "pairs_outside_tolerance_by_image": {int(i): int(c) for i, c in zip(*torch.unique(rows[~within], return_counts=True))},
            "fraction_identical": float((diff == 0).float().mean()),
            "max_relative_difference": float((diff / eps_p[both]).max()), "search": search.params()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--directions", required=True)
    ap.add_argument("--images", type=int, default=20, help="test images for eps agreement and speed")
    ap.add_argument("--agreement-images", type=int, default=3, help="images for near-boundary decision agreement")
    ap.add_argument("--naive-queries", type=int, default=5)
    ap.add_argument("--baseline-images", type=int, default=5, help="images fingerprinted with the old path too")
    ap.add_argument("--compact-images", type=int, default=1, help="images fingerprinted with the compact layout too (both paths)")
    ap.add_argument("--split-images", type=int, default=None, help="images fingerprinted with the split path (default: --images)")
    ap.add_argument("--processes", type=int, default=2, help="processes per party on the split path")
    ap.add_argument("--pipelines", type=int, default=2, help="concurrent after-path pipelines (0: skip that path)")
    ap.add_argument("--pipeline-images", type=int, default=None, help="images for the pipelines path (default: --images)")
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
    out: dict = {"machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                             "torch_threads": torch.get_num_threads()},
                 "ckks": params.describe(5), "model_hash": target.hash, "directions_hash": dirs.hash,
                 "directions": dirs.count}
    rng = np.random.default_rng(args.seed)
    poly = poly_cnn(target.model, target.in_shape, target.arch)
    out["floors"] = floors(params, poly.num_pixels, poly.num_features)
    print(json.dumps({"floors": out["floors"]["seconds"]}), file=sys.stderr)

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
    ck = CKKSOracle(target.model, images, in_shape=target.in_shape, arch=target.arch, params=params,
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

    # 2 + 3 + 5 + 6. full fingerprints at rtol 1e-3, after and before, each in its own process
    search = BoundarySearch(args.eps_max, coarse_points=(slots - 1) // dirs.count, points_per_round="auto", rtol=args.rtol)
    n = args.images
    spawn = multiprocessing.get_context("spawn")

    def in_child(path: dict, count: int) -> dict:
        with spawn.Pool(1) as pool:
            return pool.apply(fingerprints, (args, path, list(range(count)), search))

    after = in_child(AFTER, n)
    before = in_child(BEFORE, min(args.baseline_images, n)) if args.baseline_images else None
    n_split = n if args.split_images is None else min(args.split_images, n)
    split = in_child({**SPLIT, "processes": args.processes}, n_split) if n_split and args.processes > 1 else None
    n_pipe = n if args.pipeline_images is None else min(args.pipeline_images, n)
    piped = pipelines(args, args.pipelines, n_pipe, search) if n_pipe and args.pipelines > 1 else None
    out["eps_agreement"] = eps_agreement(after, args.rtol, search)
    with torch.no_grad():  # near-tied images (a small top-2 margin) are where CKKS noise moves eps
        top2 = target.model(data.images[:n]).topk(2, dim=1).values
    out["eps_agreement"]["unperturbed_top2_margin_logits"] = [round(float(m), 3) for m in top2[:, 0] - top2[:, 1]]
    if before is not None:
        out["eps_agreement_before"] = eps_agreement(before, args.rtol, search)
    out["speed"] = after["speed"]
    out["peak_rss_mb_after"] = after["peak_rss_mb"]
    if split is not None:
        out["eps_agreement_split"] = eps_agreement(split, args.rtol, search)
        out["speed_split"] = split["speed"]
        out["peak_rss_mb_split"] = split["peak_rss_mb"]
        out["peak_rss_mb_split_helpers"] = split["peak_rss_mb_helpers"]
        out["speedup_split_over_after"] = after["speed"]["seconds_per_fingerprint_mean"] / split["speed"]["seconds_per_fingerprint_mean"]
    if piped is not None:
        out["eps_agreement_pipelines"] = eps_agreement(piped, args.rtol, search)
        out["speed_pipelines"] = piped["speed"]
        out["peak_rss_mb_pipelines_each"] = piped["peak_rss_mb_each"]
        out["peak_rss_mb_pipelines_sum"] = piped["peak_rss_mb_sum"]
        out["speedup_pipelines_over_after"] = after["speed"]["seconds_per_fingerprint_mean"] / piped["speed"]["seconds_per_fingerprint"]
    if before is not None:
        out["speed_before"] = before["speed"]
        out["peak_rss_mb_before"] = before["peak_rss_mb"]
        out["speedup_seconds_per_fingerprint"] = before["speed"]["seconds_per_fingerprint_mean"] / after["speed"]["seconds_per_fingerprint_mean"]
    total = after.pop("total")
    queries = after.pop("queries")
    if args.compact_images:
        out["compact_layout"] = {name: in_child({**path, "layout": "compact"}, args.compact_images)["speed"]
                                 for name, path in (("after", AFTER), ("before", BEFORE))}

    # 4. naive baseline ----------------------------------------------------------------
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
    out["peak_rss_mb_parent"] = round(peak_rss_mb(), 1)  # decision agreement + naive baseline
    text = json.dumps(out, indent=2, default=float)
    if args.out:
        from hesig.core.io import atomic_write_json
        atomic_write_json(args.out, json.loads(text))
    print(text)
    return out


if __name__ == "__main__":
    main()
