#!/usr/bin/env bash
# He et al. (ACSAC 2019) on MNIST LeNet-5: Tables 3, 4, 6, the split-point study and the §7.4
# defenses, all through `hesig attack`. Resumable: rerun to finish. Usage:
#   bash results/collab_inference.sh [target|sweep|table|splits|defenses|report|all]
# CPU: the parts run one after another; `table` and `splits`+`defenses` can run in two shells.
# The CIFAR-10 columns of Tables 3, 4 and 6 (`target` and `table` only; a GPU job):
#   DATASET=cifar10 ARCH=cifar_cnn TABLE_SPLITS="conv11 ReLU22 ReLU32" RUNS=runs/collab-cifar10 \
#     DEVICE=cuda JOBS=6 bash results/collab_inference.sh table
#   python results/collab_inference/table_conventions.py runs/collab-cifar10 table_cifar10
# (the inverse networks there are hesig's 'auto' design: the paper specifies only its MNIST ones).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/collab}
OUT=results/collab_inference
part=${1:-all}
TARGET=$RUNS/target
DATASET=${DATASET:-mnist}
ARCH=${ARCH:-lenet5}
TABLE_SPLITS=${TABLE_SPLITS:-conv1 ReLU2}
INVERSE_DESIGN=${INVERSE_DESIGN:-$([[ $ARCH == lenet5 ]] && echo paper || echo auto)}
DEVICE=${DEVICE:-auto}
JOBS=${JOBS:-1}   # table cells at once
# rMLE settings chosen by rmle_sweep.py on adversary-side images (see rmle_sweep.json):
# shallow splits keep the paper's T=500, lr 1e-2, λ 0; from ReLU2 on T=2000, lr 1e-2, λ 0.3, jitter 0.1.
SHALLOW="--iterations 500 --rmle-lr 1e-2 --tv-weight 0"
DEEP="--iterations 2000 --rmle-lr 1e-2 --tv-weight 0.3 --tv-beta 1 --init-noise 0.1"
TABLE_IDX=0:1000   # rMLE and shadow cells: the first 1,000 test images (CPU time); inverse network: all 10,000
STUDY_IDX=0:200
rmle_for() { case $1 in conv1|ReLU1|pool1|conv11) echo "$SHALLOW";; *) echo "$DEEP";; esac; }

if [[ $part == target || $part == all || ($part == table && $DATASET != mnist) ]]; then
  [[ -f $TARGET/model.json ]] || hesig train-model --dataset $DATASET --arch $ARCH --train-half a --seed 0 \
    --device $DEVICE --quiet --out $TARGET
fi
if [[ $part == sweep || $part == all ]]; then
  [[ -f $OUT/rmle_sweep.json ]] || python $OUT/rmle_sweep.py $TARGET
fi
table_cells() {  # one line per cell: its run name, then its `hesig attack` arguments
  for split in $TABLE_SPLITS; do
    echo "rmle_$split rmle --split $split --indices $TABLE_IDX $(rmle_for $split)"
    for qs in train disjoint gaussian; do
      echo "inverse_${qs}_$split inverse-network --split $split --query-set $qs --design $INVERSE_DESIGN --epochs 20"
    done
    for data in same disjoint; do for structure in same different; do
      echo "shadow_${data}_${structure}_$split shadow --split $split --shadow-data $data --structure $structure --epochs 5 --indices $TABLE_IDX $(rmle_for $split)"
    done; done
  done
}
table_cell() {
  local name=$1; shift
  [[ -f $RUNS/table/$name/metrics.json ]] || hesig attack "$@" --model $TARGET --device $DEVICE --quiet \
    --out $RUNS/table/$name > /dev/null || { echo "FAILED $name" >&2; return 255; }
  echo "done $name"
}
export -f table_cell; export RUNS TARGET DEVICE
if [[ $part == table || $part == all ]]; then
  table_cells | xargs -P "$JOBS" -L 1 bash -c 'table_cell "$@"' _
fi
if [[ $part == extra || $part == all ]]; then
  # Variants for the conv1 cells below the paper: the paper's one-layer inverse trained 3x longer, and
  # query-free rMLE with the TV prior (λ 0.3) that the deep splits use, since a shadow is not the edge.
  for qs in train disjoint; do
    [[ -f $RUNS/extra/inverse_${qs}_conv1/metrics.json ]] || hesig attack inverse-network --model $TARGET \
      --split conv1 --query-set $qs --design paper --epochs 60 --quiet --out $RUNS/extra/inverse_${qs}_conv1
  done
  for data in same disjoint; do for structure in same different; do
    [[ -f $RUNS/extra/shadow_${data}_${structure}_conv1/metrics.json ]] || hesig attack shadow --model $TARGET \
      --split conv1 --shadow-data $data --structure $structure --epochs 5 --indices $TABLE_IDX $SHALLOW \
      --tv-weight 0.3 --quiet --out $RUNS/extra/shadow_${data}_${structure}_conv1
  done; done
fi
if [[ $part == splits || $part == all ]]; then
  # every layer (flatten is pool2's output reshaped: same information, skipped)
  for split in conv1 ReLU1 pool1 conv2 ReLU2 pool2 fc1 fc1act fc2 fc2act fc3; do
    [[ -f $RUNS/splits/rmle_$split/metrics.json ]] || hesig attack rmle --model $TARGET --split $split \
      --indices $STUDY_IDX $(rmle_for $split) --quiet --out $RUNS/splits/rmle_$split
    [[ -f $RUNS/splits/inverse_$split/metrics.json ]] || hesig attack inverse-network --model $TARGET --split $split \
      --query-set disjoint --queries 10000 --design auto --epochs 10 --quiet --out $RUNS/splits/inverse_$split
    [[ -f $RUNS/splits/shadow_$split/metrics.json ]] || hesig attack shadow --model $TARGET --split $split \
      --shadow-data disjoint --structure same --epochs 5 --indices $STUDY_IDX $(rmle_for $split) --quiet \
      --out $RUNS/splits/shadow_$split
  done
fi
if [[ $part == defenses || $part == all ]]; then
  for split in conv1 ReLU2; do for sigma in 0.1 0.3 1 3; do
    [[ -f $RUNS/defenses/rmle_${split}_$sigma/metrics.json ]] || hesig attack rmle --model $TARGET --split $split \
      --feature-noise $sigma --indices $STUDY_IDX $(rmle_for $split) --quiet --out $RUNS/defenses/rmle_${split}_$sigma
    [[ -f $RUNS/defenses/inverse_${split}_$sigma/metrics.json ]] || hesig attack inverse-network --model $TARGET \
      --split $split --feature-noise $sigma --query-set disjoint --design paper --epochs 20 --quiet \
      --out $RUNS/defenses/inverse_${split}_$sigma
  done; done
fi
if [[ $part == report || $part == all ]]; then
  python $OUT/report.py $RUNS
fi
