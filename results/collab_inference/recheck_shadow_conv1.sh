#!/usr/bin/env bash
# The two query-free conv1 cells (same training set; different and same shadow structure) re-run after
# the shadow fix (no ReLU between the two 3x3 convolutions, as He et al.'s code), on a target re-trained
# by `bash results/collab_inference.sh target` (needs HESIG_DATA). The metrics files are copied to
# results/collab_inference/recheck_shadow_same_{different,same}_conv1.json.
set -e
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
for structure in different same; do
  hesig attack shadow --model runs/collab/target --split conv1 --shadow-data same --structure $structure --epochs 5 \
    --indices 0:1000 --iterations 500 --rmle-lr 1e-2 --tv-weight 0 --quiet --out runs/collab/table/shadow_same_${structure}_conv1
done
for structure in different same; do
  cp runs/collab/table/shadow_same_${structure}_conv1/metrics.json results/collab_inference/recheck_shadow_same_${structure}_conv1.json
done
