#!/usr/bin/env bash
# Malekzadeh & Gunduz, vicious classifiers: Table 1 rows for MNIST and Fashion-MNIST (3 seeds),
# the Appendix I.2 detection ROC and the Appendix I output defenses, all through the hesig CLI.
# Resumable: finished runs are skipped. Usage:
#   bash results/vicious.sh [table|headline|detect|defenses|long|weights|report|all]
# `headline` runs only the four cells the fidelity issue names for a CPU without a GPU (seed 0,
# MNIST logits 3/1 and softmax 5/1 first, since the output defenses use them, then MNIST logits 1/1
# and Fashion-MNIST logits 3/1): `EPOCHS=50 RUNS=runs/vicious50 bash results/vicious.sh headline`.
# EPOCHS (default 3) is the CPU budget knob: the paper trains 50 epochs (`EPOCHS=50` for paper scale;
# results/gpu_run.sh runs the table so on a GPU). TRAIN_LIMIT (unset: all) only rehearses the script.
# `long` retrains two seed-0 cells for LONG_EPOCHS (default 20) to show where more epochs lead;
# `weights` retrains them with a lighter reconstruction loss (SSIM weight 1, Huber weight 5).
# Two runs go in parallel, one thread each (JOBS, default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/vicious}
OUT=results/vicious
EPOCHS=${EPOCHS:-3}
JOBS=${JOBS:-2}
SEEDS=${SEEDS:-"0 1 2"}
LONG_EPOCHS=${LONG_EPOCHS:-20}
part=${1:-all}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

