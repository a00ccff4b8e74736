"""He et al.'s main cells (Tables 3, 4, 6) in every SSIM convention, from the `table` part's runs.

    bash results/collab_inference.sh target && bash results/collab_inference.sh table
    python results/collab_inference/table_conventions.py runs/collab
    python results/collab_inference/table_conventions.py runs/collab-cifar10 table_cifar10   (the CIFAR-10 columns)

Writes, beside this file, table_conventions.json and TABLE_CONVENTIONS.md: for each of the 16 cells
(8 attacks × splits conv1 and ReLU2) PSNR and SSIM on the n attacked test images and on He et al.'s
ten-image protocol (the first test image of each class), SSIM as the papers' code computes it (the
interior of the map, data range 1.0), over the full reflect-padded map beside it, and on the
protocol images with each reconstruction's own max − min as data range (He et al.'s scoring). Every
cell names the target model it attacked; TABLE.md's cells were made on an earlier target and keep
their numbers until the whole script is re-run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hesig.core.io import atomic_write_json, atomic_write_text

from report import PAPER, ROWS, load  # the table's own rows, paper values and run reader

HERE = Path(__file__).resolve().parent
SPLITS = ("conv1", "ReLU2", "conv11", "ReLU22", "ReLU32")  # MNIST LeNet-5, then CIFAR-10 cifar_cnn


def cell(m: dict, key: str, split: str) -> dict:
    a, p = m["metrics"]["attack"], m["protocol"] or {}
    paper_psnr, paper_ssim = PAPER[(key, split)]
    out = {"dataset": m["dataset"], "arch": m["arch"], "n": m["n"], "queries": m["queries"], "attack_seconds": m["attack_seconds"], "model_hash": m["model_hash"],
           "device": m.get("device", "cpu"), "ran_on": m.get("ran_on"), "target_test_accuracy": m.get("target_test_accuracy"),
           "psnr": a["psnr_mean"], "ssim_interior": a["ssim_mean"], "ssim_full_map": a["ssim_full_map_mean"],
           "protocol_n": p.get("n"), "protocol_psnr": p.get("psnr_mean"), "protocol_ssim_interior": p.get("ssim_mean"),
           "protocol_ssim_full_map": p.get("ssim_full_map_mean"), "protocol_ssim_own_range": p.get("ssim_own_range_mean"),
           "paper_psnr": paper_psnr, "paper_ssim": paper_ssim}
    out["meets_target"] = out["psnr"] >= paper_psnr - 1 and out["ssim_interior"] >= paper_ssim - 0.02
    return out


def where(c: dict) -> str:
    """Where a cell ran. Metrics name the GPU and torch version since they carry ``ran_on``; older
    runs name only the device."""
    r = c["ran_on"]
    if r and r.get("gpu"):
        return f"{r['device']} ({r['gpu']}, torch {r['torch']})"
    return c["device"] if c["device"] == "cpu" or r else f"{c['device']} (GPU not recorded in these runs' metrics)"


def main(runs: str, out_name: str = "") -> None:
    """Score ``runs``/table; write ``<out_name>.json`` and ``<OUT_NAME>.md`` (default table_conventions)."""
    runs = Path(runs)
    cells = {}
    for split in SPLITS:
        for key, _ in ROWS:
            m = load(runs / "table" / f"{key}_{split}")
            if m:
                cells[f"{key}@{split}"] = cell(m, key, split)
    if not cells:
        sys.exit(f"error: no runs of the table part under {runs / 'table'}; nothing written")
    targets = sorted({c["model_hash"] for c in cells.values()})
    stem = out_name or "table_conventions"
    atomic_write_json(HERE / f"{stem}.json", {"runs": str(runs), "targets": targets, "cells": cells})
    nets = ", ".join(sorted({f"{c['dataset']} {c['arch']}" for c in cells.values()}))
    table = (f"DATASET=cifar10 ARCH=cifar_cnn TABLE_SPLITS=\"conv11 ReLU22 ReLU32\" RUNS={runs} DEVICE=cuda "
             "bash results/collab_inference.sh table" if "cifar10" in nets else "bash results/collab_inference.sh table")
    met = sum(c["meets_target"] for c in cells.values())
    devices = ", ".join(sorted({where(c) for c in cells.values()}))
    lines = [f"# He et al. on {nets}, the main cells in every SSIM convention", "",
             f"Made by `{table}` then `python results/collab_inference/table_conventions.py "
             f"{runs}{' ' + out_name if out_name else ''}` (numbers: {stem}.json). Target model {', '.join(f'`{t}`' for t in targets)}"
             f" (test accuracy {cells[next(iter(cells))]['target_test_accuracy']:.2%}); ran on: {devices}. "
             f"**{met} of {len(cells)} cells meet the target.** "
             "PSNR in dB. SSIM interior: the papers' code (window inside the image, Gaussian 11, σ 1.5, data range 1.0); "
             "full map: reflect-padded, the whole map averaged; own: data range = the reconstruction's own max − min "
             "(He et al.'s scoring). **n**: the attacked test images (rMLE and query-free: the first 1,000; inverse "
             "network: all 10,000); **10**: the first test image of each class. Target met: n-mean PSNR ≥ paper − 1 dB "
             "and interior SSIM ≥ paper − 0.02.", ""]
    for split in [s for s in SPLITS if any(k.endswith(f"@{s}") for k in cells)]:
        lines += [f"## split at {split}", "",
                  "| attack | paper PSNR | PSNR n | PSNR 10 | paper SSIM | SSIM interior n | SSIM full map n | "
                  "SSIM interior 10 | SSIM own 10 | queries | target met |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for key, name in ROWS:
            c = cells.get(f"{key}@{split}")
            if c is None:
                lines.append(f"| {name} | {PAPER[(key, split)][0]:.2f} | not run | | {PAPER[(key, split)][1]:.4f} "
                             "| | | | | | |")
                continue
            lines.append(f"| {name} | {c['paper_psnr']:.2f} | {c['psnr']:.2f} | {c['protocol_psnr']:.2f} | "
                         f"{c['paper_ssim']:.4f} | {c['ssim_interior']:.4f} | {c['ssim_full_map']:.4f} | "
                         f"{c['protocol_ssim_interior']:.4f} | {c['protocol_ssim_own_range']:.4f} | {c['queries']} | "
                         f"{'yes' if c['meets_target'] else '**no**'} |")
        lines.append("")
    atomic_write_text(HERE / f"{stem.upper()}.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:3] or ["runs/collab"])
