"""Recompute a demo run's SSIM with scikit-image, independently of hesig's metrics; prints JSON.

    python results/verify_ssim.py runs/mnist-hecnn [--out results/mnist_hecnn/ssim_check.json]

Reads the saved reconstructions (``reconstruct/reconstructions.safetensors``) and the test images
they reconstruct, scores every pair with ``skimage.metrics.structural_similarity`` (gaussian
window, sigma 1.5, population covariance, data_range 1.0: the interior convention) and compares
the mean with the ``ssim_mean`` hesig wrote to ``reconstruct/metrics.json``. Needs the test extra
(scikit-image).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from skimage.metrics import structural_similarity

from hesig.core.io import atomic_write_json
from hesig.data import load_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    metrics = json.loads((args.run / "reconstruct" / "metrics.json").read_text())
    tensors = load_file(args.run / "reconstruct" / "reconstructions.safetensors")
    recon, indices = tensors["reconstructions"].astype(np.float64), tensors["indices"]
    identity = metrics["identity"]
    images = load_dataset(identity["dataset"], identity["split"]).images.numpy().astype(np.float64)[indices]
    scores = [structural_similarity(r[0], x[0], data_range=1.0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False) for r, x in zip(recon, images)]
    ours = metrics["metrics"]["attack"]["ssim_mean"]
    result = {"run": str(args.run), "n": len(scores), "skimage_ssim_mean": float(np.mean(scores)),
              "hesig_ssim_mean": ours, "difference": float(np.mean(scores)) - ours,
              "model_hash": identity.get("model_hash"), "split_hash": identity.get("split_hash")}
    print(json.dumps(result, indent=1))
    if args.out:
        atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
