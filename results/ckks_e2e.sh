#!/usr/bin/env bash
# End to end through CKKS (issue 3): the hecnn decoder trained on *plaintext* fingerprints of the
# MNIST training set (runs/mnist-hecnn, made by results/reproduce.sh) reconstructs the first 100
# MNIST test images from fingerprints that came through the CKKS oracle (batched layout), beside
# the same 100 images fingerprinted through the plaintext oracle with the same search settings.
# The CKKS path is issue 22's: seeded symmetric encryption (the client's default) and a geometric
# coarse grid of 40 points, which closes every pair at rtol 1e-2 in two evaluations.
# Writes results/mnist_hecnn_ckks/{summary.json,figure.png}. About 25 minutes on 2 CPU cores.
# Resumes: hesig fingerprint reuses the finished chunks it finds in runs/mnist-hecnn-ckks (and their
# recorded times), so delete that folder first to measure the current code from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."
run=runs/mnist-hecnn
out=runs/mnist-hecnn-ckks
mkdir -p "$out"
common=(--model "$run/model" --directions "$run/directions.safetensors" --dataset mnist --split test
        --indices 0:100 --points-per-round auto --coarse-grid geometric --coarse-points 40 --quiet)
hesig fingerprint --oracle plaintext "${common[@]}" --out "$out/fp_plaintext.safetensors" > "$out/fp_plaintext.json"
hesig fingerprint --oracle ckks --client-policy strict --ckks-encryption seeded "${common[@]}" --out "$out/fp_ckks.safetensors" > "$out/fp_ckks.json"
for oracle in plaintext ckks; do
  hesig reconstruct --decoder "$run/decoder" --fingerprints "$out/fp_$oracle.safetensors" \
    --classifier "$run/evaluator" --out "$out/reconstruct_$oracle" > "$out/reconstruct_$oracle.json"
done
python results/ckks_compare.py "$out" results/mnist_hecnn_ckks
