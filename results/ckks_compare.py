"""Compare reconstructions from CKKS fingerprints with those from plaintext fingerprints.

Usage: python results/ckks_compare.py RUN_DIR DEST_DIR (run by results/ckks_e2e.sh).
Reads RUN_DIR/{fp_plaintext,fp_ckks}.safetensors and RUN_DIR/reconstruct_{plaintext,ckks}/;
writes DEST_DIR/summary.json (metrics side by side, eps agreement, time, queries, CKKS costs)
and DEST_DIR/figure.png (originals / from plaintext fingerprints / from CKKS fingerprints).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from hesig.data import load_dataset
from hesig.signature.fingerprints import Fingerprints
from hesig.core.io import atomic_write_json, load_tensors
from hesig.evaluation.viz import reconstruction_grid


def main(run: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    fps = {o: Fingerprints.load(run / f"fp_{o}.safetensors") for o in ("plaintext", "ckks")}
    metrics = {o: json.loads((run / f"reconstruct_{o}" / "metrics.json").read_text()) for o in fps}
    recon = {o: load_tensors(run / f"reconstruct_{o}" / "reconstructions.safetensors")[0]["reconstructions"] for o in fps}
    p, c = fps["plaintext"], fps["ckks"]
    assert torch.equal(p.indices, c.indices)
    rtol = p.meta["search"]["rtol"]
    both = ~p.censored & ~c.censored
    rel = ((c.eps - p.eps).abs() / p.eps)[both]
    censor_agree = float((p.censored == c.censored).float().mean())
    # Two searches agree "within tolerance" when their brackets overlap: each eps is within rtol of the boundary.
    within = float((rel <= 2 * rtol).float().mean())
    attack = {o: metrics[o]["metrics"]["attack"] for o in fps}
    summary = {
        "images": len(p), "directions": p.num_directions, "dataset": p.meta["dataset"], "split": p.meta["split"],
        "indices": [int(p.indices[0]), int(p.indices[-1])], "model_hash": p.meta["model_hash"],
        "directions_hash": p.meta["directions_hash"], "search": p.meta["search"],
        "ckks": c.meta.get("ckks"),
        "metrics": {o: {k: round(v, 4) if isinstance(v, float) else v for k, v in attack[o].items()} for o in fps},
        "ssim_difference": round(attack["ckks"]["ssim_mean"] - attack["plaintext"]["ssim_mean"], 4),
        "ssim_full_map_difference": round(attack["ckks"]["ssim_full_map_mean"] - attack["plaintext"]["ssim_full_map_mean"], 4),
        "psnr_difference_db": round(attack["ckks"]["psnr_mean"] - attack["plaintext"]["psnr_mean"], 3),
        "baseline_class_mean": metrics["plaintext"]["metrics"]["baseline_class_mean"],
        "eps_agreement": {"censored_status_agreement": round(censor_agree, 4),
                          "pairs_both_uncensored": int(both.sum()),
                          "fraction_within_2rtol": round(within, 4),
                          "median_relative_difference": float(rel.median()), "max_relative_difference": float(rel.max())},
        "queries_per_fingerprint": {o: float(fps[o].queries.sum(1).float().mean()) for o in fps},
        "compute_seconds": {o: fps[o].meta.get("compute_seconds") for o in fps},
        "seconds_per_fingerprint": {o: round(fps[o].meta["compute_seconds"] / len(fps[o]), 2) for o in fps},
        "ckks_costs": c.meta.get("oracle_costs"),
        "command": "bash results/ckks_e2e.sh",
    }
    atomic_write_json(dest / "summary.json", summary)
    data = load_dataset(p.meta["dataset"], p.meta["split"])
    m = 12
    originals = data.images[p.indices[:m]]
    reconstruction_grid([originals, recon["plaintext"][:m], recon["ckks"][:m]],
                        ["original", "plaintext ε", "CKKS ε"], dest / "figure.png",
                        title=f"hecnn, MNIST test: decoder trained on plaintext fingerprints; "
                              f"SSIM {attack['plaintext']['ssim_mean']:.3f} (plaintext) vs {attack['ckks']['ssim_mean']:.3f} (CKKS)")
    print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
