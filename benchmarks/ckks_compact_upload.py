"""Upload per image when one CKKS key pair serves several images (issue 22's ≤ 10 MB). Prints JSON.

    python benchmarks/ckks_compact_upload.py --model runs/mnist-hecnn/model \\
        --directions runs/mnist-hecnn/directions.safetensors --out benchmarks/ckks_compact_upload.json

The compact layout sends one seeded ciphertext per image (≈ 0.24 MB) and, once per key pair, a
context with seeded relinearization and 12 Galois keys (≈ 25.7 MB). Under a ``strict`` client
policy (no ``fresh-keys``) one key pair serves every image of the oracle, so the context is sent
once. This fingerprints ``--images`` MNIST test images through one compact-layout CKKS oracle at
rtol 1e-3 and reads every byte from the oracle's cost accounting: what the wire carried.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from hesig.core.io import atomic_write_json
from hesig.data import load_dataset
from hesig.models import load_model
from hesig.oracles.ckks import CKKSOracle, CKKSParameters
from hesig.signature.directions import Directions
from hesig.signature.search import BoundarySearch


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--directions", required=True)
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--rtol", type=float, default=1e-3)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    target = load_model(args.model)
    dirs = Directions.load(args.directions)
    images = load_dataset("mnist", "test", args.data_root).images[:args.images]
    params = CKKSParameters()
    search = BoundarySearch(60.0, coarse_points=(params.slots - 1) // dirs.count, points_per_round="auto", rtol=args.rtol)
    oracle = CKKSOracle(target.model, images, in_shape=target.in_shape, arch=target.arch, params=params,
                        layout="compact", encryption="seeded", client_policy="strict")  # one key pair for all rows
    t0 = time.perf_counter()
    result = search.run(oracle, dirs.vectors)
    seconds = time.perf_counter() - t0
    costs = oracle.costs()
    n = args.images
    out = {"images": n, "layout": "compact", "encryption": "seeded", "client_policy": "strict",
           "model_hash": target.hash, "directions_hash": dirs.hash, "search": search.params(),
           "key_pairs": costs["key_pairs"], "context_bytes": costs["context_bytes"],
           "upload_bytes_inputs": costs["upload_bytes"],
           "upload_bytes_per_image_with_context": (costs["context_bytes"] + costs["upload_bytes"]) / n,
           "download_bytes_per_image": costs["download_bytes"] / n,
           "evaluations": costs["evaluations"], "queries_per_image": result.total_queries / n,
           "seconds_per_image": seconds / n, "server_setup_seconds_per_image": costs["server_setup_seconds"] / n}
    if args.out:
        atomic_write_json(args.out, out)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
