#!/usr/bin/env bash
# Issue 23, the short ReLU2 query-free cells: does He et al.'s own SSIM close the gap? The two
# same-structure query-free cells at ReLU2 (shadow trained on the same half / on the disjoint half;
# the table's settings: 5 shadow epochs, rMLE T=2000, lr 1e-2, TV 0.3, jitter 0.1) on the first 1,000
# test images, as the table, scored three ways: hesig's interior SSIM, the full
# map, and He et al.'s own convention (hesig.evaluation.metrics.ssim_own_range: 7x7 uniform window,
# sample covariance, the reconstruction's own range). Target: `bash results/collab_inference.sh
# target`. Writes results/collab_inference/recheck_relu2_own_range.json. About 10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-runs/collab}
bash results/collab_inference.sh target
for data in same disjoint; do
  out=$RUNS/recheck/shadow_${data}_same_ReLU2
  [[ -f $out/metrics.json ]] || OMP_NUM_THREADS=1 hesig attack shadow --model $RUNS/target --split ReLU2 \
    --shadow-data $data --structure same --epochs 5 --indices 0:1000 --iterations 2000 --rmle-lr 1e-2 \
    --tv-weight 0.3 --tv-beta 1 --init-noise 0.1 --quiet --out $out &
done
wait
python - "$RUNS" <<'PY'
import json, sys
from pathlib import Path
from hesig.core.io import atomic_write_json, load_tensors
from hesig.data import load_dataset
from hesig.evaluation.metrics import ssim_own_range
runs = Path(sys.argv[1])
test = load_dataset("mnist", "test")
paper = {"same": (9.61, 0.498), "disjoint": (9.27, 0.465)}  # He et al. Table 6, ReLU2, same structure
out = {"command": "bash results/collab_inference/recheck_relu2_own_range.sh", "split": "ReLU2", "structure": "same"}
for data in ("same", "disjoint"):
    cell = runs / "recheck" / f"shadow_{data}_same_ReLU2"
    tensors, _ = load_tensors(cell / "reconstructions.safetensors", what="reconstructions")
    metrics = json.loads((cell / "metrics.json").read_text())
    own = ssim_own_range(tensors["reconstructions"], test.images[tensors["indices"]])
    attack = metrics["metrics"]["attack"]
    out[data] = {"n": int(own.numel()), "model_hash": metrics["model_hash"], "indices_hash": metrics["indices_hash"],
                 "psnr_mean": attack["psnr_mean"], "ssim_interior_mean": attack["ssim_mean"],
                 "ssim_full_map_mean": attack["ssim_full_map_mean"], "ssim_own_range_mean": float(own.mean()),
                 "ssim_own_range_std": float(own.std()), "paper_psnr": paper[data][0], "paper_ssim": paper[data][1]}
atomic_write_json("results/collab_inference/recheck_relu2_own_range.json", out)
print(json.dumps(out, indent=2))
PY
