#!/usr/bin/env bash
# The four query-free conv1 cells (shadow trained on the same half or on the disjoint half; different
# and same shadow structure) re-run after the shadow fix (no ReLU between the two 3x3 convolutions, as
# He et al.'s code), on a target re-trained by `bash results/collab_inference.sh target` (needs
# HESIG_DATA). A cell whose metrics exist is skipped. The metrics files are copied to
# results/collab_inference/recheck_shadow_{same,disjoint}_{different,same}_conv1.json.
set -e
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
for data in same disjoint; do
  for structure in different same; do
    out=runs/collab/table/shadow_${data}_${structure}_conv1
    [[ -f $out/metrics.json ]] || hesig attack shadow --model runs/collab/target --split conv1 --shadow-data $data \
      --structure $structure --epochs 5 --indices 0:1000 --iterations 500 --rmle-lr 1e-2 --tv-weight 0 --quiet --out $out
    cp $out/metrics.json results/collab_inference/recheck_shadow_${data}_${structure}_conv1.json
  done
done
