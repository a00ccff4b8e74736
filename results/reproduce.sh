#!/usr/bin/env bash
# Regenerates results/mnist_lenet5/ and results/mnist_hecnn/ and results/TABLE.md from scratch:
# the paper-scale demo (train M and an independent evaluator, 100 random directions, fingerprints
# of all 60k train + 10k test images through the plaintext oracle, decoder, metrics on the full
# test set). About 45 minutes per model on 2 CPU cores. Heavy artifacts stay in runs/ (ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
for arch in ${ARCHS:-lenet5 hecnn}; do
  hesig demo --dataset mnist --arch "$arch" --out "runs/mnist-$arch" --seed 0 --quiet
  dest="results/mnist_$arch"
  mkdir -p "$dest"
  cp "runs/mnist-$arch/summary.json" "$dest/summary.json"
  cp "runs/mnist-$arch/reconstruct/metrics.json" "$dest/metrics.json"
  cp runs/mnist-$arch/reconstruct/*.png "$dest/"
  python results/verify_ssim.py "runs/mnist-$arch" --out "$dest/ssim_check.json"  # scikit-image, independently
done
python results/make_table.py > results/TABLE.md
cat results/TABLE.md
