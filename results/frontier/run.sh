#!/usr/bin/env bash
# The attack's query frontier at full scale (issue 24): reconstruction quality against queries per
# fingerprint, decoders trained on all 60,000 training fingerprints and scored on all 10,000 test
# images. One study per model and search precision (so they can run side by side): 100 random
# directions (seed 0, the same set in every study) searched at coarse_points:rtol 1:0.3, 2:0.1 or
# 8:0.01; the first 25, 50 and 100 directions of each make 9 cells per model from ~100 to ~1,300
# queries per fingerprint.
#   mnist   hecnn and lenet5, the target models and evaluators of results/reproduce.sh
#           (runs/mnist-*/model, runs/mnist-*/evaluator)
#   fashion hecnn on Fashion-MNIST at 100 directions, the two precisions under 600 queries
#           (FASHION_PRECISIONS to choose)
#           (models of results/defenses/run.sh, trained here if missing)
#   coarse  the directions-for-precision trade at ~400 queries: 140 random directions searched at 1:0.6
#           (2.8 queries per direction where 1:0.3 takes 4.1), against the 100 at 1:0.3 of `mnist`
#   wide    the capacity lever: hecnn MNIST, 100 directions, the two cheap precisions, a decoder of
#           twice the width (ngf 64) trained twice as long (40 epochs)
#   prior   the prior-guided search (hesig.signature.prior_search): M queries per pair at the quantiles
#           of the owner's 2,000 training fingerprints, so every query is about one bit. PRIOR_CELLS
#           lists M:counts items (default "1:100,200,400 2:50,100,200 4:25,50,100": 100, 200 and
#           400 queries per fingerprint each); ARCHS the models (default hecnn lenet5)
#   fashion-prior  the prior-guided search on Fashion-MNIST hecnn (the models of `fashion`), PRIOR_CELLS as above
#           (default "2:200": 400 queries per fingerprint)
#   learned the owner's learned query points (hesig directions --family learned): LEARNED_COUNTS points
#           (default 400; one query each, so 400 queries per fingerprint), trained for LEARN_EPOCHS
#           (default 2) epochs on all 60,000 training images; ARCHS the models (default hecnn).
#           hecnn on this machine's 2 CPU cores: 17 min of learning, 2 min of fingerprints, 19 min of decoder;
#           lenet5's forward pass is far dearer (3.5 s per 64-image batch against hecnn's 0.44 s here: 2 epochs
#           on all 60,000 images would take 110 min), so LEARN_IMAGES=N learns on the owner's first N
#           training images only (folder suffix -iN); fingerprints and decoder stay at full scale
#   fashion-learned  the same on Fashion-MNIST hecnn (the models of `fashion`)
# DECODER_LOSS=ssim-l1 trains every decoder of the chosen parts with the loss that fits the metric
# (0.84·(1 - SSIM) + 0.16·L1; hesig train-decoder --loss) into folders suffixed -ssim-l1;
# DECODER_FEATURES=rank feeds them each ε's mid-rank (train-decoder --features) into folders suffixed -rank;
# DECODER_MLP=N gives them N fully connected hidden layers before the projection (train-decoder --mlp),
# into folders suffixed -mlpN; DECODER_RES=N N residual blocks at full resolution (train-decoder --res), -resN.
# results/frontier/refit.py trains another decoder on a finished cell's own fingerprints instead.
# Usage: [PARTS="mnist fashion wide"] [JOBS=1] [DEVICE=auto] bash results/frontier/run.sh
# Resumable: rerun to continue. CPU: about 4 h per model on 2 cores (nine 60k-image decoders).
# On a GPU: DEVICE=cuda JOBS=8 (results/gpu_run.sh runs it so).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-runs/frontier}
DEVICE=${DEVICE:-auto}
JOBS=${JOBS:-1}
N_TRAIN=${N_TRAIN:-60000}  # the issue's scale; smaller only to rehearse
N_TEST=${N_TEST:-10000}
PARTS=${PARTS:-mnist fashion wide}

study() {  # dataset arch precision out model evaluator [extra options...]; precision "learned": that family
  local ds=$1 arch=$2 prec=$3 out=$4 model=$5 evaluator=$6; shift 6
  local search=(--families random --precisions "$prec")
  [ "$prec" = learned ] && search=(--families learned)  # searched at its own points, one query each
  if [ "${DECODER_LOSS:-mse}" != mse ]; then out="$out-$DECODER_LOSS"; set -- "$@" --decoder-loss "$DECODER_LOSS"; fi
  if [ "${DECODER_FEATURES:-log}" != log ]; then out="$out-$DECODER_FEATURES"; set -- "$@" --decoder-features "$DECODER_FEATURES"; fi
  if [ "${DECODER_MLP:-0}" != 0 ]; then out="$out-mlp$DECODER_MLP"; set -- "$@" --decoder-mlp "$DECODER_MLP"; fi
  if [ "${DECODER_RES:-0}" != 0 ]; then out="$out-res$DECODER_RES"; set -- "$@" --decoder-res "$DECODER_RES"; fi
  hesig study-directions --dataset "$ds" --arch "$arch" --out "$out" "${search[@]}" \
    --n-train "$N_TRAIN" --n-test "$N_TEST" --model-from "$model" --evaluator-from "$evaluator" --device "$DEVICE" \
    --seed 0 --quiet "$@" 2>> "$out.log" || { echo "FAILED $out" >&2; return 1; }
  echo "done $out"
}
export -f study; export DEVICE N_TRAIN N_TEST DECODER_LOSS DECODER_FEATURES DECODER_MLP DECODER_RES