HEADLINE="mnist logits 3/1|mnist softmax 5/1|mnist logits 1/1|fashion-mnist logits 3/1"
cells() {  # seed-major, so an interrupted run leaves whole seeds. The first seed's headline cells
  # come first (a lease that ends early still has them), then the cheap honest (0/1) models of
  # every seed, so the detection ROC has several honest models early, then the first seed's rest
  first=${SEEDS%% *}
  echo "$HEADLINE" | tr '|' '\n' | sed "s/\$/ $first/"
  for ds in mnist fashion-mnist; do for seed in $SEEDS; do echo "$ds logits 0/1 $seed"; done; done
  for seed in $SEEDS; do for ds in mnist fashion-mnist; do
    for beta in 1/1 3/1 5/1 1/0; do echo "$ds logits $beta $seed"; done
    for beta in 1/1 5/1; do echo "$ds softmax $beta $seed"; done
  done; done | awk -v first="$first" -v headline="$HEADLINE" \
    'BEGIN { n = split(headline, h, "|"); for (i = 1; i <= n; i++) skip[h[i]] = 1 }
     $4 == first && !(($1 " " $2 " " $3) in skip)'
  for seed in $SEEDS; do for ds in mnist fashion-mnist; do
    for beta in 1/1 3/1 5/1 1/0; do echo "$ds logits $beta $seed"; done
    for beta in 1/1 5/1; do echo "$ds softmax $beta $seed"; done
  done; done | awk -v first="$first" '$4 != first'
}
run_cell() {
  # dataset release beta seed [root [epochs [extra hesig options...]]]
  local ds=$1 rel=$2 beta=$3 seed=$4 root=${5:-$RUNS} epochs=${6:-$EPOCHS}
  shift $(( $# < 6 ? $# : 6 ))
  local dir=$root/$ds/${rel}_${beta/\//-}/seed$seed
  [[ -f $dir/metrics.json ]] && return 0
  # PROGRESS=1: the progress bar (and any error) goes to $dir.log, to see how far a stopped run got
  local quiet=--quiet log=/dev/stderr
  [[ -n ${PROGRESS:-} ]] && { quiet=; log=$dir.log; mkdir -p "$(dirname "$dir")"; }
  hesig attack vicious --dataset "$ds" --release "$rel" --beta "$beta" --seed "$seed" --epochs "$epochs" \
    ${TRAIN_LIMIT:+--train-limit "$TRAIN_LIMIT"} "$@" $quiet --out "$dir" > /dev/null 2>> "$log" \
    || { echo "FAILED $ds $rel $beta seed$seed" >&2; return 255; }
  echo "done $ds $rel $beta seed$seed"
}
export -f run_cell; export RUNS EPOCHS PROGRESS=${PROGRESS:-} TRAIN_LIMIT=${TRAIN_LIMIT:-}

if [[ $part == table || $part == all ]]; then
  cells | xargs -P "$JOBS" -L 1 bash -c 'run_cell "$0" "$@"'
fi
if [[ $part == headline ]]; then
  echo "$HEADLINE" | tr '|' '\n' | sed 's/$/ 0/' |
    xargs -P "$JOBS" -L 1 bash -c 'run_cell "$0" "$@"'
fi
if [[ $part == detect || $part == all ]]; then
  # honest (0/1) against vicious (1/1, 3/1, 5/1 logits; 1/1, 5/1 softmax) models of every seed; the
  # reconstruction-only 1/0 models are left out (their accuracy is at chance: no test is needed).
  for ds in mnist fashion-mnist; do
    shopt -s nullglob  # finished runs only (those with metrics.json)
    done_runs=($RUNS/$ds/logits_{0-1,1-1,3-1,5-1}/seed*/metrics.json $RUNS/$ds/softmax_{1-1,5-1}/seed*/metrics.json)
    dirs=$(for m in "${done_runs[@]}"; do dirname "$m"; done)
    [[ -f $RUNS/detect_$ds/detection.json ]] || hesig detect-vicious $dirs --draws 3 --rounds 10 \
      --finetune-size 250 --probe-size 500 --quiet --out $RUNS/detect_$ds > /dev/null
  done
fi
if [[ $part == defenses || $part == all ]]; then
  # Scored on the first 2,000 test images; the adaptive G gets one epoch on defended training outputs.
  [[ -f $RUNS/defenses_mnist_logits/defenses.json ]] || hesig output-defenses --run $RUNS/mnist/logits_3-1/seed0 \
    --defense none --defense round:1 --defense round:0 --defense noise:1 --defense noise:3 --defense topk:3 \
    --defense topk:1 --defense argmax --adapt-epochs 1 --test-limit 2000 --quiet --out $RUNS/defenses_mnist_logits > /dev/null
  [[ -f $RUNS/defenses_mnist_softmax/defenses.json ]] || hesig output-defenses --run $RUNS/mnist/softmax_5-1/seed0 \
    --defense none --defense round:2 --defense round:1 --defense noise:0.05 --defense noise:0.2 --defense topk:3 \
    --defense topk:1 --defense argmax --adapt-epochs 1 --test-limit 2000 --quiet --out $RUNS/defenses_mnist_softmax > /dev/null
fi
if [[ $part == long || $part == all ]]; then
  # The 3-epoch cells furthest from the paper in PSNR (logits 1/1) and in accuracy (softmax 5/1).
  printf '%s\n' "mnist logits 1/1 0 $RUNS/long $LONG_EPOCHS" "mnist softmax 5/1 0 $RUNS/long $LONG_EPOCHS" |
    xargs -P "$JOBS" -L 1 bash -c 'run_cell "$0" "$@"'
fi
if [[ $part == weights || $part == all ]]; then
  # Loss-weight ablation at the table's budget: the issue's weights (SSIM 15, Huber 3) against 1 and 5.
  printf '%s\n' "mnist logits 1/1 0 $RUNS/weights $EPOCHS --ssim-weight 1 --huber-weight 5" \
    "mnist softmax 5/1 0 $RUNS/weights $EPOCHS --ssim-weight 1 --huber-weight 5" |
    xargs -P "$JOBS" -L 1 bash -c 'run_cell "$0" "$@"'
fi
if [[ $part == report || $part == all ]]; then
  python $OUT/report.py $RUNS
fi
