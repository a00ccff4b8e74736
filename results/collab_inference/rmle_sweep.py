"""rMLE settings sweep on the adversary's side (no victim images): which T / lr / λ / init to use.

Scores 64 images of training half b (never the test victims) against the target trained on half a,
at a shallow (conv1), the paper's deep (ReLU2) and a fully connected (fc1act) split.
Writes rmle_sweep.json and rmle_sweep.png beside this file.

    python results/collab_inference/rmle_sweep.py runs/collab/target
"""

import json
import sys
from pathlib import Path

import torch

from hesig.evaluation import viz
from hesig.attacks.base import WhiteBoxEdge
from hesig.attacks.split_inference import RMLE
from hesig.data import load_dataset, train_half
from hesig.defenses.feature_noise import edge_features
from hesig.core.io import atomic_write_json
from hesig.evaluation.metrics import psnr, ssim
from hesig.models import load_model, split_model

HERE = Path(__file__).parent
N_IMAGES = 64
SPLITS = ("conv1", "ReLU2", "fc1act")
#: (iterations, lr, tv_weight, init_noise); init_noise 0 is the paper's constant-gray start.
GRID = [(500, 1e-2, 0.0, 0.0)] + [(t, lr, lam, 0.1) for t, lr in ((500, 1e-2), (2000, 1e-2), (2000, 1e-3))
                                   for lam in (0.0, 0.3, 3.0)]


def main(model_dir: str) -> None:
    torch.set_num_threads(1)
    target = load_model(model_dir)
    images = train_half(load_dataset(target.meta["dataset"], "train"), "b").images[:N_IMAGES]
    rows = []
    for split in SPLITS:
        edge, _ = split_model(target.model, split)
        observed = edge_features(edge, images)
        for iterations, lr, lam, jitter in GRID:
            result = RMLE(iterations=iterations, lr=lr, tv_weight=lam, tv_beta=1.0, init_noise=jitter,
                          seed=0).fit(WhiteBoxEdge(edge, target.in_shape)).reconstruct(observed)
            recon, seconds, distance = result.images, result.seconds, result.details["final_feature_distance"]
            row = {"split": split, "iterations": iterations, "lr": lr, "tv_weight": lam, "tv_beta": 1.0,
                   "init_noise": jitter, "psnr_mean": float(psnr(recon, images).mean()),
                   "ssim_mean": float(ssim(recon, images).mean()), "seconds": seconds,
                   "final_feature_distance_mean": sum(distance) / N_IMAGES}
            rows.append(row)
            print(json.dumps(row), flush=True)
    best = {s: max((r for r in rows if r["split"] == s), key=lambda r: r["ssim_mean"]) for s in SPLITS}
    atomic_write_json(HERE / "rmle_sweep.json", {"model_hash": target.hash, "n_images": N_IMAGES,
                                                 "images": "training half b, first 64 (not victims)",
                                                 "rows": rows, "best_by_ssim": best})
    fig = viz.new_figure(10, 3.4)
    for k, split in enumerate(SPLITS):
        ax = fig.add_subplot(1, len(SPLITS), k + 1)
        sub = [r for r in rows if r["split"] == split]
        labels = [f"T{r['iterations']} lr{r['lr']:g} λ{r['tv_weight']:g}" + ("" if r["init_noise"] else " const")
                  for r in sub]
        ax.barh(range(len(sub)), [r["ssim_mean"] for r in sub], color="C0")
        ax.set_yticks(range(len(sub)), labels, fontsize=7)
        ax.set_xlabel("SSIM (data_range 1.0)")
        ax.set_title(f"rMLE at {split}")
    fig.suptitle(f"rMLE settings on {N_IMAGES} adversary-side images (training half b)")
    viz.save_figure(fig, HERE / "rmle_sweep.png")


if __name__ == "__main__":
    main(sys.argv[1])