studies() {
  for part in $PARTS; do case $part in
    mnist) for prec in 1:0.3 2:0.1 8:0.01; do for arch in ${ARCHS:-hecnn lenet5}; do
             echo "mnist $arch $prec $RUNS/mnist-$arch-g${prec/:/-r} runs/mnist-$arch/model runs/mnist-$arch/evaluator --counts 25,50,100 --decoder-ngf 32 --decoder-epochs 20"
           done; done;;
    fashion) for prec in ${FASHION_PRECISIONS:-1:0.3 2:0.1}; do
             echo "fashion-mnist hecnn $prec $RUNS/fashion-mnist-hecnn-g${prec/:/-r} runs/fashion-mnist-hecnn/model runs/fashion-mnist-evaluator --counts 100 --decoder-ngf 32 --decoder-epochs 20"
           done;;
    coarse) for arch in ${ARCHS:-hecnn lenet5}; do  # more directions at a coarser precision, the same ~400 queries
             echo "mnist $arch 1:0.6 $RUNS/coarse-mnist-$arch-g1-r0.6 runs/mnist-$arch/model runs/mnist-$arch/evaluator --counts 140 --decoder-ngf 32 --decoder-epochs 20"
           done;;
    wide) for prec in 1:0.3 2:0.1; do
             echo "mnist hecnn $prec $RUNS/wide-mnist-hecnn-g${prec/:/-r} runs/mnist-hecnn/model runs/mnist-hecnn/evaluator --counts 100 --decoder-ngf 64 --decoder-epochs 40"
           done;;
    prior) for arch in ${ARCHS:-hecnn lenet5}; do for item in ${PRIOR_CELLS:-1:100,200,400 2:50,100,200 4:25,50,100}; do
             m=${item%%:*} counts=${item#*:}  # one folder per M and counts: a study pins its counts
             echo "mnist $arch prior:$m $RUNS/prior-mnist-$arch-m$m-k${counts//,/-} runs/mnist-$arch/model runs/mnist-$arch/evaluator --counts $counts --decoder-ngf 32 --decoder-epochs 20"
           done; done;;
    fashion-prior) for item in ${PRIOR_CELLS:-2:200}; do
             m=${item%%:*} counts=${item#*:}
             echo "fashion-mnist hecnn prior:$m $RUNS/prior-fashion-mnist-hecnn-m$m-k${counts//,/-} runs/fashion-mnist-hecnn/model runs/fashion-mnist-evaluator --counts $counts --decoder-ngf 32 --decoder-epochs 20"
           done;;
    learned) for arch in ${ARCHS:-hecnn}; do for count in ${LEARNED_COUNTS:-400}; do
             echo "mnist $arch learned $RUNS/learned-mnist-$arch-k$count-e${LEARN_EPOCHS:-2}${LEARN_IMAGES:+-i$LEARN_IMAGES} runs/mnist-$arch/model runs/mnist-$arch/evaluator --counts $count --learn-epochs ${LEARN_EPOCHS:-2} ${LEARN_IMAGES:+--learn-images $LEARN_IMAGES} --decoder-ngf 32 --decoder-epochs 20"
           done; done;;
    fashion-learned) for count in ${LEARNED_COUNTS:-400}; do
             echo "fashion-mnist hecnn learned $RUNS/learned-fashion-mnist-hecnn-k$count-e${LEARN_EPOCHS:-2} runs/fashion-mnist-hecnn/model runs/fashion-mnist-evaluator --counts $count --learn-epochs ${LEARN_EPOCHS:-2} --decoder-ngf 32 --decoder-epochs 20"
           done;;
    *) echo "unknown part '$part' (mnist, fashion, wide, coarse, prior, fashion-prior, learned, fashion-learned)" >&2; exit 2;;
  esac; done
}

mkdir -p "$RUNS"
if [[ " $PARTS " == *" fashion "* || " $PARTS " == *" fashion-prior "* || " $PARTS " == *" fashion-learned "* ]]; then  # the Fashion-MNIST target and evaluator of results/defenses/run.sh
  [ -f runs/fashion-mnist-hecnn/model/model.safetensors ] || hesig train-model --dataset fashion-mnist --arch hecnn \
    --out runs/fashion-mnist-hecnn/model --seed 0 --device "$DEVICE" --quiet
  [ -f runs/fashion-mnist-evaluator/model.safetensors ] || hesig train-model --dataset fashion-mnist --arch lenet5 \
    --out runs/fashion-mnist-evaluator --seed 1000 --device "$DEVICE" --quiet
fi
status=0
studies | xargs -P "$JOBS" -L 1 bash -c 'study "$0" "$@"' || status=$?
python results/frontier/report.py "$RUNS"/*/  # the finished cells, also after a failed study
exit $status
