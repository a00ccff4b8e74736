#!/usr/bin/env bash
# The attack's query frontier at full scale (issue 24): reconstruction quality against queries per
# fingerprint, decoders trained on all 60,000 MNIST training fingerprints and scored on all 10,000
# test images, for hecnn and lenet5. One study per model: 100 random directions (seed 0) searched at
# three precisions (coarse points:rtol 1:0.3, 2:0.1, 8:0.01); the first 25, 50 and 100 directions of
# each make 9 cells from ~100 to ~1,300 queries per fingerprint. The target models and evaluators
# are those of results/reproduce.sh (runs/mnist-*/model, runs/mnist-*/evaluator).
# Resumable: rerun to continue. CPU: about 4 h per model on 2 cores (nine 60k-image decoders);
# on a GPU the decoders take seconds: DEVICE=cuda bash results/frontier/run.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-runs/frontier}
DEVICE=${DEVICE:-auto}
for arch in ${ARCHS:-hecnn lenet5}; do
  hesig study-directions --dataset mnist --arch "$arch" --out "$RUNS/mnist-$arch" --families random \
    --counts 25,50,100 --precisions 1:0.3,2:0.1,8:0.01 --n-train 60000 --n-test 10000 \
    --decoder-ngf 32 --decoder-epochs 20 --model-from "runs/mnist-$arch/model" \
    --evaluator-from "runs/mnist-$arch/evaluator" --device "$DEVICE" --seed 0 --quiet
done
python results/frontier/report.py "$RUNS"/mnist-*
