#!/usr/bin/env bash
# The defense study (issue 19): regenerates runs/defenses-* and then results/defenses/{TABLE.md,cells.json,pareto.png}.
# MNIST x {hecnn, lenet5} on the default grid (lenet5: a smaller grid),
# Fashion-MNIST x hecnn for the two defenses that came closest on MNIST, one thread per study.
# Resumable: rerun to continue. About 2 h on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
RUNS=${RUNS:-runs}
SEED=${SEED:-0}
mkdir -p "$RUNS"
[ -f "$RUNS/mnist-hecnn/model/model.safetensors" ] || hesig train-model --dataset mnist --arch hecnn --out "$RUNS/mnist-hecnn/model" --seed 0 --quiet
[ -f "$RUNS/mnist-lenet5/model/model.safetensors" ] || hesig train-model --dataset mnist --arch lenet5 --out "$RUNS/mnist-lenet5/model" --seed 0 --quiet
[ -f "$RUNS/mnist-evaluator/model.safetensors" ] || hesig train-model --dataset mnist --arch lenet5 --out "$RUNS/mnist-evaluator" --seed 1000 --quiet
[ -f "$RUNS/fashion-mnist-hecnn/model/model.safetensors" ] || hesig train-model --dataset fashion-mnist --arch hecnn --out "$RUNS/fashion-mnist-hecnn/model" --seed 0 --quiet
[ -f "$RUNS/fashion-mnist-evaluator/model.safetensors" ] || hesig train-model --dataset fashion-mnist --arch lenet5 --out "$RUNS/fashion-mnist-evaluator" --seed 1000 --quiet

LENET_GRID="none=standard;rr:0.1=standard,vote:5;bdpl:0.4@1=standard;evaluations:1000=budgeted:1000"
hesig study-defenses --dataset mnist --arch hecnn --out "$RUNS/defenses-mnist-hecnn" --seed "$SEED" --quiet \
  --model-from "$RUNS/mnist-hecnn/model" --evaluator-from "$RUNS/mnist-evaluator" &
hesig study-defenses --dataset mnist --arch lenet5 --out "$RUNS/defenses-mnist-lenet5" --seed "$SEED" --quiet \
  --model-from "$RUNS/mnist-lenet5/model" --evaluator-from "$RUNS/mnist-evaluator" --grid "$LENET_GRID" &
wait
# The default CKKS policy answers one result per input (budget:1): an attacker who plans for it asks
# one result of 40 grid points x 100 directions (4,000 of the 4,095 slots) -- an evaluation budget
# of 4,000 in one round.
hesig study-defenses --dataset mnist --arch hecnn --out "$RUNS/defenses-mnist-hecnn-onereply" --seed "$SEED" --quiet \
  --model-from "$RUNS/mnist-hecnn/model" --evaluator-from "$RUNS/mnist-evaluator" --grid "none=standard;evaluations:4000=grid:40"
# Fashion-MNIST: the two defenses within 1 point of honest accuracy that came closest on MNIST/hecnn
# (input-noise:0.2, evaluations:300), and bdpl:0.4@1, chosen before the MNIST run had finished.
FASHION_GRID=${FASHION_GRID:-"none=standard;evaluations:300=budgeted:300;bdpl:0.4@1=standard;input-noise:0.2=standard"}
hesig study-defenses --dataset fashion-mnist --arch hecnn --out "$RUNS/defenses-fashion-mnist-hecnn" --seed "$SEED" --quiet \
  --model-from "$RUNS/fashion-mnist-hecnn/model" --evaluator-from "$RUNS/fashion-mnist-evaluator" --grid "$FASHION_GRID"
python results/defenses/report.py "$RUNS"/defenses-*
python results/defenses/readme_tables.py
# CKKS (about 20 min each): the default client against a one-result grid, and the best defense
# within 1 point that a CKKS client can enforce (input noise cannot be: plaintext only).
python results/defenses/ckks_confirm.py "$RUNS/defenses-mnist-hecnn-onereply" evaluations:4000 grid:40 20 strict+budget:1+fresh-keys
python results/defenses/ckks_confirm.py "$RUNS/defenses-mnist-hecnn" evaluations:300 budgeted:300 20
