#!/usr/bin/env bash
# Regenerates results/directions_study/: the direction-family study (issue 4).
#   grid:   lenet5 and hecnn on MNIST and Fashion-MNIST; families random, rademacher, centroid, pca,
#           pgd, uap, mix (pca:1,pgd:1); counts 10, 25, 50, 100, 200; the paper's search precision
#           (8 coarse points, rtol 1e-2); 3,000 training images fingerprinted for the decoder,
#           500 test victims scored.
#   budget: hecnn on MNIST, families random and pca, four search precisions x five counts.
# Each study folder in runs/study/ resumes where it stopped. About 3 h of CPU core time (run the
# study commands in parallel lanes, one per core: on 2 cores, 2026-11-28, 1 h 37 min of wall time).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for dataset in mnist fashion-mnist; do
  for arch in hecnn lenet5; do
    hesig study-directions --dataset "$dataset" --arch "$arch" --out "runs/study/$dataset-$arch" --seed 0 --quiet
  done
done
hesig study-directions --dataset mnist --arch hecnn --out runs/study/mnist-hecnn --families random,pca \
  --precisions 1:0.3,2:0.1,8:0.01,8:0.001 --seed 0 --quiet
python results/directions_study.py runs/study/{mnist,fashion-mnist}-{hecnn,lenet5} --out results/directions_study
